package etcdstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
)

// meteredKey creates a key with balance credits through rs[0] and returns
// its id and, per replica, the credential a Check would spend with.
func meteredKey(t *testing.T, rs []replica, balance int64) (string, []*authz.Credential) {
	t.Helper()
	tn, _ := setup(t, rs[0].s)
	ck, err := rs[0].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "metered", CreditsRemaining: new(balance)})
	if err != nil {
		t.Fatal(err)
	}
	var cs []*authz.Credential
	for _, r := range rs {
		cs = append(cs, mustLookup(t, r.s, ck.Secret.Reveal()))
	}
	return ck.ID, cs
}

// spendOnce spends 1 credit through replica r; an error (503 for the
// client) is not an allow.
func spendOnce(t *testing.T, r replica, c *authz.Credential) bool {
	t.Helper()
	_, ok, err := r.s.Spend(context.Background(), c, 1)
	if err != nil {
		t.Errorf("spend: %v", err)
		return false
	}
	return ok
}

// roundRobin spends n times, one replica after the other.
func roundRobin(t *testing.T, rs []replica, cs []*authz.Credential, n int) int64 {
	t.Helper()
	var allowed int64
	for i := range n {
		if spendOnce(t, rs[i%len(rs)], cs[i%len(rs)]) {
			allowed++
		}
	}
	return allowed
}

// settle spends round robin until a pass allows nothing: a replica that
// found the record short refuses the key from memory for up to a tick
// (500 ms), and learns of slices returned by others through its watch, so
// each pass waits that out first.
func settle(t *testing.T, rs []replica, cs []*authz.Credential) int64 {
	t.Helper()
	var allowed int64
	for range 5 {
		time.Sleep(1200 * time.Millisecond)
		n := roundRobin(t, rs, cs, 300)
		allowed += n
		if n == 0 {
			break
		}
	}
	return allowed
}

// waitReturned waits until no live replica holds a slice of id's balance:
// the record's reservations are only those in keep (a crashed replica's).
// It returns the record.
func waitReturned(t *testing.T, s *keystore.Store, id string, keep int) keystore.Key {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		k, err := s.Key(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if len(k.CreditsReserved) <= keep {
			return k
		}
		if time.Now().After(deadline) {
			t.Fatalf("slices not returned after 5 s idle: reserved %v", k.CreditsReserved)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCreditsReplicasRoundRobin: three replicas spend one balance of 100,
// one request each in turn. Before slices each spent from its own copy
// and 300 of 300 were allowed; now at most 100 are, and once the slices
// left idle have gone back, exactly 100.
func TestCreditsReplicasRoundRobin(t *testing.T) {
	_, rs := three(t, keystore.Options{})
	id, cs := meteredKey(t, rs, 100)
	first := roundRobin(t, rs, cs, 300)
	if first > 100 {
		t.Fatalf("%d of 300 allowed, balance 100", first)
	}
	k := waitReturned(t, rs[0].s, id, 0)
	if *k.CreditsRemaining != 100-first {
		t.Fatalf("after idle return the record holds %d, want 100 - %d spent", *k.CreditsRemaining, first)
	}
	second := settle(t, rs, cs)
	t.Logf("allowed %d of 300, then %d after the idle return", first, second)
	if first+second != 100 {
		t.Fatalf("%d + %d allowed in all, want exactly 100", first, second)
	}
}

// TestCreditsReplicasParallel: three goroutines per replica race for 100
// credits.
func TestCreditsReplicasParallel(t *testing.T) {
	_, rs := three(t, keystore.Options{})
	id, cs := meteredKey(t, rs, 100)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i, r := range rs {
		for range 3 {
			wg.Go(func() {
				for range 60 {
					if spendOnce(t, r, cs[i]) {
						allowed.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	first := allowed.Load()
	if first > 100 {
		t.Fatalf("%d allowed in parallel, balance 100", first)
	}
	waitReturned(t, rs[0].s, id, 0)
	second := settle(t, rs, cs)
	t.Logf("allowed %d of 540 in parallel, then %d after the idle return", first, second)
	if first+second != 100 {
		t.Fatalf("%d + %d allowed in all, want exactly 100", first, second)
	}
}

// TestCreditsReplicaCrash: one replica's backend closes under it mid-spend
// (as kill -9 would leave things: nothing returned). The total allowed
// stays within the balance, and what the crash stranded is at most the
// slice the record shows it held. With 100 credits the spending runs the
// balance out; with 1000 it stops halfway, so the crashed replica is
// likelier to hold unspent credits.
func TestCreditsReplicaCrash(t *testing.T) {
	for _, tc := range []struct{ balance, perReplica int64 }{{100, 100}, {1000, 150}} {
		t.Run(fmt.Sprint(tc.balance), func(t *testing.T) {
			_, rs := three(t, keystore.Options{})
			id, cs := meteredKey(t, rs, tc.balance)
			var allowed, onCrashed atomic.Int64
			var wg sync.WaitGroup
			for i, r := range rs {
				wg.Go(func() {
					for range tc.perReplica {
						_, ok, err := r.s.Spend(context.Background(), cs[i], 1)
						if err != nil {
							t.Errorf("spend: %v", err)
						}
						if !ok {
							continue
						}
						allowed.Add(1)
						// The third replica dies after a few spends, while
						// the others go on.
						if i == 2 && onCrashed.Add(1) == 5 {
							break
						}
					}
					if i == 2 {
						if err := r.b.Close(); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			k := waitReturned(t, rs[0].s, id, 1)
			var slice int64
			for _, n := range k.CreditsReserved {
				slice = n
			}
			more := settle(t, rs[:2], cs[:2])
			total := allowed.Load() + more
			stranded := tc.balance - total
			t.Logf("allowed %d (%d on the crashed replica), then %d; %d stranded, the crashed replica's entry says %d", allowed.Load(), onCrashed.Load(), more, stranded, slice)
			if total > tc.balance {
				t.Fatalf("%d allowed, balance %d", total, tc.balance)
			}
			if stranded > slice {
				t.Fatalf("%d stranded, more than the crashed replica's slice of %d", stranded, slice)
			}
		})
	}
}
