package keystore

import (
	"path/filepath"
	"testing"
	"time"
)

// TestTierRefills: keys of a tier with a configured refill start with its
// amount and schedule unless they bring their own; other tiers' keys stay
// unmetered; a refill for an unknown tier or an invalid one is refused.
func TestTierRefills(t *testing.T) {
	monthly := Refill{Interval: RefillMonthly, Day: 1, Amount: 100000}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s, err := Open(filepath.Join(t.TempDir(), "keygate.db"), Options{
		Tiers: []string{"standard", "pro"}, TierRefills: map[string]Refill{"pro": monthly},
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tn, err := s.CreateTenant(t.Context(), "Alloovium")
	if err != nil {
		t.Fatal(err)
	}
	create := func(spec KeySpec) Key {
		t.Helper()
		spec.TenantID, spec.Name = tn.ID, "k"
		k, err := s.CreateKey(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		return k.Key
	}
	pro := create(KeySpec{Tier: "pro"})
	if pro.CreditsRemaining == nil || *pro.CreditsRemaining != 100000 || pro.Refill == nil || *pro.Refill != monthly ||
		!pro.LastRefillAt.Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("a pro key: %v %+v %v", pro.CreditsRemaining, pro.Refill, pro.LastRefillAt)
	}
	own := create(KeySpec{Tier: "pro", CreditsRemaining: new(int64(5))})
	if *own.CreditsRemaining != 5 || own.Refill != nil {
		t.Fatalf("a pro key with its own balance: %d %+v", *own.CreditsRemaining, own.Refill)
	}
	if std := create(KeySpec{Tier: "standard"}); std.CreditsRemaining != nil || std.Refill != nil {
		t.Fatalf("a standard key: %+v %+v", std.CreditsRemaining, std.Refill)
	}
	for name, opts := range map[string]Options{
		"unknown tier":   {TierRefills: map[string]Refill{"gold": monthly}},
		"invalid refill": {TierRefills: map[string]Refill{"standard": {Interval: "weekly", Amount: 1}}},
	} {
		if s, err := Open(filepath.Join(t.TempDir(), "x.db"), opts); err == nil {
			s.Close()
			t.Errorf("%s: opened", name)
		}
	}
}
