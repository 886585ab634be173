package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/internal/testetcd"
	"github.com/keygate/keygate/keystore"
)

// checker calls Check on a running server with go-control-plane's client.
type checker struct {
	t      *testing.T
	client authv3.AuthorizationClient
}

func newChecker(t *testing.T, addr string) checker {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return checker{t, authv3.NewAuthorizationClient(conn)}
}

// check returns whether the request with key raw is allowed, the denial's
// HTTP status otherwise, and the tenant header set on an allow.
func (c checker) check(raw string) (allowed bool, status int32, tenant string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/x", Headers: map[string]string{"x-api-key": raw}}},
	}})
	if err != nil {
		c.t.Fatal(err)
	}
	if ok := resp.GetOkResponse(); ok != nil {
		for _, h := range ok.GetHeaders() {
			if h.GetHeader().GetKey() == "x-tenant-id" {
				tenant = h.GetHeader().GetValue()
			}
		}
		return true, 200, tenant
	}
	return false, int32(resp.GetDeniedResponse().GetStatus().GetCode()), ""
}

func runKeygate(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(keygateBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestThreeReplicasOverEtcd is issue 9's scenario with the real binary:
// keys migrated from a bbolt file into etcd, three `keygate serve`
// replicas on it; a key created through one replica's admin API works on
// the others at once, a revoke through another is refused by all at once;
// with etcd stopped, cached keys keep working for less than the replica
// TTL and then every Check fails closed (503); with etcd back, replicas
// follow writes again; and the store migrates back to a bbolt file. It
// runs on the embedded etcd and on Debian's etcd binary.
func TestThreeReplicasOverEtcd(t *testing.T) {
	testetcd.Each(t, testThreeReplicasOverEtcd)
}

func testThreeReplicasOverEtcd(t *testing.T, start func(testing.TB) testetcd.Server) {
	node := start(t)
	dir := t.TempDir()

	// An existing single-node deployment's file, migrated into etcd.
	seedPath := filepath.Join(dir, "seed.db")
	seed, err := keystore.Open(seedPath, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tn, _ := seed.CreateTenant(t.Context(), "Acme")
	old, err := seed.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "from bbolt"})
	if err != nil {
		t.Fatal(err)
	}
	seed.Close()
	env := []string{"KEYGATE_ETCD_ENDPOINTS=" + node.Endpoint(), "KEYGATE_CONFIG="}
	out, err := runKeygate(t, env, "store", "migrate", "--from-bbolt", seedPath)
	if err != nil || !strings.Contains(out, "copied 1 tenants, 0 orgs, 0 users, 1 keys") {
		t.Fatalf("migrate into etcd: %v\n%s", err, out)
	}

	cfg := filepath.Join(dir, "keygate.yaml")
	writeFile(t, cfg, "store:\n  etcd:\n    endpoints: [\""+node.Endpoint()+"\"]\n    replica_ttl: 2s\n")
	var replicas []*server
	var checks []checker
	for i := range 3 {
		rdir := filepath.Join(dir, "r"+string(rune('0'+i)))
		if err := os.Mkdir(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		s := startServerWith(t, rdir, "KEYGATE_CONFIG="+cfg, "KEYGATE_STORE=", "KEYGATE_ETCD_ENDPOINTS=")
		replicas = append(replicas, s)
		checks = append(checks, newChecker(t, s.grpcAddr))
	}
	for i, c := range checks {
		if ok, status, tenant := c.check(old.Secret.Reveal()); !ok || tenant != tn.ID {
			t.Fatalf("replica %d: migrated key: allowed %v status %d tenant %q", i, ok, status, tenant)
		}
	}

	created := replicas[0].cli(t, "keys", "create", "--tenant", tn.ID, "--name", "made on r0")
	raw, id := created["key"].(string), created["id"].(string)
	for i, c := range checks {
		if ok, status, _ := c.check(raw); !ok {
			t.Fatalf("replica %d: key created on r0 refused with %d", i, status)
		}
	}
	// keygate check reads the shared store while the replicas run.
	checkEnv := []string{"KEYGATE_CONFIG=" + cfg, "KEYGATE_STORE="}
	if out, err := runKeygate(t, checkEnv, "check", "--header", "x-api-key: "+raw, "--path", "/x"); err != nil || !strings.HasPrefix(out, "ALLOW") {
		t.Fatalf("keygate check on etcd: %v\n%s", err, out)
	}
	replicas[1].cli(t, "keys", "revoke", id)
	for i, c := range checks {
		if ok, status, _ := c.check(raw); ok || status != 401 {
			t.Fatalf("replica %d: key revoked on r1: allowed %v status %d", i, ok, status)
		}
	}
	if out, err := runKeygate(t, checkEnv, "check", "--header", "x-api-key: "+raw, "--path", "/x"); err == nil || !strings.HasPrefix(out, "DENY 401") {
		t.Fatalf("keygate check on etcd after the revoke: %v\n%s", err, out)
	}

	// etcd goes away. Nobody can revoke anything while it is gone, so
	// cached keys keep working, for less than the replica TTL.
	stopped := time.Now()
	down := make(chan struct{})
	go func() { node.Stop(); close(down) }()
	if ok, status, _ := checks[2].check(old.Secret.Reveal()); !ok {
		t.Fatalf("cached key right after etcd stopped: %d", status)
	}
	var closedAt time.Duration
	for time.Since(stopped) < 10*time.Second {
		at := time.Since(stopped)
		if ok, status, _ := checks[2].check(old.Secret.Reveal()); !ok {
			if status != 503 {
				t.Fatalf("without etcd: status %d, want 503", status)
			}
			closedAt = at
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if closedAt == 0 || closedAt > 2*time.Second {
		t.Fatalf("replica kept allowing from its cache for %v after etcd stopped (replica_ttl 2s)", closedAt)
	}
	t.Logf("%s: cache trusted for %v after etcd stopped; then 503", node.Kind(), closedAt)
	<-down
	node.Restart(t)
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range checks {
		for {
			if ok, _, _ := c.check(old.Secret.Reveal()); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("replicas did not recover 30s after etcd came back")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	replicas[2].cli(t, "keys", "revoke", old.ID)
	for i, c := range checks {
		if ok, status, _ := c.check(old.Secret.Reveal()); ok || status != 401 {
			t.Fatalf("replica %d after etcd came back: revoked key: allowed %v status %d", i, ok, status)
		}
	}

	// And back to a file: one replica's worth of keys, revocations kept.
	back := filepath.Join(dir, "back.db")
	out, err = runKeygate(t, env, "store", "migrate", "--to-bbolt", back)
	if err != nil || !strings.Contains(out, "copied 1 tenants, 0 orgs, 0 users, 2 keys") {
		t.Fatalf("migrate back to bbolt: %v\n%s", err, out)
	}
	b, err := keystore.Open(back, keystore.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, kid := range []string{old.ID, id} {
		k, err := b.Key(t.Context(), kid)
		if err != nil || k.Status != "revoked" {
			t.Fatalf("key %s in the migrated file: %+v %v", kid, k, err)
		}
	}
}

// TestServeWithoutEtcdStartsClosed: a replica whose etcd does not answer
// starts anyway (no restart loop), answers every Check 503 and reports not
// ready; once etcd answers it becomes ready and serves keys, without a
// restart.
func TestServeWithoutEtcdStartsClosed(t *testing.T) {
	node := testetcd.Start(t)
	seed := startServerWith(t, t.TempDir(), "KEYGATE_ETCD_ENDPOINTS="+node.Endpoint(), "KEYGATE_CONFIG=")
	tn := seed.cli(t, "tenants", "create", "--name", "Acme")
	created := seed.cli(t, "keys", "create", "--tenant", tn["id"].(string), "--name", "k")
	raw := created["key"].(string)
	seed.stop(t)
	node.Stop()

	began := time.Now()
	s := startServerWith(t, t.TempDir(), "KEYGATE_ETCD_ENDPOINTS="+node.Endpoint(), "KEYGATE_CONFIG=")
	t.Logf("serving %v after start with etcd down", time.Since(began).Round(time.Millisecond))
	c := newChecker(t, s.grpcAddr)
	if ok, status, _ := c.check(raw); ok || status != 503 {
		t.Fatalf("Check with etcd down: allowed %v status %d, want 503", ok, status)
	}
	readyBegan := time.Now()
	if got := ready(t, s); got != 503 {
		t.Fatalf("/readyz with etcd down: %d", got)
	}
	if d := time.Since(readyBegan); d > 2*time.Second {
		t.Fatalf("/readyz took %v with etcd down", d)
	}
	if !strings.Contains(s.logs.String(), "etcd does not answer") {
		t.Fatalf("log does not say etcd does not answer:\n%s", s.logs)
	}
	node.Restart(t)
	deadline := time.Now().Add(30 * time.Second)
	for ready(t, s) != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("not ready 30s after etcd came back\n%s", s.logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ok, status, _ := c.check(raw); !ok {
		t.Fatalf("Check once etcd is back: %d", status)
	}
	select {
	case err := <-s.exited:
		t.Fatalf("serve exited: %v", err)
	default:
	}
}
