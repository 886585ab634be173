package keystore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func (f *fixture) spend(t *testing.T, raw string, cost int) (int64, bool) {
	t.Helper()
	c := f.lookup(t, raw)
	if c == nil || !c.Metered {
		t.Fatalf("key not metered: %+v", c)
	}
	left, ok, err := f.s.Spend(context.Background(), c, cost)
	if err != nil {
		t.Fatalf("Spend: %v", err)
	}
	return left, ok
}

func TestCreditsSpendAndRefill(t *testing.T) {
	f := newFixture(t, Options{LastUsedFlush: time.Hour})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(10))})
	if left, ok := f.spend(t, ck.Secret.Reveal(), 3); !ok || left != 7 {
		t.Fatalf("spend 3 of 10: %d %v", left, ok)
	}
	if left, ok := f.spend(t, ck.Secret.Reveal(), 8); ok || left != 7 {
		t.Fatalf("spend 8 of 7: %d %v, want refused with nothing taken", left, ok)
	}
	if left, ok := f.spend(t, ck.Secret.Reveal(), 7); !ok || left != 0 {
		t.Fatalf("spend the last 7: %d %v", left, ok)
	}
	if _, ok := f.spend(t, ck.Secret.Reveal(), 1); ok {
		t.Fatal("spent from an empty balance")
	}
	if k, _ := f.s.Key(t.Context(), ck.ID); *k.CreditsRemaining != 0 {
		t.Fatalf("Key shows %d, want the live 0", *k.CreditsRemaining)
	}
	k, err := f.s.AddCredits(t.Context(), ck.ID, 5)
	if err != nil || *k.CreditsRemaining != 5 {
		t.Fatalf("AddCredits: %+v %v", k.CreditsRemaining, err)
	}
	if left, ok := f.spend(t, ck.Secret.Reveal(), 5); !ok || left != 0 {
		t.Fatalf("spend refilled credits: %d %v", left, ok)
	}
	if k, _ := f.s.SetCredits(t.Context(), ck.ID, 100); *k.CreditsRemaining != 100 {
		t.Fatalf("SetCredits: %d", *k.CreditsRemaining)
	}
	if _, err := f.s.SetCredits(t.Context(), ck.ID, -1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative set: %v", err)
	}
	plain := f.create(t, KeySpec{})
	if c := f.lookup(t, plain.Secret.Reveal()); c.Metered {
		t.Fatal("a key without credits is metered")
	}
	if _, err := f.s.AddCredits(t.Context(), plain.ID, 5); !errors.Is(err, ErrNotMetered) {
		t.Fatalf("add to an unmetered key: %v", err)
	}
	// Setting a balance makes the key metered on the very next lookup.
	f.lookupWarm(t, plain.Secret.Reveal())
	if _, err := f.s.SetCredits(t.Context(), plain.ID, 2); err != nil {
		t.Fatal(err)
	}
	if left, ok := f.spend(t, plain.Secret.Reveal(), 2); !ok || left != 0 {
		t.Fatalf("spend after metering: %d %v", left, ok)
	}
}

// TestCreditsExactUnderConcurrency: 50 goroutines race for 20 credits; 20
// spends succeed.
func TestCreditsExactUnderConcurrency(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(20))})
	c := f.lookup(t, ck.Secret.Reveal())
	var ok atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, spent, err := f.s.Spend(context.Background(), c, 1); err == nil && spent {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 20 {
		t.Fatalf("%d spends succeeded, want 20", ok.Load())
	}
}

// TestCreditsCrashLossBounded: spending since the last flush is all a crash
// loses; flushed spending and refills survive.
func TestCreditsCrashLossBounded(t *testing.T) {
	f := newFixture(t, Options{LastUsedFlush: time.Hour})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(100))})
	f.spend(t, ck.Secret.Reveal(), 30)
	if err := f.s.Flush(); err != nil {
		t.Fatal(err)
	}
	f.spend(t, ck.Secret.Reveal(), 5) // not flushed: a crash forgets these
	if _, err := f.s.AddCredits(t.Context(), ck.ID, 1000); err != nil {
		t.Fatal(err)
	}
	f.spend(t, ck.Secret.Reveal(), 7) // not flushed either
	// A crash: the file is closed without the final flush.
	f.s.cache.close()
	f.s.usage.once.Do(func() { close(f.s.usage.done); <-f.s.usage.stopped })
	if err := f.s.b.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t, Options{})
	k, err := f.s.Key(t.Context(), ck.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Written: 100-30 flushed, then the refill wrote (70-5)+1000 = 1065.
	// Lost: the 7 spent after the refill.
	if *k.CreditsRemaining != 1065 {
		t.Fatalf("after a crash: %d credits, want 1065 (only unflushed spending lost)", *k.CreditsRemaining)
	}
	// A clean Close keeps everything.
	f.spend(t, ck.Secret.Reveal(), 65)
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t, Options{})
	if k, _ := f.s.Key(t.Context(), ck.ID); *k.CreditsRemaining != 1000 {
		t.Fatalf("after a clean restart: %d, want 1000", *k.CreditsRemaining)
	}
}

// TestCreditsFollowRotation: the successor gets the live balance and the
// old key, during its grace period, spends that same balance.
func TestCreditsFollowRotation(t *testing.T) {
	f := newFixture(t, Options{})
	old := f.create(t, KeySpec{CreditsRemaining: new(int64(10))})
	f.spend(t, old.Secret.Reveal(), 4)
	oldCred := f.lookup(t, old.Secret.Reveal()) // a Check in flight across the rotation
	nk, err := f.s.RotateKey(t.Context(), old.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if *nk.CreditsRemaining != 6 {
		t.Fatalf("successor balance %d, want the live 6", *nk.CreditsRemaining)
	}
	if left, ok := f.spend(t, old.Secret.Reveal(), 1); !ok || left != 5 {
		t.Fatalf("old key in grace: %d %v, want it to spend the shared balance", left, ok)
	}
	if left, ok := f.spend(t, nk.Secret.Reveal(), 5); !ok || left != 0 {
		t.Fatalf("new key: %d %v", left, ok)
	}
	if _, ok := f.spend(t, old.Secret.Reveal(), 1); ok {
		t.Fatal("the old key spent past the shared balance")
	}
	if _, ok, err := f.s.Spend(context.Background(), oldCred, 1); ok || err != nil {
		t.Fatalf("stale credential of the old key: ok=%v err=%v, want refused from the shared, empty balance", ok, err)
	}
	// Rotating the successor while the old key is still in grace moves
	// both to the newest key.
	if _, err := f.s.AddCredits(t.Context(), nk.ID, 3); err != nil {
		t.Fatal(err)
	}
	newest, err := f.s.RotateKey(t.Context(), nk.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if left, ok := f.spend(t, old.Secret.Reveal(), 1); !ok || left != 2 {
		t.Fatalf("oldest key after a second rotation: %d %v", left, ok)
	}
	if k, _ := f.s.Key(t.Context(), newest.ID); *k.CreditsRemaining != 2 {
		t.Fatalf("newest balance %d, want 2", *k.CreditsRemaining)
	}
}
