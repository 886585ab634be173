package etcdstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
)

// TestUsageExactAcrossReplicas: Checks spread over three replicas, from
// many goroutines, with flushes racing them, add up to exactly the number
// of Checks on every replica once all have flushed; flushing again adds
// nothing.
func TestUsageExactAcrossReplicas(t *testing.T) {
	_, rs := three(t, keystore.Options{LastUsedFlush: 50 * time.Millisecond})
	tn, o := setup(t, rs[0].s)
	ck, err := rs[0].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, OrgID: o.ID, Name: "k", CreditsRemaining: new(int64(1 << 40))})
	if err != nil {
		t.Fatal(err)
	}
	var es []*authz.Engine
	for _, r := range rs {
		e, err := authz.New(authz.Config{Recorder: r.s, Credits: r.s, RateLimits: authz.RateLimits{PerKeyOff: true}}, r.s)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	const workers, per = 6, 150
	start := time.Now()
	// Under load a replica may refuse (429, credits it cannot reserve in
	// time) or fail closed (503, etcd slow): usage must count exactly the
	// answers given, 503s aside, which are no decision about the key.
	var mu sync.Mutex
	byStatus := map[int]int64{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				e := es[(w+i)%len(es)]
				d, _ := e.Decide(context.Background(), &authz.Request{Method: "GET", Path: "/v1/x", Peer: "10.0.0.1",
					Headers: map[string]string{"x-api-key": ck.Secret.Reveal()}})
				mu.Lock()
				byStatus[d.Status]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("answers by status: %v", byStatus)
	if byStatus[200] < workers*per/2 || byStatus[200]+byStatus[429]+byStatus[503] != workers*per {
		t.Fatalf("answers by status: %v", byStatus)
	}
	want := keystore.UsageCounts{Allowed: byStatus[200], Credits: byStatus[200], Denied429: byStatus[429]}
	for range 2 {
		for _, r := range rs {
			if err := r.s.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		for i, r := range rs {
			bs, err := r.s.KeyUsage(t.Context(), ck.ID, start, time.Now().Add(time.Second), keystore.Hourly)
			if err != nil {
				t.Fatal(err)
			}
			var got keystore.UsageCounts
			for _, b := range bs {
				got.Allowed += b.Allowed
				got.Credits += b.Credits
				got.Denied401 += b.Denied401
				got.Denied429 += b.Denied429
			}
			if got != want {
				t.Fatalf("replica %d: %+v, want %+v", i, got, want)
			}
			rep, err := r.s.UsageTotals(t.Context(), "", o.ID, start, time.Now().Add(time.Second))
			if err != nil || rep.Totals != want {
				t.Fatalf("replica %d: org totals %+v (err %v), want %+v", i, rep.Totals, err, want)
			}
		}
	}
	// A revoked key's refusals count too, on whichever replica refused.
	if _, err := rs[1].s.RevokeKey(t.Context(), ck.ID); err != nil {
		t.Fatal(err)
	}
	for i := range 9 {
		d, _ := es[i%3].Decide(context.Background(), &authz.Request{Method: "GET", Path: "/v1/x", Peer: "10.0.0.1",
			Headers: map[string]string{"x-api-key": ck.Secret.Reveal()}})
		if d.Status != 401 {
			t.Fatalf("revoked: status %d", d.Status)
		}
	}
	for _, r := range rs {
		if err := r.s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := rs[2].s.UsageTotals(t.Context(), tn.ID, "", start, time.Now().Add(time.Second))
	want.Denied401 += 9
	if err != nil || rep.Totals != want || len(rep.Keys) != 1 {
		t.Fatalf("tenant totals %+v (err %v), want %+v", rep, err, want)
	}
}

// TestUsagePruneOnEtcd: a replica prunes rows past retention, whichever
// replica wrote them, and keeps the recent ones.
func TestUsagePruneOnEtcd(t *testing.T) {
	// No flush tick (and so no pruning of the stores' own) during the test.
	n, rs := three(t, keystore.Options{LastUsedFlush: time.Hour})
	tn, _ := setup(t, rs[0].s)
	ck, err := rs[0].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-100 * 24 * time.Hour)
	past := open(t, n.Endpoint(), "past", keystore.Options{LastUsedFlush: time.Hour, Now: func() time.Time { return old }})
	for _, at := range []struct {
		s   *keystore.Store
		now func() time.Time
	}{{past.s, func() time.Time { return old }}, {rs[1].s, time.Now}} {
		e, err := authz.New(authz.Config{Recorder: at.s, Now: at.now, RateLimits: authz.RateLimits{PerKeyOff: true}}, at.s)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if d, _ := e.Decide(context.Background(), &authz.Request{Method: "GET", Path: "/x", Peer: "10.0.0.1",
				Headers: map[string]string{"x-api-key": ck.Secret.Reveal()}}); d.Status != 200 {
				t.Fatalf("status %d", d.Status)
			}
		}
		if err := at.s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	sum := func() int64 {
		bs, err := rs[2].s.KeyUsage(t.Context(), ck.ID, old.Add(-time.Hour), time.Now().Add(time.Hour), keystore.Daily)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, b := range bs {
			n += b.Allowed
		}
		return n
	}
	if got := sum(); got != 6 {
		t.Fatalf("before pruning: %d allowed, want 6", got)
	}
	deleted, more, err := rs[2].s.PruneUsage(t.Context())
	if err != nil || more || deleted != 1 {
		t.Fatalf("prune: deleted %d, more %v, err %v; want the one old row", deleted, more, err)
	}
	if got := sum(); got != 3 {
		t.Fatalf("after pruning: %d allowed, want 3", got)
	}
}
