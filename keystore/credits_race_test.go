package keystore

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// gateBackend holds each Batch at the gate until the test opens it, and
// says when one is waiting there.
type gateBackend struct {
	Backend
	waiting chan struct{}
	open    chan struct{}
}

func (g *gateBackend) Batch(ctx context.Context, fn func(Tx) error) error {
	select {
	case g.waiting <- struct{}{}:
	default:
	}
	<-g.open
	return g.Backend.Batch(ctx, fn)
}

// TestVerifyRacingLocalSpends: a spend that checks its slice against the
// record (writes may have been missed) while a Check that still trusts
// the slice spends it must not refuse a balance that is far from empty:
// it reserves again. Before, it answered 429 and marked the balance
// exhausted, refusing from memory for up to a tick.
func TestVerifyRacingLocalSpends(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "keygate.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tn, err := s.CreateTenant(t.Context(), "Acme")
	if err != nil {
		t.Fatal(err)
	}
	ck, err := s.CreateKey(t.Context(), KeySpec{TenantID: tn.ID, Name: "k", CreditsRemaining: new(int64(1 << 40))})
	if err != nil {
		t.Fatal(err)
	}
	cred, _, err := s.LookupKey(t.Context(), ck.Secret.Hash())
	if err != nil {
		t.Fatal(err)
	}
	// Reserve until this process holds a slice with a credit left in it.
	for s.ledger.held(ck.ID, 0) == 0 {
		if _, ok, err := s.Spend(t.Context(), cred, 1); err != nil || !ok {
			t.Fatalf("spend: %v %v", ok, err)
		}
	}
	g := &gateBackend{Backend: s.b, waiting: make(chan struct{}, 1), open: make(chan struct{})}
	s.b = g
	var fresh atomic.Bool
	s.fresh = fresh.Load // not following: the next spend verifies its slice

	verified := make(chan bool)
	go func() {
		_, ok, err := s.Spend(context.Background(), cred, 1)
		if err != nil {
			t.Error(err)
		}
		verified <- ok
	}()
	<-g.waiting
	fresh.Store(true)
	// Checks that trust the slice again spend all of it meanwhile.
	for s.ledger.held(ck.ID, 0) > 0 {
		if _, ok, err := s.Spend(t.Context(), cred, 1); err != nil || !ok {
			t.Fatalf("local spend: %v %v", ok, err)
		}
	}
	close(g.open)
	if !<-verified {
		t.Fatal("a balance of 2^40 refused: the verify's slice was spent while it read the record")
	}
	if _, ok, err := s.Spend(t.Context(), cred, 1); err != nil || !ok {
		t.Fatalf("the next spend: %v %v (an exhausted mark left behind?)", ok, err)
	}
}
