package etcdstore_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/testetcd"
	"github.com/keygate/keygate/keystore"
)

// testClock is a clock the replicas of a test share.
type testClock struct{ ns atomic.Int64 }

func (c *testClock) Now() time.Time       { return time.Unix(0, c.ns.Load()).UTC() }
func (c *testClock) Set(t time.Time)      { c.ns.Store(t.UnixNano()) }
func newTestClock(t time.Time) *testClock { c := &testClock{}; c.Set(t); return c }

// drain has three goroutines per replica spend 1 credit at a time until
// each is refused, and returns how many spends were allowed.
func drain(t *testing.T, rs []replica, cs []*authz.Credential) int64 {
	t.Helper()
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i, r := range rs {
		for range 3 {
			wg.Go(func() {
				for spendOnce(t, r, cs[i]) {
					allowed.Add(1)
				}
			})
		}
	}
	wg.Wait()
	return allowed.Load()
}

// TestRefillReplicas: three replicas spend a daily-refilled balance to
// exhaustion; past midnight, a key nobody spent since shows the refill on
// every replica, and the three racing spend exactly the amount again: the
// refill is applied once (one epoch), at the boundary.
func TestRefillReplicas(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		srv := start(t)
		clock := newTestClock(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
		var rs []replica
		for i := range 3 {
			// A reservation that times out on a loaded machine strands its
			// slice, and "exactly the amount" would then fail for the
			// wrong reason: the bound here is generous.
			rs = append(rs, open(t, srv.Endpoint(), fmt.Sprint("r", i), keystore.Options{Now: clock.Now, LookupTimeout: 10 * time.Second}))
		}
		tn, _ := setup(t, rs[0].s)
		const amount = 100
		ck, err := rs[0].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "refilled", Refill: &keystore.Refill{Interval: keystore.RefillDaily, Amount: amount}})
		if err != nil {
			t.Fatal(err)
		}
		var cs []*authz.Credential
		for _, r := range rs {
			cs = append(cs, mustLookup(t, r.s, ck.Secret.Reveal()))
		}
		if n := drain(t, rs, cs); n != amount {
			t.Fatalf("first day: %d allowed, want %d", n, amount)
		}
		before, err := rs[0].s.Key(t.Context(), ck.ID)
		if err != nil {
			t.Fatal(err)
		}

		boundary := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
		clock.Set(boundary.Add(time.Millisecond))
		for i, r := range rs {
			k, err := r.s.Key(t.Context(), ck.ID)
			if err != nil {
				t.Fatal(err)
			}
			if *k.CreditsRemaining != amount || !k.LastRefillAt.Equal(boundary) {
				t.Fatalf("replica %d before any spend: balance %d, last refill %v; want %d at %v", i, *k.CreditsRemaining, k.LastRefillAt, amount, boundary)
			}
		}
		if n := drain(t, rs, cs); n != amount {
			t.Fatalf("after the boundary: %d allowed, want exactly %d", n, amount)
		}
		for i, r := range rs {
			// Every replica's follower has the last write once a write
			// through it is done; a read may still race the delivery, so
			// wait for the record, not for the ledger.
			deadline := time.Now().Add(5 * time.Second)
			for {
				k, err := r.s.Key(t.Context(), ck.ID)
				if err != nil {
					t.Fatal(err)
				}
				if k.LastRefillAt.Equal(boundary) && k.CreditsEpoch == before.CreditsEpoch+1 && *k.CreditsRemaining == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("replica %d: last refill %v epoch %d (was %d) balance %d; want %v, one refill, 0", i, k.LastRefillAt, k.CreditsEpoch, before.CreditsEpoch, *k.CreditsRemaining, boundary)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
}
