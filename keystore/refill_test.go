package keystore

import (
	"errors"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore/apikey"
)

func utc(y int, m time.Month, d, h, min, s, ns int) time.Time {
	return time.Date(y, m, d, h, min, s, ns, time.UTC)
}

func TestRefillPeriods(t *testing.T) {
	daily := Refill{Interval: RefillDaily, Amount: 1}
	monthly := func(day int) Refill { return Refill{Interval: RefillMonthly, Day: day, Amount: 1} }
	tests := []struct {
		name        string
		r           Refill
		now         time.Time
		start, next time.Time
	}{
		{"daily midday", daily, utc(2026, 11, 25, 12, 0, 0, 0), utc(2026, 11, 25, 0, 0, 0, 0), utc(2026, 11, 26, 0, 0, 0, 0)},
		{"daily on the boundary", daily, utc(2026, 11, 25, 0, 0, 0, 0), utc(2026, 11, 25, 0, 0, 0, 0), utc(2026, 11, 26, 0, 0, 0, 0)},
		{"daily a nanosecond before", daily, utc(2026, 11, 24, 23, 59, 59, 999999999), utc(2026, 11, 24, 0, 0, 0, 0), utc(2026, 11, 25, 0, 0, 0, 0)},
		{"daily year end", daily, utc(2026, 12, 31, 23, 0, 0, 0), utc(2026, 12, 31, 0, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0, 0)},
		{"daily Feb 28 leap", daily, utc(2028, 2, 28, 5, 0, 0, 0), utc(2028, 2, 28, 0, 0, 0, 0), utc(2028, 2, 29, 0, 0, 0, 0)},
		{"daily not UTC input", daily, time.Date(2026, 11, 25, 1, 0, 0, 0, time.FixedZone("CET", 3600)), utc(2026, 11, 25, 0, 0, 0, 0), utc(2026, 11, 26, 0, 0, 0, 0)},
		{"day 0 is 1", monthly(0), utc(2026, 11, 25, 0, 0, 0, 0), utc(2026, 11, 1, 0, 0, 0, 0), utc(2026, 12, 1, 0, 0, 0, 0)},
		{"day 1 on the boundary", monthly(1), utc(2026, 12, 1, 0, 0, 0, 0), utc(2026, 12, 1, 0, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0, 0)},
		{"day 1 just before", monthly(1), utc(2026, 11, 30, 23, 59, 59, 999999999), utc(2026, 11, 1, 0, 0, 0, 0), utc(2026, 12, 1, 0, 0, 0, 0)},
		{"day 15 before it", monthly(15), utc(2026, 11, 10, 0, 0, 0, 0), utc(2026, 10, 15, 0, 0, 0, 0), utc(2026, 11, 15, 0, 0, 0, 0)},
		{"day 15 year boundary", monthly(15), utc(2027, 1, 3, 0, 0, 0, 0), utc(2026, 12, 15, 0, 0, 0, 0), utc(2027, 1, 15, 0, 0, 0, 0)},
		{"day 31 in November", monthly(31), utc(2026, 11, 30, 0, 0, 0, 0), utc(2026, 11, 30, 0, 0, 0, 0), utc(2026, 12, 31, 0, 0, 0, 0)},
		{"day 31 late November", monthly(31), utc(2026, 11, 29, 23, 0, 0, 0), utc(2026, 10, 31, 0, 0, 0, 0), utc(2026, 11, 30, 0, 0, 0, 0)},
		{"day 31 in February", monthly(31), utc(2026, 2, 28, 0, 0, 0, 0), utc(2026, 2, 28, 0, 0, 0, 0), utc(2026, 3, 31, 0, 0, 0, 0)},
		{"day 31 in early March", monthly(31), utc(2026, 3, 5, 0, 0, 0, 0), utc(2026, 2, 28, 0, 0, 0, 0), utc(2026, 3, 31, 0, 0, 0, 0)},
		{"day 30 leap February", monthly(30), utc(2028, 3, 1, 0, 0, 0, 0), utc(2028, 2, 29, 0, 0, 0, 0), utc(2028, 3, 30, 0, 0, 0, 0)},
		{"day 29 leap February", monthly(29), utc(2028, 2, 29, 0, 0, 0, 0), utc(2028, 2, 29, 0, 0, 0, 0), utc(2028, 3, 29, 0, 0, 0, 0)},
		{"day 29 common February", monthly(29), utc(2027, 3, 1, 0, 0, 0, 0), utc(2027, 2, 28, 0, 0, 0, 0), utc(2027, 3, 29, 0, 0, 0, 0)},
		{"day 31 December to January", monthly(31), utc(2027, 1, 30, 0, 0, 0, 0), utc(2026, 12, 31, 0, 0, 0, 0), utc(2027, 1, 31, 0, 0, 0, 0)},
		{"day 31 on Dec 31", monthly(31), utc(2026, 12, 31, 0, 0, 0, 0), utc(2026, 12, 31, 0, 0, 0, 0), utc(2027, 1, 31, 0, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := tt.r.periodStart(tt.now)
			if !start.Equal(tt.start) {
				t.Errorf("periodStart(%v) = %v, want %v", tt.now, start, tt.start)
			}
			if next := tt.r.next(tt.now); !next.Equal(tt.next) {
				t.Errorf("next(%v) = %v, want %v", tt.now, next, tt.next)
			}
			if next := tt.r.next(start); !next.Equal(tt.next) {
				t.Errorf("next(periodStart) = %v, want %v", next, tt.next)
			}
			if start.After(tt.now) || !tt.next.After(tt.now) {
				t.Errorf("%v not in [%v, %v)", tt.now, start, tt.next)
			}
		})
	}
}

// TestRefillPeriodsWalk: for every day over four years, periodStart is
// the latest boundary at or before now and next the first after it.
func TestRefillPeriodsWalk(t *testing.T) {
	for _, day := range []int{1, 15, 28, 29, 30, 31} {
		r := Refill{Interval: RefillMonthly, Day: day}
		for now := utc(2026, 1, 1, 0, 0, 0, 0); now.Year() < 2030; now = now.Add(24 * time.Hour) {
			for _, at := range []time.Time{now, now.Add(-time.Nanosecond), now.Add(12 * time.Hour)} {
				start, next := r.periodStart(at), r.next(at)
				if start.After(at) || !next.After(at) {
					t.Fatalf("day %d at %v: [%v, %v)", day, at, start, next)
				}
				for _, b := range []time.Time{start, next} {
					y, m, d := b.Date()
					if d != min(day, daysIn(y, m)) || b.Hour() != 0 || b.Minute() != 0 || b.Second() != 0 || b.Nanosecond() != 0 {
						t.Fatalf("day %d at %v: boundary %v", day, at, b)
					}
				}
				if sm, nm := start.Month(), next.Month(); (sm%12)+1 != nm {
					t.Fatalf("day %d at %v: boundaries %v and %v not a month apart", day, at, start, next)
				}
			}
		}
	}
}

func TestRefillValidation(t *testing.T) {
	f := newFixture(t, Options{})
	bad := []Refill{
		{Interval: "weekly", Amount: 1},
		{Interval: "", Amount: 1},
		{Interval: RefillDaily, Day: 3, Amount: 1},
		{Interval: RefillMonthly, Day: 32, Amount: 1},
		{Interval: RefillMonthly, Day: -1, Amount: 1},
		{Interval: RefillMonthly, Day: 1, Amount: -1},
		{Interval: RefillDaily, Amount: maxRefillAmount + 1},
	}
	plain := f.create(t, KeySpec{})
	for _, r := range bad {
		if _, err := f.s.CreateKey(t.Context(), KeySpec{TenantID: f.tenant.ID, Name: "k", Refill: &r}); !errors.Is(err, ErrInvalid) {
			t.Errorf("create with %+v: %v, want ErrInvalid", r, err)
		}
		if _, err := f.s.UpdateKey(t.Context(), plain.ID, KeyUpdate{Refill: &r}); !errors.Is(err, ErrInvalid) {
			t.Errorf("update with %+v: %v, want ErrInvalid", r, err)
		}
	}
	if _, err := f.s.UpdateKey(t.Context(), plain.ID, KeyUpdate{Refill: &Refill{Interval: RefillDaily, Amount: 1}, ClearRefill: true}); !errors.Is(err, ErrInvalid) {
		t.Errorf("refill and clear_refill: %v", err)
	}
	if k, _ := f.s.Key(t.Context(), plain.ID); k.Refill != nil || k.CreditsRemaining != nil {
		t.Fatalf("refused updates changed the key: %+v", k)
	}

	// No balance given: the key starts with the amount; the first refill
	// is at the next boundary (the fixture's clock is 2026-11-25 12:00).
	ck := f.create(t, KeySpec{Refill: &Refill{Interval: RefillMonthly, Amount: 500}})
	if ck.CreditsRemaining == nil || *ck.CreditsRemaining != 500 || ck.Refill == nil || ck.Refill.Day != 1 ||
		ck.LastRefillAt == nil || !ck.LastRefillAt.Equal(utc(2026, 11, 1, 0, 0, 0, 0)) {
		t.Fatalf("created %+v %v %v", ck.CreditsRemaining, ck.Refill, ck.LastRefillAt)
	}
	given := f.create(t, KeySpec{CreditsRemaining: new(int64(7)), Refill: &Refill{Interval: RefillDaily, Amount: 500}})
	if *given.CreditsRemaining != 7 || !given.LastRefillAt.Equal(utc(2026, 11, 25, 0, 0, 0, 0)) {
		t.Fatalf("created with a balance: %d %v", *given.CreditsRemaining, given.LastRefillAt)
	}

	im, err := f.s.ImportKey(t.Context(), Import{KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "imported", Refill: &Refill{Interval: RefillMonthly, Day: 25, Amount: 8}},
		Raw: apikey.NewSecret("legacy-key-0123456789abcdef")})
	if err != nil || *im.CreditsRemaining != 8 || !im.LastRefillAt.Equal(utc(2026, 11, 25, 0, 0, 0, 0)) {
		t.Fatalf("import with a refill: %+v %v", im, err)
	}

	// Update: an unmetered key becomes metered, full.
	k, err := f.s.UpdateKey(t.Context(), plain.ID, KeyUpdate{Refill: &Refill{Interval: RefillDaily, Amount: 9}})
	if err != nil || *k.CreditsRemaining != 9 || !k.LastRefillAt.Equal(utc(2026, 11, 25, 0, 0, 0, 0)) {
		t.Fatalf("update to a schedule: %+v %v", k, err)
	}
	if c := f.lookup(t, plain.Secret.Reveal()); !c.Metered {
		t.Fatal("a key given a refill is not metered")
	}
	k, err = f.s.UpdateKey(t.Context(), plain.ID, KeyUpdate{ClearRefill: true})
	if err != nil || k.Refill != nil || k.LastRefillAt != nil || *k.CreditsRemaining != 9 {
		t.Fatalf("clear_refill: %+v %v", k, err)
	}

	// A key rotated away spends its successor's balance: the schedule
	// moved with it and cannot be set on the old key.
	rot, err := f.s.RotateKey(t.Context(), ck.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if rot.Refill == nil || rot.Refill.Amount != 500 {
		t.Fatalf("successor's refill %+v", rot.Refill)
	}
	if old, _ := f.s.Key(t.Context(), ck.ID); old.Refill != nil || old.LastRefillAt != nil {
		t.Fatalf("old key kept its refill: %+v", old.Refill)
	}
	if _, err := f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{Refill: &Refill{Interval: RefillDaily, Amount: 1}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("refill on a key rotated away: %v", err)
	}
}

// TestRefillSpend: a key spent to 0 is refused until the boundary, then
// spends from the refilled amount; a slice of the old period is not spent
// after the boundary, and missed periods do not stack.
func TestRefillSpend(t *testing.T) {
	f := newFixture(t, Options{LastUsedFlush: time.Hour})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(10)), Refill: &Refill{Interval: RefillDaily, Amount: 100}})
	raw := ck.Secret.Reveal()
	if left, ok := f.spend(t, raw, 10); !ok || left != 0 {
		t.Fatalf("spend 10 of 10: %d %v", left, ok)
	}
	if _, ok := f.spend(t, raw, 1); ok {
		t.Fatal("spent from an empty balance")
	}
	f.clock.Add(11*time.Hour + 59*time.Minute) // 23:59, same day
	if _, ok := f.spend(t, raw, 1); ok {
		t.Fatal("spent before the boundary")
	}
	f.clock.Add(time.Minute) // midnight exactly
	if left, ok := f.spend(t, raw, 3); !ok || left != 97 {
		t.Fatalf("first spend after the boundary: %d %v, want 97 true", left, ok)
	}
	k, err := f.s.Key(t.Context(), ck.ID)
	if err != nil {
		t.Fatal(err)
	}
	boundary := utc(2026, 11, 26, 0, 0, 0, 0)
	if *k.CreditsRemaining != 97 || !k.LastRefillAt.Equal(boundary) || k.CreditsEpoch != 1 {
		t.Fatalf("after the refill: %d %v epoch %d", *k.CreditsRemaining, k.LastRefillAt, k.CreditsEpoch)
	}

	// This process now holds a slice of the new period. After the next
	// boundary, that slice is void: the balance is exactly 100 again.
	f.clock.Add(24 * time.Hour)
	if left, ok := f.spend(t, raw, 1); !ok || left != 99 {
		t.Fatalf("spend after the second boundary: %d %v, want 99 true", left, ok)
	}

	// Three days unused: one refill, to the amount, not three.
	f.clock.Add(72 * time.Hour)
	k, _ = f.s.Key(t.Context(), ck.ID)
	if *k.CreditsRemaining != 100 || !k.LastRefillAt.Equal(utc(2026, 11, 30, 0, 0, 0, 0)) {
		t.Fatalf("Key after three idle days: %d %v, want 100 and Nov 30", *k.CreditsRemaining, k.LastRefillAt)
	}
	page, err := f.s.ListKeys(t.Context(), ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, lk := range page.Keys {
		if lk.ID == ck.ID && (*lk.CreditsRemaining != 100 || !lk.LastRefillAt.Equal(utc(2026, 11, 30, 0, 0, 0, 0))) {
			t.Fatalf("ListKeys: %d %v", *lk.CreditsRemaining, lk.LastRefillAt)
		}
	}
	if left, ok := f.spend(t, raw, 100); !ok || left != 0 {
		t.Fatalf("spend the refilled 100: %d %v", left, ok)
	}
	if _, ok := f.spend(t, raw, 1); ok {
		t.Fatal("spent past the refilled amount")
	}
	if k, _ := f.s.Key(t.Context(), ck.ID); k.CreditsEpoch != 3 {
		t.Fatalf("epoch %d, want 3 (one per refill applied)", k.CreditsEpoch)
	}
}

// TestRefillBeforeAddAndSet: AddCredits and SetCredits apply a due refill
// first, so the add is on top of the refilled amount and a later
// reservation does not refill again.
func TestRefillBeforeAddAndSet(t *testing.T) {
	f := newFixture(t, Options{LastUsedFlush: time.Hour})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(0)), Refill: &Refill{Interval: RefillMonthly, Day: 31, Amount: 50}})
	f.clock.Add(5 * 24 * time.Hour) // Nov 30 12:00: November's "31st"
	k, err := f.s.AddCredits(t.Context(), ck.ID, 5)
	if err != nil || *k.CreditsRemaining != 55 || !k.LastRefillAt.Equal(utc(2026, 11, 30, 0, 0, 0, 0)) {
		t.Fatalf("AddCredits after the boundary: %v %v %v", k.CreditsRemaining, k.LastRefillAt, err)
	}
	if left, ok := f.spend(t, ck.Secret.Reveal(), 55); !ok || left != 0 {
		t.Fatalf("spend 55: %d %v", left, ok)
	}
	f.clock.Add(31 * 24 * time.Hour) // Dec 31 12:00
	k, err = f.s.SetCredits(t.Context(), ck.ID, 3)
	if err != nil || *k.CreditsRemaining != 3 || !k.LastRefillAt.Equal(utc(2026, 12, 31, 0, 0, 0, 0)) {
		t.Fatalf("SetCredits after the boundary: %v %v %v", k.CreditsRemaining, k.LastRefillAt, err)
	}
	if _, ok := f.spend(t, ck.Secret.Reveal(), 4); ok {
		t.Fatal("a reservation refilled again after SetCredits applied the refill")
	}
}

// TestRefillScheduleChange: changing the schedule applies the old one's
// due refill and moves the fast path's boundary.
func TestRefillScheduleChange(t *testing.T) {
	f := newFixture(t, Options{LastUsedFlush: time.Hour})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(1000)), Refill: &Refill{Interval: RefillMonthly, Amount: 1000}})
	raw := ck.Secret.Reveal()
	if _, ok := f.spend(t, raw, 1); !ok {
		t.Fatal("spend")
	}
	k, err := f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{Refill: &Refill{Interval: RefillDaily, Amount: 10}})
	if err != nil || k.Refill.Interval != RefillDaily || !k.LastRefillAt.Equal(utc(2026, 11, 25, 0, 0, 0, 0)) {
		t.Fatalf("to daily: %+v %v", k, err)
	}
	// The slice held (a monthly schedule's) must not outlive the daily
	// boundary.
	f.clock.Add(12 * time.Hour)
	if left, ok := f.spend(t, raw, 10); !ok || left != 0 {
		t.Fatalf("spend after the daily boundary: %d %v, want 0 true", left, ok)
	}
	if _, ok := f.spend(t, raw, 1); ok {
		t.Fatal("spent an old slice after the refill")
	}
	k, err = f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{ClearRefill: true})
	if err != nil || k.Refill != nil || k.LastRefillAt != nil {
		t.Fatalf("clear: %+v %v", k, err)
	}
	f.clock.Add(48 * time.Hour)
	if _, ok := f.spend(t, raw, 1); ok {
		t.Fatal("a cleared schedule refilled")
	}
}

func TestRefillFastPathAllocs(t *testing.T) {
	f := newFixture(t, Options{LastUsedFlush: time.Hour})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(1 << 40)), Refill: &Refill{Interval: RefillDaily, Amount: 1 << 40}})
	c := f.lookup(t, ck.Secret.Reveal())
	if _, ok, err := f.s.Spend(t.Context(), c, 1); !ok || err != nil {
		t.Fatal(ok, err)
	}
	f.s.ledger.mu.Lock()
	f.s.ledger.bal[ck.ID].slice = 1 << 30
	f.s.ledger.mu.Unlock()
	n := testing.AllocsPerRun(1000, func() {
		if _, ok, err := f.s.Spend(t.Context(), c, 1); !ok || err != nil {
			t.Fatal(ok, err)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per spend from a slice with a refill schedule", n)
	}
	f.s.ledger.mu.Lock()
	f.s.ledger.bal[ck.ID].slice = 0
	f.s.ledger.mu.Unlock()
}

// BenchmarkRefillSpend is BenchmarkCreditSpend's "slice" for a key with a
// refill schedule, whose fast path also reads the clock.
func BenchmarkRefillSpend(b *testing.B) {
	s, err := Open(b.TempDir()+"/keygate.db", Options{LastUsedFlush: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	tn, err := s.CreateTenant(b.Context(), "Acme")
	if err != nil {
		b.Fatal(err)
	}
	ck, err := s.CreateKey(b.Context(), KeySpec{TenantID: tn.ID, Name: "k", Refill: &Refill{Interval: RefillDaily, Amount: 1 << 50}})
	if err != nil {
		b.Fatal(err)
	}
	c := &authz.Credential{ID: ck.ID, BalanceID: ck.ID, Metered: true}
	if _, ok, err := s.Spend(b.Context(), c, 1); !ok || err != nil {
		b.Fatal(ok, err)
	}
	s.ledger.mu.Lock()
	s.ledger.bal[ck.ID].slice = 1 << 40
	s.ledger.mu.Unlock()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := s.Spend(b.Context(), c, 1); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
	s.ledger.mu.Lock()
	s.ledger.bal[ck.ID].slice = 0
	s.ledger.mu.Unlock()
}
