package keystore

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
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

// TestCreditsCrashLossBounded: a crash strands at most the unspent part of
// the one slice the process held, shown in the record as reserved by it,
// and never gives credits back to spend twice; a clean Close returns
// everything. (Before slices, spending was written every flush and a crash
// gave the unflushed spending back: this test checked that bound then.)
func TestCreditsCrashLossBounded(t *testing.T) {
	f := newFixture(t, Options{LastUsedFlush: time.Hour})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(100))})
	holder := f.s.ledger.holder
	var first int64
	for range 30 {
		if _, ok := f.spend(t, ck.Secret.Reveal(), 1); ok {
			first++
		}
	}
	crash(t, f.s)
	f.open(t, Options{})
	k := storedRecord(t, f.s, ck.ID)
	slice := k.CreditsReserved[holder]
	if slice < 1 || slice > 25 || len(k.CreditsReserved) != 1 {
		t.Fatalf("after a crash, reserved %v: want the crashed holder's one slice, at most a quarter of 100", k.CreditsReserved)
	}
	stranded := 100 - *k.CreditsRemaining - first
	if stranded < 0 || stranded > slice {
		t.Fatalf("spent %d, record holds %d: %d stranded, want 0..%d (the slice)", first, *k.CreditsRemaining, stranded, slice)
	}
	var second int64
	for {
		if _, ok := f.spend(t, ck.Secret.Reveal(), 1); !ok {
			break
		}
		second++
	}
	if first+second+stranded != 100 {
		t.Fatalf("allowed %d + %d over two lives, %d stranded: want 100 in all", first, second, stranded)
	}
	t.Logf("allowed %d before the crash, %d after; %d stranded of a %d-credit slice", first, second, stranded, slice)
	// A clean Close gives the unspent slice back and removes its entry.
	if _, err := f.s.AddCredits(t.Context(), ck.ID, 10); err != nil {
		t.Fatal(err)
	}
	f.spend(t, ck.Secret.Reveal(), 3)
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t, Options{})
	k = storedRecord(t, f.s, ck.ID)
	if *k.CreditsRemaining != 7 || len(k.CreditsReserved) != 1 || k.CreditsReserved[holder] != slice {
		t.Fatalf("after a clean restart: %d left, reserved %v; want 7, and only the crashed holder's entry", *k.CreditsRemaining, k.CreditsReserved)
	}
	// A SetCredits clears what crashes stranded.
	if _, err := f.s.SetCredits(t.Context(), ck.ID, 5); err != nil {
		t.Fatal(err)
	}
	if k = storedRecord(t, f.s, ck.ID); k.CreditsReserved != nil || *k.CreditsRemaining != 5 {
		t.Fatalf("after a set: %d left, reserved %v", *k.CreditsRemaining, k.CreditsReserved)
	}
}

// crash stops s the way kill -9 would, as far as the backend can tell:
// the backend is closed without Store.Close, so nothing is flushed or
// given back.
func crash(t *testing.T, s *Store) {
	t.Helper()
	s.cache.close()
	s.usage.once.Do(func() { close(s.usage.done); <-s.usage.stopped })
	if err := s.b.Close(); err != nil {
		t.Fatal(err)
	}
}

// storedRecord reads a key's record as stored, without this process's
// slice added.
func storedRecord(t *testing.T, s *Store, id string) storedKey {
	t.Helper()
	var k storedKey
	if err := s.view(t.Context(), func(tx Tx) error {
		var err error
		k, err = getKey(tx, id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return k
}

// spendUntilRefused spends cost 1 from id's balance through s until it is
// refused, and returns how many spends were allowed.
func spendUntilRefused(t *testing.T, s *Store, id string) int64 {
	t.Helper()
	c := &authz.Credential{ID: id, BalanceID: id, Metered: true}
	var n int64
	for {
		_, ok, err := s.Spend(context.Background(), c, 1)
		if err != nil {
			t.Fatalf("Spend: %v", err)
		}
		if !ok {
			return n
		}
		n++
	}
}

// TestCreditsExactEightGoroutines: 8 goroutines spend a balance of 100 in
// one process, through slices: exactly 100 are allowed.
func TestCreditsExactEightGoroutines(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(100))})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { allowed.Add(spendUntilRefused(t, f.s, ck.ID)) })
	}
	wg.Wait()
	if allowed.Load() != 100 {
		t.Fatalf("%d allowed, want 100", allowed.Load())
	}
}

// TestCreditsIdleReturn: a slice idle for about a second goes back, so the
// record shows the true balance soon after traffic stops.
func TestCreditsIdleReturn(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(1000))})
	for range 50 {
		f.spend(t, ck.Secret.Reveal(), 1)
	}
	if k := storedRecord(t, f.s, ck.ID); *k.CreditsRemaining == 950 || k.CreditsReserved[f.s.ledger.holder] == 0 {
		t.Fatalf("record %d, reserved %v: want a slice held out", *k.CreditsRemaining, k.CreditsReserved)
	}
	if k, _ := f.s.Key(t.Context(), ck.ID); *k.CreditsRemaining != 950 {
		t.Fatalf("Key shows %d, want the record plus this process's slice, 950", *k.CreditsRemaining)
	}
	start := time.Now()
	for {
		k := storedRecord(t, f.s, ck.ID)
		if *k.CreditsRemaining == 950 && k.CreditsReserved == nil {
			t.Logf("slice back after %v", time.Since(start).Round(10*time.Millisecond))
			break
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("after 3 s idle: record %d, reserved %v; want 950 and no entry", *k.CreditsRemaining, k.CreditsReserved)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCreditsSetVoidsSlicesAddKeepsThem: two stores share one file the way
// replicas share etcd. SetCredits voids every slice, so exactly the new
// balance is spent after it; AddCredits keeps them, so everything before
// and after is spent exactly once.
func TestCreditsSetVoidsSlicesAddKeepsThem(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(100))})
	a, b := f.s, shareWith(t, f.s)
	spendN := func(s *Store, n int) {
		c := &authz.Credential{ID: ck.ID, BalanceID: ck.ID, Metered: true}
		for range n {
			if _, ok, err := s.Spend(context.Background(), c, 1); !ok || err != nil {
				t.Fatalf("spend: %v %v", ok, err)
			}
		}
	}
	spendN(a, 20)
	spendN(b, 20)
	if k := storedRecord(t, a, ck.ID); len(k.CreditsReserved) != 2 {
		t.Fatalf("reserved %v, want a slice for each store", k.CreditsReserved)
	}
	if _, err := a.SetCredits(t.Context(), ck.ID, 50); err != nil {
		t.Fatal(err)
	}
	if got := spendUntilRefused(t, a, ck.ID) + spendUntilRefused(t, b, ck.ID); got != 50 {
		t.Fatalf("%d allowed after SetCredits(50), want 50: a slice from before was spent", got)
	}

	if _, err := a.SetCredits(t.Context(), ck.ID, 100); err != nil {
		t.Fatal(err)
	}
	spendN(a, 20)
	spendN(b, 20)
	if _, err := b.AddCredits(t.Context(), ck.ID, 50); err != nil {
		t.Fatal(err)
	}
	got := 40 + spendUntilRefused(t, a, ck.ID) + spendUntilRefused(t, b, ck.ID)
	// a, refused first, may have been refused while b still held a slice.
	got += spendUntilRefused(t, a, ck.ID)
	if got != 150 {
		t.Fatalf("%d allowed of 100 + 50 added, want 150: AddCredits lost a slice", got)
	}
}

// shareWith opens a second Store on s's bbolt backend, with both
// following each other's writes as replicas sharing etcd do.
func shareWith(t *testing.T, s *Store) *Store {
	t.Helper()
	h := &boltHub{Backend: s.b, open: 2}
	s.b = &hubBackend{h: h}
	// s was opened unshared: make it follow as New would have.
	s.fresh = s.b.(Shared).Fresh
	if err := s.b.(Shared).Follow(follower{s}); err != nil {
		t.Fatal(err)
	}
	o, err := New(&hubBackend{h: h}, s.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

// boltHub lets several stores share one bbolt backend, delivering every
// committed write to all of them, as a Shared backend does.
type boltHub struct {
	Backend
	mu        sync.Mutex
	followers []Follower
	open      int
}

type hubBackend struct {
	h      *boltHub
	closed bool
}

type change struct {
	bucket           string
	key, value, prev []byte
}

type recordingTx struct {
	Tx
	changes *[]change
}

func (r recordingTx) Put(bucket string, key, value []byte) error {
	prev, err := r.Tx.Get(bucket, key)
	if err != nil {
		return err
	}
	*r.changes = append(*r.changes, change{bucket, bytes.Clone(key), bytes.Clone(value), bytes.Clone(prev)})
	return r.Tx.Put(bucket, key, value)
}

func (r recordingTx) Delete(bucket string, key []byte) error {
	prev, err := r.Tx.Get(bucket, key)
	if err != nil {
		return err
	}
	*r.changes = append(*r.changes, change{bucket, bytes.Clone(key), nil, bytes.Clone(prev)})
	return r.Tx.Delete(bucket, key)
}

func (b *hubBackend) write(ctx context.Context, fn func(Tx) error) error {
	h := b.h
	h.mu.Lock()
	defer h.mu.Unlock()
	var changes []change
	err := h.Backend.Update(ctx, func(tx Tx) error {
		changes = changes[:0]
		return fn(recordingTx{tx, &changes})
	})
	if err != nil {
		return err
	}
	for _, c := range changes {
		for _, f := range h.followers {
			f.Changed(c.bucket, c.key, c.value, c.prev)
		}
	}
	return nil
}

func (b *hubBackend) View(ctx context.Context, fn func(Tx) error) error {
	return b.h.Backend.View(ctx, fn)
}
func (b *hubBackend) Update(ctx context.Context, fn func(Tx) error) error { return b.write(ctx, fn) }
func (b *hubBackend) Batch(ctx context.Context, fn func(Tx) error) error  { return b.write(ctx, fn) }
func (b *hubBackend) Ping(ctx context.Context) error                      { return b.h.Backend.Ping(ctx) }
func (b *hubBackend) String() string                                      { return b.h.Backend.String() }
func (b *hubBackend) Fresh() bool                                         { return true }

func (b *hubBackend) Follow(f Follower) error {
	b.h.mu.Lock()
	defer b.h.mu.Unlock()
	b.h.followers = append(b.h.followers, f)
	return nil
}

func (b *hubBackend) Close() error {
	b.h.mu.Lock()
	if b.closed {
		b.h.mu.Unlock()
		return nil
	}
	b.closed = true
	b.h.open--
	last := b.h.open == 0
	b.h.mu.Unlock()
	if last {
		return b.h.Backend.Close()
	}
	return nil
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

// BenchmarkCreditSpend is the Check path's spend of a hot metered key.
// "slice" is a spend from the slice held, a decrement under the ledger's
// lock; "serial" and "parallel" include the reservations, here one fsynced
// bbolt write per sliceCap spends (a real key this hot reserves about once
// a second instead).
func BenchmarkCreditSpend(b *testing.B) {
	s, err := Open(b.TempDir()+"/keygate.db", Options{LastUsedFlush: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	tn, err := s.CreateTenant(context.Background(), "Acme")
	if err != nil {
		b.Fatal(err)
	}
	ck, err := s.CreateKey(context.Background(), KeySpec{TenantID: tn.ID, Name: "k", CreditsRemaining: new(int64(1 << 60))})
	if err != nil {
		b.Fatal(err)
	}
	c := &authz.Credential{ID: ck.ID, BalanceID: ck.ID, Metered: true}
	ctx := context.Background()
	b.Run("slice", func(b *testing.B) {
		if _, ok, err := s.Spend(ctx, c, 1); !ok || err != nil {
			b.Fatal(ok, err)
		}
		// A slice that lasts the whole run, so no reservation is timed.
		s.ledger.mu.Lock()
		s.ledger.bal[ck.ID].slice = 1 << 50
		s.ledger.mu.Unlock()
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := s.Spend(ctx, c, 1); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
		// Not a slice the record handed out: it must not go back.
		s.ledger.mu.Lock()
		s.ledger.bal[ck.ID].slice = 0
		s.ledger.mu.Unlock()
	})
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := s.Spend(ctx, c, 1); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, ok, err := s.Spend(ctx, c, 1); !ok || err != nil {
					b.Error(ok, err)
					return
				}
			}
		})
	})
}
