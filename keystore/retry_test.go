package keystore

import (
	"context"
	"errors"
	"testing"
)

// wrapBackend, when set, wraps the backend of every fixture.
var wrapBackend func(Backend) Backend

// retryingBackend runs every write transaction twice: once to be thrown
// away, as an optimistic backend (etcd) does when a conflict is detected at
// commit, then for real. A closure that changes anything outside its
// transaction (the credit ledger, the cache) does it twice here.
type retryingBackend struct {
	Backend
	attempts int
}

var errDiscard = errors.New("attempt discarded")

func (r *retryingBackend) Update(ctx context.Context, fn func(Tx) error) error {
	r.attempts++
	err := r.Backend.Update(ctx, func(tx Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errDiscard // rolls the first attempt back
	})
	if !errors.Is(err, errDiscard) {
		return err
	}
	return r.Backend.Update(ctx, fn)
}

func (r *retryingBackend) Batch(ctx context.Context, fn func(Tx) error) error {
	return r.Update(ctx, fn)
}

// TestWritesAreRetrySafe runs the lifecycle and credit tests with every
// write attempted twice, the way a shared backend retries on conflict.
func TestWritesAreRetrySafe(t *testing.T) {
	var wrapped []*retryingBackend
	wrapBackend = func(b Backend) Backend {
		r := &retryingBackend{Backend: b}
		wrapped = append(wrapped, r)
		return r
	}
	t.Cleanup(func() { wrapBackend = nil })
	for name, test := range map[string]func(*testing.T){
		"CreateAndLookup":              TestCreateAndLookup,
		"WritesVisibleOnNextLookup":    TestWritesVisibleOnNextLookup,
		"Rotate":                       TestRotate,
		"OrgKeyLimit":                  TestOrgKeyLimit,
		"RegenerateInSlot":             TestRegenerateInSlot,
		"Import":                       TestImport,
		"LastUsedBatched":              TestLastUsedBatched,
		"CreditsSpendAndRefill":        TestCreditsSpendAndRefill,
		"CreditsExactUnderConcurrency": TestCreditsExactUnderConcurrency,
		"CreditsCrashLossBounded":      TestCreditsCrashLossBounded,
		"CreditsFollowRotation":        TestCreditsFollowRotation,
	} {
		t.Run(name, test)
	}
	n := 0
	for _, r := range wrapped {
		n += r.attempts
	}
	if n == 0 {
		t.Fatal("no write went through the retrying backend")
	}
}
