package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/internal/testetcd"
)

// The tests here run several real `keygate serve` replicas on real etcd
// (the embedded member and Debian's etcd binary) through what an operator
// or a failure does to etcd and to the replicas: a restore racing a revoke,
// two replicas under one id, a hang past the replica TTL, a frozen replica,
// a dead etcd leader. Each logs what it measured.

const replicaTTL = 2 * time.Second

// etcdConfig writes a config naming every endpoint, with a 2 s replica TTL.
func etcdConfig(t *testing.T, dir string, endpoints []string) string {
	t.Helper()
	cfg := filepath.Join(dir, "keygate.yaml")
	writeFile(t, cfg, "store:\n  etcd:\n    endpoints: [\""+strings.Join(endpoints, "\", \"")+"\"]\n    replica_ttl: 2s\n")
	return cfg
}

// replicaEnv is the environment of replica id on cfg.
func replicaEnv(cfg, id string) []string {
	return []string{"KEYGATE_CONFIG=" + cfg, "KEYGATE_STORE=", "KEYGATE_ETCD_ENDPOINTS=", "KEYGATE_REPLICA_ID=" + id}
}

// startReplicas starts n replicas r0..r(n-1) on endpoints and waits until
// each is ready.
func startReplicas(t *testing.T, endpoints []string, n int) ([]*server, []checker) {
	t.Helper()
	return startReplicasOn(t, etcdConfig(t, t.TempDir(), endpoints), n)
}

// startReplicasOn is startReplicas with the config file cfg.
func startReplicasOn(t *testing.T, cfg string, n int) ([]*server, []checker) {
	t.Helper()
	dir := t.TempDir()
	var rs []*server
	var cs []checker
	for i := range n {
		rdir := filepath.Join(dir, fmt.Sprint("r", i))
		if err := os.Mkdir(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		s := startServerWith(t, rdir, replicaEnv(cfg, fmt.Sprint("r", i))...)
		rs = append(rs, s)
		cs = append(cs, newChecker(t, s.grpcAddr))
	}
	waitReady(t, rs, 15*time.Second)
	return rs, cs
}

// waitReady waits until every replica's /readyz is 200 and returns how long
// it took.
func waitReady(t *testing.T, rs []*server, within time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	for i, s := range rs {
		for {
			st, _, _ := readyz(s)
			if st == 200 {
				break
			}
			if time.Since(began) > within {
				t.Fatalf("replica %d not ready within %v (last %d)\n%s", i, within, st, s.logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return time.Since(began)
}

var readyzClient = &http.Client{Timeout: 5 * time.Second}

// readyz returns /readyz's status (0 on a transport error), body and
// latency.
func readyz(s *server) (int, string, time.Duration) {
	began := time.Now()
	resp, err := readyzClient.Get(s.admin + "/readyz")
	if err != nil {
		return 0, err.Error(), time.Since(began)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), time.Since(began)
}

// admin is a bare admin API client on s, for the many calls that need not
// pay for a CLI process each.
func adminOf(t *testing.T, s *server) crashAdmin {
	t.Helper()
	return crashAdmin{base: s.admin, token: readToken(t, s.dir), http: &http.Client{Timeout: 10 * time.Second}}
}

// createKey creates a key in tenant through s's admin API.
func createKey(t *testing.T, s *server, tenant, name string) (raw, id string) {
	t.Helper()
	var k map[string]any
	status, err := adminOf(t, s).call("POST", "/v1/keys", map[string]any{"tenant_id": tenant, "name": name}, &k)
	if err != nil || status != 201 {
		t.Fatalf("create key %s: %d %v %v", name, status, err, k)
	}
	return k["key"].(string), k["id"].(string)
}

// tryCLI runs the keygate CLI against s and returns its output and error.
func tryCLI(s *server, args ...string) (string, error) {
	cmd := exec.Command(keygateBin, append(args, "--output", "json")...)
	// Clipped: callers run at once, and must not append into one array.
	cmd.Env = append(slices.Clip(s.env), "KEYGATE_ADMIN_URL="+s.admin)
	cmd.Dir = s.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// revokeCLI revokes id with `keygate keys revoke` through s, retrying a
// refused attempt (a write refused is not acknowledged) for up to 15 s. It
// returns the time from began to the acknowledged revoke and the attempts.
func revokeCLI(t *testing.T, s *server, id string, began time.Time) (time.Duration, int) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		out, err := tryCLI(s, "keys", "revoke", id)
		if err == nil {
			return time.Since(began), attempt
		}
		if time.Since(began) > 15*time.Second {
			t.Fatalf("keys revoke %s: still failing after %v (%d attempts): %v\n%s", id, time.Since(began), attempt, err, out)
		}
		t.Logf("keys revoke attempt %d refused after %v: %v: %s", attempt, time.Since(began).Round(time.Millisecond), err, strings.TrimSpace(out))
		time.Sleep(100 * time.Millisecond)
	}
}

// checkOnce calls Check without failing the test (for goroutines): allowed,
// the denial's status, or an error.
func checkOnce(c checker, raw string) (bool, int32, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/x", Headers: map[string]string{"x-api-key": raw}}},
	}})
	if err != nil {
		return false, 0, err
	}
	if resp.GetOkResponse() != nil {
		return true, 200, nil
	}
	return false, int32(resp.GetDeniedResponse().GetStatus().GetCode()), nil
}

// hammer Checks raw round-robin on every checker, one goroutine per
// replica, until stop is called. A Check counts as after the revoke when it
// was sent after revoked was set; an allow of one is a wrong allow.
type hammer struct {
	revoked              atomic.Bool
	checks, after, wrong atomic.Int64
	errs                 atomic.Int64
	wrongBy              [8]atomic.Int64
	firstErr             atomic.Value
	stopc                chan struct{}
	wg                   sync.WaitGroup
}

func startHammer(cs []checker, raw string) *hammer {
	h := &hammer{stopc: make(chan struct{})}
	for i, c := range cs {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-h.stopc:
					return
				default:
				}
				after := h.revoked.Load()
				ok, _, err := checkOnce(c, raw)
				h.checks.Add(1)
				if err != nil {
					h.errs.Add(1)
					h.firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(20 * time.Millisecond)
					continue
				}
				if after {
					h.after.Add(1)
					if ok {
						h.wrong.Add(1)
						h.wrongBy[i].Add(1)
					}
				}
			}
		}()
	}
	return h
}

func (h *hammer) stop() { close(h.stopc); h.wg.Wait() }

// TestRestoreRaceReplicas is the restore issue's scenario with the real
// binary: three replicas, a key K cached on all, a snapshot, 30 keys created
// after it (one, L, cached on r2), etcd restored to the snapshot (as the
// same cluster and as a new one, alternately), then K revoked through r0
// while every replica Checks K all along. No Check sent after the revoke
// returned may be allowed, and L, which the restore removed, must stop
// being allowed within a few seconds.
func TestRestoreRaceReplicas(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		srv := start(t)
		rs, cs := startReplicas(t, srv.Endpoints(), 3)
		tn := rs[0].cli(t, "tenants", "create", "--name", "Acme")["id"].(string)
		const rounds = 3
		var checks, wrong, errs int64
		var worstRevoke, worstL time.Duration
		for round := range rounds {
			newCluster := round%2 == 1
			raw, id := createKey(t, rs[0], tn, fmt.Sprint("K", round))
			for i, c := range cs {
				for range 2 {
					if ok, status, _ := c.check(raw); !ok {
						t.Fatalf("round %d: K on r%d: %d", round, i, status)
					}
				}
			}
			snap := srv.Snapshot(t)
			var rawL string
			for i := range 30 {
				rawL, _ = createKey(t, rs[0], tn, fmt.Sprint("later", round, "-", i))
			}
			for range 2 {
				if ok, status, _ := cs[2].check(rawL); !ok {
					t.Fatalf("round %d: L on r2 before the restore: %d", round, status)
				}
			}

			h := startHammer(cs, raw)
			time.Sleep(200 * time.Millisecond)
			srv.Restore(t, snap, newCluster)
			restored := time.Now()

			// L is gone from etcd: r2 must stop allowing it.
			lGone := make(chan time.Duration, 1)
			go func() {
				for time.Since(restored) < 6*time.Second {
					if ok, _, err := checkOnce(cs[2], rawL); err == nil && !ok {
						lGone <- time.Since(restored)
						return
					}
					time.Sleep(25 * time.Millisecond)
				}
				lGone <- -1
			}()

			took, attempts := revokeCLI(t, rs[0], id, restored)
			h.revoked.Store(true)
			time.Sleep(1500 * time.Millisecond)
			h.stop()
			lAfter := <-lGone
			checks += h.checks.Load()
			wrong += h.wrong.Load()
			errs += h.errs.Load()
			t.Logf("%s round %d (newCluster=%v): revoke acknowledged %v after the restore (%d attempts); %d Checks, %d after the revoke, %d wrong allows (r0/r1/r2 %d/%d/%d), %d Check errors %v; L refused %v after the restore",
				srv.Kind(), round, newCluster, took.Round(time.Millisecond), attempts, h.checks.Load(), h.after.Load(), h.wrong.Load(),
				h.wrongBy[0].Load(), h.wrongBy[1].Load(), h.wrongBy[2].Load(), h.errs.Load(), h.firstErr.Load(), lAfter.Round(time.Millisecond))
			if h.wrong.Load() > 0 {
				t.Errorf("round %d: %d Checks of K sent after its revoke returned were allowed", round, h.wrong.Load())
			}
			if h.after.Load() == 0 {
				t.Errorf("round %d: no Check completed after the revoke", round)
			}
			if lAfter < 0 {
				t.Errorf("round %d: r2 still allowed L, which the restore removed, 6s after the restore", round)
			}
			for i, c := range cs {
				if ok, status, _ := c.check(raw); ok || status != 401 {
					t.Errorf("round %d: r%d: revoked K: allowed %v status %d", round, i, ok, status)
				}
			}
			if t.Failed() {
				return
			}
			worstRevoke, worstL = max(worstRevoke, took), max(worstL, lAfter)
			waitReady(t, rs, 10*time.Second)
		}
		t.Logf("%s: %d rounds, %d Checks, %d wrong allows, %d Check errors; revoke latency after the restore up to %v, L refused within %v",
			srv.Kind(), rounds, checks, wrong, errs, worstRevoke.Round(time.Millisecond), worstL.Round(time.Millisecond))
	})
}

// TestDuplicateReplicaIDServe: a second `keygate serve` under a live
// replica's id exits non-zero, naming the id; once the first stops
// gracefully the id is free at once, and after a replica is killed its id
// is free again about a TTL later.
func TestDuplicateReplicaIDServe(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		srv := start(t)
		dir := t.TempDir()
		cfg := etcdConfig(t, dir, srv.Endpoints())
		sub := func(name string) string {
			d := filepath.Join(dir, name)
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			return d
		}
		first := startServerWith(t, sub("first"), replicaEnv(cfg, "dup-id")...)
		waitReady(t, []*server{first}, 10*time.Second)

		// The second, with --replica-id on the command line.
		cmd := exec.Command(keygateBin, "serve", "--replica-id", "dup-id")
		cmd.Dir = sub("second")
		cmd.Env = append(os.Environ(),
			"KEYGATE_STORE=", "KEYGATE_GRPC_LISTEN=127.0.0.1:0", "KEYGATE_ADMIN_LISTEN=127.0.0.1:0", "KEYGATE_HTTP_LISTEN=127.0.0.1:0", "KEYGATE_METRICS_LISTEN=127.0.0.1:0",
			"KEYGATE_ADMIN_TOKEN=", "KEYGATE_ADMIN_TOKEN_FILE=", "KEYGATE_CONFIG="+cfg, "KEYGATE_ETCD_ENDPOINTS=", "KEYGATE_REPLICA_ID=")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		began := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(replicaTTL + 10*time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("second serve under a live replica's id still running after %v\n%s", replicaTTL+10*time.Second, out.String())
		}
		exitedAfter := time.Since(began)
		if err == nil {
			t.Fatalf("second serve under a live replica's id exited 0 after %v\n%s", exitedAfter, out.String())
		}
		if !strings.Contains(out.String(), "replica id in use") || !strings.Contains(out.String(), "dup-id") {
			t.Fatalf("second serve's output does not name the id and say it is in use (%v)\n%s", err, out.String())
		}
		if st, _, _ := readyz(first); st != 200 {
			t.Fatalf("first replica's /readyz after the duplicate tried: %d", st)
		}

		// Graceful stop frees the id.
		first.stop(t)
		third := startServerWith(t, sub("third"), replicaEnv(cfg, "dup-id")...)
		afterStop := waitReady(t, []*server{third}, 10*time.Second)

		// SIGKILL leaves the lease to run out.
		if err := third.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-third.exited
		killed := time.Now()
		fourth := startServerWith(t, sub("fourth"), replicaEnv(cfg, "dup-id")...)
		for {
			st, _, _ := readyz(fourth)
			if st == 200 {
				break
			}
			select {
			case err := <-fourth.exited:
				t.Fatalf("serve after the previous holder was killed exited after %v: %v\n%s", time.Since(killed), err, fourth.logs)
			default:
			}
			if time.Since(killed) > replicaTTL+5*time.Second {
				t.Fatalf("serve under a killed replica's id not ready %v after the kill\n%s", time.Since(killed), fourth.logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
		afterKill := time.Since(killed)
		t.Logf("%s: duplicate exited (%v) after %v; id reusable %v after a graceful stop, %v after SIGKILL",
			srv.Kind(), err, exitedAfter.Round(time.Millisecond), afterStop.Round(time.Millisecond), afterKill.Round(time.Millisecond))
	})
}

// TestStallPastTTLReplicas: etcd hangs for twice the replica TTL, so every
// replica's lease expires; once all are ready again, a revoke through each
// replica holds on all three at once. Then one replica is frozen
// (SIGSTOP): a revoke through another waits for its lease and succeeds, and
// once thawed the frozen replica must not allow the revoked key from its
// stale cache.
func TestStallPastTTLReplicas(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		srv := start(t)
		rs, cs := startReplicas(t, srv.Endpoints(), 3)
		tn := rs[0].cli(t, "tenants", "create", "--name", "Acme")["id"].(string)
		type key struct{ raw, id string }
		var keys []key
		for i := range 5 {
			raw, id := createKey(t, rs[i%3], tn, fmt.Sprint("k", i))
			keys = append(keys, key{raw, id})
		}
		for _, k := range keys {
			for i, c := range cs {
				for range 2 {
					if ok, status, _ := c.check(k.raw); !ok {
						t.Fatalf("r%d: key refused before the stall: %d", i, status)
					}
				}
			}
		}

		srv.Pause(t)
		time.Sleep(2 * replicaTTL)
		srv.Resume(t)
		readyAfter := waitReady(t, rs, 15*time.Second)

		var checks, wrong int64
		var revokes []string
		for i := range 3 {
			h := startHammer(cs, keys[i].raw)
			time.Sleep(200 * time.Millisecond)
			began := time.Now()
			rs[i].cli(t, "keys", "revoke", keys[i].id)
			took := time.Since(began)
			h.revoked.Store(true)
			time.Sleep(500 * time.Millisecond)
			h.stop()
			checks += h.checks.Load()
			wrong += h.wrong.Load()
			revokes = append(revokes, took.Round(time.Millisecond).String())
			if h.wrong.Load() > 0 {
				t.Errorf("revoke via r%d after the stall: %d wrong allows (r0/r1/r2 %d/%d/%d)", i, h.wrong.Load(), h.wrongBy[0].Load(), h.wrongBy[1].Load(), h.wrongBy[2].Load())
			}
			if h.errs.Load() > 0 {
				t.Errorf("revoke via r%d: %d Check errors: %v", i, h.errs.Load(), h.firstErr.Load())
			}
		}
		t.Logf("%s: all ready %v after etcd resumed from a %v hang; revokes via r0/r1/r2 took %v; %d Checks, %d wrong allows",
			srv.Kind(), readyAfter.Round(time.Millisecond), 2*replicaTTL, revokes, checks, wrong)

		// Freeze r2 (SIGSTOP) and revoke a key through r0: the revoke waits
		// for r2's lease. Checks sent to r2 after the revoke returned queue
		// up while it is frozen; it is thawed (SIGCONT) either at once or
		// after being frozen for longer than the TTL (its cache timer then
		// fires late). None of those Checks, nor any later one, may be
		// allowed.
		frozen := rs[2]
		for n, hold := range []time.Duration{0, replicaTTL + 1500*time.Millisecond} {
			k := keys[3+n]
			if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			stopped := time.Now()
			h := startHammer(cs[:2], k.raw)
			began := time.Now()
			out, err := tryCLI(rs[0], "keys", "revoke", k.id)
			took := time.Since(began)
			h.revoked.Store(true)
			queued := startHammer([]checker{cs[2], cs[2], cs[2], cs[2]}, k.raw)
			queued.revoked.Store(true)
			time.Sleep(300 * time.Millisecond)
			h.stop()
			if d := time.Until(stopped.Add(hold)); d > 0 {
				time.Sleep(d)
			}
			frozenFor := time.Since(stopped)
			if err := frozen.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			thawedAt := time.Now()
			time.Sleep(time.Second)
			queued.stop()
			if err != nil {
				t.Fatalf("revoke with r2 frozen failed after %v: %v\n%s", took, err, out)
			}
			var statuses []int32
			allowed := 0
			for time.Since(thawedAt) < 2*time.Second {
				ok, status, err := checkOnce(cs[2], k.raw)
				if err != nil {
					t.Fatalf("Check on the thawed replica: %v", err)
				}
				if ok {
					allowed++
				}
				if len(statuses) == 0 || statuses[len(statuses)-1] != status {
					statuses = append(statuses, status)
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("%s: revoke with r2 frozen took %v; r2 frozen %v in all; %d Checks on r0/r1, %d wrong allows; thawed r2: %d Checks queued while frozen or right after, %d allowed, %d errors; then answered %v (in order), %d allows",
				srv.Kind(), took.Round(time.Millisecond), frozenFor.Round(time.Millisecond), h.checks.Load(), h.wrong.Load(),
				queued.checks.Load(), queued.wrong.Load(), queued.errs.Load(), statuses, allowed)
			if h.wrong.Load() > 0 {
				t.Errorf("revoke with r2 frozen: %d wrong allows on r0/r1", h.wrong.Load())
			}
			if took < time.Second {
				t.Errorf("revoke with r2 frozen returned after %v: it did not wait for r2's lease", took)
			}
			if queued.wrong.Load() > 0 || allowed > 0 {
				t.Errorf("thawed r2 (frozen %v) allowed a key revoked while it was frozen: %d of %d queued Checks, %d later (statuses %v)",
					frozenFor, queued.wrong.Load(), queued.checks.Load(), allowed, statuses)
			}
			if queued.errs.Load() > 0 {
				t.Errorf("thawed r2: %d Check errors: %v", queued.errs.Load(), queued.firstErr.Load())
			}
			if statuses[len(statuses)-1] != 401 {
				t.Errorf("thawed r2 answers the revoked key %d, want 401 (statuses %v)", statuses[len(statuses)-1], statuses)
			}
			waitReady(t, rs, 10*time.Second)
		}
	})
}

// TestReadyzBoundedWithoutEtcd: /readyz answers within 2 s while etcd
// hangs: ready but degraded at first, not ready after the replica TTL, and
// ready again once etcd answers.
func TestReadyzBoundedWithoutEtcd(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		srv := start(t)
		rs, _ := startReplicas(t, srv.Endpoints(), 1)
		s := rs[0]
		srv.Pause(t)
		paused := time.Now()
		resumed := false
		defer func() {
			if !resumed {
				srv.Resume(t)
			}
		}()
		st, body, took := readyz(s)
		if st != 200 || !strings.Contains(body, "degraded") {
			t.Fatalf("/readyz right after etcd hung (%v in): %d %q, want 200 degraded", time.Since(paused), st, body)
		}
		var slowest time.Duration
		var notReadyAt time.Duration
		for time.Since(paused) < replicaTTL+3*time.Second {
			st, body, took := readyz(s)
			slowest = max(slowest, took)
			if took > 2*time.Second {
				t.Fatalf("/readyz took %v with etcd hung", took)
			}
			if st == 503 {
				notReadyAt = time.Since(paused)
				break
			}
			if st != 200 || !strings.Contains(body, "degraded") {
				t.Fatalf("/readyz %v after etcd hung: %d %q", time.Since(paused), st, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if notReadyAt == 0 {
			t.Fatalf("/readyz still ready %v after etcd hung (replica_ttl %v)", time.Since(paused), replicaTTL)
		}
		for range 5 {
			st, _, took := readyz(s)
			slowest = max(slowest, took)
			if st != 503 || took > 2*time.Second {
				t.Fatalf("/readyz past the TTL with etcd hung: %d in %v", st, took)
			}
		}
		srv.Resume(t)
		resumed = true
		readyAgain := waitReady(t, rs, 10*time.Second)
		t.Logf("%s: /readyz first answer %v (200 degraded), slowest %v; 503 from %v after etcd hung; 200 again %v after it resumed",
			srv.Kind(), took.Round(time.Millisecond), slowest.Round(time.Millisecond), notReadyAt.Round(time.Millisecond), readyAgain.Round(time.Millisecond))
	})
}

// TestLeaderLossReplicas: three replicas on a three-member Debian etcd
// cluster; the leader member is killed; a revoke through a replica still
// returns within a few seconds and every replica refuses the key.
func TestLeaderLossReplicas(t *testing.T) {
	cl := testetcd.StartDebianCluster(t, 3)
	rs, cs := startReplicas(t, cl.Endpoints(), 3)
	tn := rs[0].cli(t, "tenants", "create", "--name", "Acme")["id"].(string)
	raw, id := createKey(t, rs[0], tn, "k")
	for i, c := range cs {
		for range 2 {
			if ok, status, _ := c.check(raw); !ok {
				t.Fatalf("r%d: key refused: %d", i, status)
			}
		}
	}
	leader := cl.LeaderIndex(t)
	h := startHammer(cs, raw)
	cl.KillMember(t, leader)
	killed := time.Now()
	took, attempts := revokeCLI(t, rs[1], id, killed)
	h.revoked.Store(true)
	time.Sleep(time.Second)
	h.stop()
	for i, c := range cs {
		if ok, status, _ := c.check(raw); ok || status != 401 {
			t.Errorf("r%d: revoked key with the leader dead: allowed %v status %d", i, ok, status)
		}
	}
	if h.wrong.Load() > 0 {
		t.Errorf("%d wrong allows after the revoke (r0/r1/r2 %d/%d/%d)", h.wrong.Load(), h.wrongBy[0].Load(), h.wrongBy[1].Load(), h.wrongBy[2].Load())
	}
	if took > 5*time.Second {
		t.Errorf("revoke with the leader dead took %v", took)
	}
	cl.RestartMember(t, leader)
	readyAfter := waitReady(t, rs, 15*time.Second)
	raw2, _ := createKey(t, rs[2], tn, "after")
	for i, c := range cs {
		if ok, status, _ := c.check(raw2); !ok {
			t.Errorf("r%d: key created after the member came back: %d", i, status)
		}
	}
	t.Logf("%s, 3 members: leader %d killed; revoke via r1 acknowledged %v after (%d attempts); %d Checks, %d after the revoke, %d wrong allows, %d Check errors; all ready %v after the member restarted",
		cl.Kind(), leader, took.Round(time.Millisecond), attempts, h.checks.Load(), h.after.Load(), h.wrong.Load(), h.errs.Load(), readyAfter.Round(time.Millisecond))
}
