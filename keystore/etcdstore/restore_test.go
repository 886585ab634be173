package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/testetcd"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
	"github.com/keygate/keygate/keystore/etcdstore"
)

// openOn opens a replica on every endpoint of srv; logs go to logs when
// given.
func openOn(t *testing.T, endpoints []string, id string, logs io.Writer, startWithout bool) (replica, error) {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	b, err := etcdstore.Open(etcdstore.Config{
		Endpoints: endpoints, ReplicaTTL: ttl, ReplicaID: id,
		DialTimeout:      2 * time.Second,
		Logger:           slog.New(slog.NewTextHandler(logs, nil)),
		StartWithoutEtcd: startWithout,
	})
	if err != nil {
		return replica{}, err
	}
	s, err := keystore.New(b, keystore.Options{StartUnavailable: startWithout})
	if err != nil {
		b.Close()
		return replica{}, err
	}
	t.Cleanup(func() { s.Close() })
	return replica{s, b}, nil
}

func mustOpenOn(t *testing.T, srv testetcd.Server, id string) replica {
	t.Helper()
	r, err := openOn(t, srv.Endpoints(), id, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// status looks raw up on r: "active", "revoked", "unknown" or "error".
func status(r replica, raw string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, ok, err := r.s.LookupKey(ctx, apikey.HashOf(raw))
	switch {
	case err != nil:
		return "error"
	case !ok:
		return "unknown"
	case c.Status == authz.StatusActive:
		return "active"
	}
	return string(c.Status)
}

// cached makes sure r has raw in its cache (ristretto fills
// asynchronously).
func cached(t *testing.T, r replica, raw, want string) {
	t.Helper()
	for range 3 {
		if got := status(r, raw); got != want {
			t.Fatalf("%s: lookup says %s, want %s", r.b.ReplicaID(), got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestoreDropsCache is the operator's etcd restore under two replicas:
// keys cached before it, revoked or created after the snapshot, must not
// be served as the lost history had them, and a revoke made after the
// restore must hold on every replica once it returns.
func TestRestoreDropsCache(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		for _, newCluster := range []bool{false, true} {
			t.Run(fmt.Sprintf("newCluster=%v", newCluster), func(t *testing.T) {
				srv := start(t)
				r4, r5 := mustOpenOn(t, srv, "r4"), mustOpenOn(t, srv, "r5")
				tn, _ := setup(t, r4.s)
				k, err := r4.s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "K"})
				if err != nil {
					t.Fatal(err)
				}
				cached(t, r5, k.Secret.Reveal(), "active")
				snap := srv.Snapshot(t)

				// After the snapshot: 30 keys (one cached on r5) and a
				// revoke (cached on r5) that the restore will undo.
				var later keystore.CreatedKey
				for i := range 30 {
					if later, err = r4.s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: fmt.Sprint("later", i)}); err != nil {
						t.Fatal(err)
					}
				}
				cached(t, r5, later.Secret.Reveal(), "active")

				srv.Restore(t, snap, newCluster)

				// The key created after the snapshot is gone from etcd:
				// no replica may go on allowing it.
				deadline := time.Now().Add(3 * time.Second)
				for status(r5, later.Secret.Reveal()) == "active" {
					if time.Now().After(deadline) {
						t.Fatal("r5 still allows a key the restore removed, 3s after etcd came back")
					}
					time.Sleep(50 * time.Millisecond)
				}

				began := time.Now()
				if _, err := r4.s.RevokeKey(t.Context(), k.ID); err != nil {
					t.Fatalf("revoke after the restore: %v", err)
				}
				took := time.Since(began)
				var wrong int
				for range 40 {
					switch s := status(r5, k.Secret.Reveal()); s {
					case "active":
						wrong++
					case "revoked":
					default:
						t.Fatalf("r5 after the revoke: %s", s)
					}
					time.Sleep(25 * time.Millisecond)
				}
				if wrong > 0 {
					t.Fatalf("r5 allowed the key revoked after the restore on %d of 40 lookups", wrong)
				}
				if s := status(r4, k.Secret.Reveal()); s != "revoked" {
					t.Fatalf("r4: %s", s)
				}
				for _, r := range []replica{r4, r5} {
					if r.s.Stats().CacheResets == 0 {
						t.Fatalf("%s: no cache reset after the restore", r.b.ReplicaID())
					}
				}
				t.Logf("%s: revoke after the restore took %v; 0 of 40 lookups allowed it", srv.Kind(), took)
			})
		}
	})
}

// TestRestoreRevokeRace: three replicas, a key cached on all, lookups
// running on every replica all along; etcd is restored to a snapshot
// taken while the key was active, and the key is revoked through a
// different replica each round. After each revoke returns, no replica may
// allow it.
func TestRestoreRevokeRace(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		srv := start(t)
		rs := []replica{mustOpenOn(t, srv, "a"), mustOpenOn(t, srv, "b"), mustOpenOn(t, srv, "c")}
		tn, _ := setup(t, rs[0].s)
		rounds, wrong, lookups := 3, 0, 0
		for round := range rounds {
			k, err := rs[round%3].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: fmt.Sprint("race", round)})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				cached(t, r, k.Secret.Reveal(), "active")
			}
			snap := srv.Snapshot(t)
			for i := range 10 {
				if _, err := rs[0].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: fmt.Sprint("filler", round, i)}); err != nil {
					t.Fatal(err)
				}
			}
			var (
				revoked atomic.Bool
				bad     atomic.Int64
				n       atomic.Int64
				stop    = make(chan struct{})
				wg      sync.WaitGroup
			)
			for _, r := range rs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						after := revoked.Load()
						if status(r, k.Secret.Reveal()) == "active" && after {
							bad.Add(1)
						}
						n.Add(1)
						time.Sleep(5 * time.Millisecond)
					}
				}()
			}
			srv.Restore(t, snap, round%2 == 1)
			if _, err := rs[(round+1)%3].s.RevokeKey(t.Context(), k.ID); err != nil {
				t.Fatalf("round %d: revoke: %v", round, err)
			}
			revoked.Store(true)
			time.Sleep(time.Second)
			close(stop)
			wg.Wait()
			wrong += int(bad.Load())
			lookups += int(n.Load())
		}
		if wrong > 0 {
			t.Fatalf("%d lookups allowed a key after its revoke returned", wrong)
		}
		t.Logf("%s: %d restore rounds, %d lookups, 0 wrong allows", srv.Kind(), rounds, lookups)
	})
}

// TestDuplicateReplicaID: a second replica with a live replica's id does
// not start, and says why; once the first has gone (and its lease with
// it), the id is free again.
func TestDuplicateReplicaID(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		srv := start(t)
		first := mustOpenOn(t, srv, "same")
		began := time.Now()
		_, err := openOn(t, srv.Endpoints(), "same", nil, false)
		if !errors.Is(err, etcdstore.ErrReplicaIDInUse) {
			t.Fatalf("second replica with the same id: %v, want ErrReplicaIDInUse", err)
		}
		if !strings.Contains(err.Error(), `"same"`) || !strings.Contains(err.Error(), "replica_id") {
			t.Fatalf("error does not say what to do: %v", err)
		}
		t.Logf("refused after %v: %v", time.Since(began).Round(time.Millisecond), err)
		// Started while etcd is out of its reach, a replica claims its id
		// in the background: held by a live replica, it serves no cache
		// and is not ready, saying why.
		p := newProxy(t, srv.Endpoint())
		p.cut()
		late, err := openOn(t, []string{p.endpoint()}, "same", nil, true)
		if err != nil {
			t.Fatalf("start without etcd in reach: %v", err)
		}
		p.heal()
		deadline := time.Now().Add(ttl + 15*time.Second)
		for err := late.s.Ready(t.Context()); !errors.Is(err, etcdstore.ErrReplicaIDInUse); err = late.s.Ready(t.Context()) {
			if late.b.Fresh() {
				t.Fatal("a replica whose id is in use follows writes (serves its cache)")
			}
			if time.Now().After(deadline) {
				t.Fatalf("id in use not reported: ready says %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if late.b.Fresh() {
			t.Fatal("a replica whose id is in use follows writes (serves its cache)")
		}
		late.s.Close()
		first.s.Close()
		if _, err := openOn(t, srv.Endpoints(), "same", nil, false); err != nil {
			t.Fatalf("id free again after the first replica closed: %v", err)
		}
	})
}

// TestCrashedPredecessorID: a replica that stopped renewing (a crash, a
// partition) leaves its id to its successor within a TTL.
func TestCrashedPredecessorID(t *testing.T) {
	n := testetcd.Start(t)
	p := newProxy(t, n.Endpoint())
	if _, err := openOn(t, []string{p.endpoint()}, "pod-0", nil, false); err != nil {
		t.Fatal(err)
	}
	p.cut()
	began := time.Now()
	r, err := openOn(t, []string{n.Endpoint()}, "pod-0", nil, false)
	if err != nil {
		t.Fatalf("successor: %v", err)
	}
	if d := time.Since(began); d > ttl+3*time.Second {
		t.Fatalf("successor took %v to take over the id (TTL %v)", d, ttl)
	}
	if !r.b.Fresh() {
		t.Fatal("successor not following writes")
	}
}

// TestStallPastTTL: etcd hangs for longer than the replica TTL (its
// leases expire meanwhile). Afterwards every replica must publish again
// that writers wait for it, and a revoke raced against lookups on every
// replica holds everywhere once it returns; a replica that then stops
// answering is waited for until its lease expires.
func TestStallPastTTL(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		srv := start(t)
		rs := []replica{mustOpenOn(t, srv, "s0"), mustOpenOn(t, srv, "s1"), mustOpenOn(t, srv, "s2")}
		tn, _ := setup(t, rs[0].s)
		keys := make([]keystore.CreatedKey, 3)
		for i := range keys {
			var err error
			if keys[i], err = rs[0].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: fmt.Sprint("k", i)}); err != nil {
				t.Fatal(err)
			}
		}
		srv.Pause(t)
		time.Sleep(ttl*3/2 + 500*time.Millisecond)
		srv.Resume(t)
		waitFresh(t, rs)
		cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		deadline := time.Now().Add(2 * ttl)
		for {
			resp, err := cli.Get(t.Context(), "/keygate/replicas/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			serving := 0
			for _, kv := range resp.Kvs {
				if string(kv.Value) != "-" {
					serving++
				}
			}
			if serving == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the stall, %d of 3 replicas publish that writers wait for them: %v", serving, resp.Kvs)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// A revoke through each replica in turn, raced by lookups on all.
		for i, k := range keys {
			for _, r := range rs {
				cached(t, r, k.Secret.Reveal(), "active")
			}
			if _, err := rs[i].s.RevokeKey(t.Context(), k.ID); err != nil {
				t.Fatal(err)
			}
			for j, r := range rs {
				if s := status(r, k.Secret.Reveal()); s != "revoked" {
					t.Fatalf("revoke through s%d: s%d says %s", i, j, s)
				}
			}
		}
	})
}

// TestReadyWithoutEtcd: readiness answers within its bound whatever etcd
// does: ready (degraded) while the cache is trusted, not ready after.
func TestReadyWithoutEtcd(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		srv := start(t)
		r := mustOpenOn(t, srv, "ready")
		ready := func() (time.Duration, error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			began := time.Now()
			err := r.s.Ready(ctx)
			return time.Since(began), err
		}
		if _, err := ready(); err != nil {
			t.Fatal(err)
		}
		srv.Pause(t)
		defer srv.Resume(t)
		paused := time.Now()
		sawDegraded, sawUnready := false, false
		for time.Since(paused) < 2*ttl {
			took, err := ready()
			if took > 1100*time.Millisecond {
				t.Fatalf("Ready took %v with a 1s bound", took)
			}
			var d interface{ Degraded() bool }
			switch {
			case err == nil:
				if time.Since(paused) > 1100*time.Millisecond {
					t.Fatalf("ready %v after etcd hung", time.Since(paused))
				}
			case errors.As(err, &d) && d.Degraded():
				sawDegraded = true
				if time.Since(paused) > ttl+time.Second {
					t.Fatalf("still ready (degraded) %v after etcd hung, TTL %v", time.Since(paused), ttl)
				}
			default:
				sawUnready = true
			}
			if sawUnready {
				break
			}
		}
		if !sawUnready {
			t.Fatal("never not ready while etcd hung")
		}
		if !sawDegraded {
			t.Fatal("never ready-but-degraded while the cache was still trusted")
		}
		t.Logf("%s: degraded seen %v, not ready after %v", srv.Kind(), sawDegraded, time.Since(paused).Round(time.Millisecond))
	})
}

// TestStartWithoutEtcd: a replica started while etcd is down fails every
// lookup closed and is not ready; once etcd answers it follows writes.
func TestStartWithoutEtcd(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		srv := start(t)
		seed := mustOpenOn(t, srv, "seed")
		tn, _ := setup(t, seed.s)
		k, err := seed.s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
		if err != nil {
			t.Fatal(err)
		}
		seed.s.Close()
		srv.Stop()
		began := time.Now()
		r, err := openOn(t, srv.Endpoints(), "late", nil, true)
		if err != nil {
			t.Fatalf("start without etcd: %v", err)
		}
		if d := time.Since(began); d > 10*time.Second {
			t.Fatalf("start took %v", d)
		}
		if s := status(r, k.Secret.Reveal()); s != "error" {
			t.Fatalf("lookup without etcd: %s, want an error (fail closed)", s)
		}
		if _, _, err := r.s.LookupKey(t.Context(), apikey.HashOf(k.Secret.Reveal())); !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("lookup error %v, want ErrUnavailable", err)
		}
		if err := r.s.Ready(t.Context()); err == nil {
			t.Fatal("ready without etcd")
		}
		if _, err := r.s.CreateTenant(t.Context(), "x"); !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("write without etcd: %v", err)
		}
		srv.Restart(t)
		deadline := time.Now().Add(20 * time.Second)
		for r.s.Ready(t.Context()) != nil || !r.b.Fresh() {
			if time.Now().After(deadline) {
				t.Fatalf("not ready 20s after etcd came back: %v", r.s.Ready(t.Context()))
			}
			time.Sleep(100 * time.Millisecond)
		}
		cached(t, r, k.Secret.Reveal(), "active")
		if _, err := mustOpenOn(t, srv, "writer").s.RevokeKey(t.Context(), k.ID); err != nil {
			t.Fatal(err)
		}
		if s := status(r, k.Secret.Reveal()); s != "revoked" {
			t.Fatalf("after a revoke elsewhere: %s", s)
		}
	})
}

// TestEntryOverwritten: another process writes this replica's entry while
// it runs (two processes under one id). The replica stops serving its
// cache and is not ready, naming the cause; lookups still read etcd.
func TestEntryOverwritten(t *testing.T) {
	n := testetcd.Start(t)
	r := mustOpenOn(t, n, "twin")
	tn, _ := setup(t, r.s)
	k, err := r.s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	cached(t, r, k.Secret.Reveal(), "active")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{n.Endpoint()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	l, err := cli.Grant(t.Context(), 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(t.Context(), "/keygate/replicas/twin", "1", clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for !errors.Is(r.s.Ready(t.Context()), etcdstore.ErrReplicaIDInUse) || r.b.Fresh() {
		if time.Now().After(deadline) {
			t.Fatalf("entry overwritten: ready %v, fresh %v", r.s.Ready(t.Context()), r.b.Fresh())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := status(r, k.Secret.Reveal()); s != "active" {
		t.Fatalf("lookup without the cache: %s", s)
	}
}
