package keystore

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func tenantOf(f *fixture) Owner { return Owner{Kind: AccountTenant, TenantID: f.tenant.ID} }

// TestAccountSharedByKeys: three keys of one tenant spend the tenant's one
// balance to exactly zero, whichever key asks; then every key is refused.
func TestAccountSharedByKeys(t *testing.T) {
	f := newFixture(t, Options{LastUsedFlush: time.Hour})
	var raws []string
	for _, spec := range []KeySpec{{}, {OrgID: f.org.ID}, {UserID: "dev-1"}} {
		raws = append(raws, f.create(t, spec).Secret.Reveal())
		f.lookupWarm(t, raws[len(raws)-1]) // cached before the account opens
	}
	if _, err := f.s.AddAccountCredits(t.Context(), tenantOf(f), 5); !errors.Is(err, ErrNoAccount) {
		t.Fatalf("add to a tenant with no account: %v", err)
	}
	if a, err := f.s.SetAccountCredits(t.Context(), tenantOf(f), 10); err != nil || *a.CreditsRemaining != 10 || a.ID != "tenant/"+f.tenant.ID {
		t.Fatalf("open the account: %+v %v", a, err)
	}
	allowed := 0
	for i := range 20 {
		c := f.lookup(t, raws[i%3])
		if !c.Metered || len(c.Accounts) != 1 {
			t.Fatalf("key %d after the account opened: metered %v accounts %v (a stale cached credential)", i%3, c.Metered, c.Accounts)
		}
		left, ok, err := f.s.Spend(t.Context(), c, 1)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
			if left != int64(10-allowed) {
				t.Fatalf("spend %d: %d left, want %d", allowed, left, 10-allowed)
			}
		}
	}
	if allowed != 10 {
		t.Fatalf("allowed %d spends of a balance of 10", allowed)
	}
	f.s.Flush()
	if a, _ := f.s.Account(t.Context(), tenantOf(f)); *a.CreditsRemaining != 0 {
		t.Fatalf("account after spending it all: %d", *a.CreditsRemaining)
	}

	if err := f.s.DeleteAccount(t.Context(), tenantOf(f)); err != nil {
		t.Fatal(err)
	}
	if c := f.lookup(t, raws[0]); c.Metered || len(c.Accounts) != 0 {
		t.Fatalf("key after its account closed: metered %v accounts %v", c.Metered, c.Accounts)
	}
}

// TestAccountAndOwnBalance: a key with a balance of its own under an
// account needs room in both; a request one refuses takes from neither.
func TestAccountAndOwnBalance(t *testing.T) {
	f := newFixture(t, Options{LastUsedFlush: time.Hour})
	own := f.create(t, KeySpec{OrgID: f.org.ID, UserID: "u", CreditsRemaining: new(int64(3))})
	other := f.create(t, KeySpec{OrgID: f.org.ID})
	org := Owner{Kind: AccountOrg, OrgID: f.org.ID}
	if _, err := f.s.SetAccountCredits(t.Context(), org, 5); err != nil {
		t.Fatal(err)
	}
	// The key's own 3 run out first; the org's 5 then hold 2.
	for i := range 3 {
		if left, ok := f.spend(t, own.Secret.Reveal(), 1); !ok || left != int64(2-i) {
			t.Fatalf("spend %d: %d %v (the smallest balance is the key's)", i, left, ok)
		}
	}
	for range 3 {
		if left, ok := f.spend(t, own.Secret.Reveal(), 1); ok || left != 0 {
			t.Fatalf("spend past the key's own balance: %d %v", left, ok)
		}
	}
	// The refusals took nothing from the org: its other key has 2.
	if left, ok := f.spend(t, other.Secret.Reveal(), 2); !ok || left != 0 {
		t.Fatalf("the org's other key after the refusals: %d %v, want the 2 left", left, ok)
	}
	if _, ok := f.spend(t, other.Secret.Reveal(), 1); ok {
		t.Fatal("spent past the org's balance")
	}
	// The org refuses; the key's own balance, topped up, loses nothing.
	if _, err := f.s.AddCredits(t.Context(), own.ID, 10); err != nil {
		t.Fatal(err)
	}
	if left, ok := f.spend(t, own.Secret.Reveal(), 1); ok || left != 0 {
		t.Fatalf("spend with an empty org: %d %v", left, ok)
	}
	f.s.Flush()
	if k, _ := f.s.Key(t.Context(), own.ID); *k.CreditsRemaining != 10 {
		t.Fatalf("the key's own balance after the org refused: %d, want 10", *k.CreditsRemaining)
	}
}

// TestAccountGrants: a new tenant, org and user start with their kind's
// grant, once: a user PUT again, or deleted and PUT again, gets no second.
func TestAccountGrants(t *testing.T) {
	daily := &Refill{Interval: RefillDaily, Amount: 50}
	f := newFixture(t, Options{AccountGrants: map[string]Grant{
		AccountTenant: {Amount: 100000},
		AccountOrg:    {Amount: 7},
		AccountUser:   {Amount: 50, Refill: daily},
	}})
	a, err := f.s.Account(t.Context(), tenantOf(f))
	if err != nil || *a.CreditsRemaining != 100000 || a.Granted != 100000 {
		t.Fatalf("new tenant's account: %+v %v", a, err)
	}
	if a, err := f.s.Account(t.Context(), Owner{Kind: AccountOrg, OrgID: f.org.ID}); err != nil || *a.CreditsRemaining != 7 || a.TenantID != f.tenant.ID {
		t.Fatalf("new org's account: %+v %v", a, err)
	}
	user := Owner{Kind: AccountUser, TenantID: f.tenant.ID, UserID: "dev-1"}
	if _, err := f.s.Account(t.Context(), user); !errors.Is(err, ErrNoAccount) {
		t.Fatalf("a user with no record yet: %v", err)
	}
	if _, _, err := f.s.PutUser(t.Context(), f.tenant.ID, "dev-1", UserSpec{Name: "Dev"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.AddAccountCredits(t.Context(), user, -20); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.s.PutUser(t.Context(), f.tenant.ID, "dev-1", UserSpec{Name: "Dev 2"}); err != nil {
		t.Fatal(err)
	}
	if err := f.s.DeleteUser(t.Context(), f.tenant.ID, "dev-1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.s.PutUser(t.Context(), f.tenant.ID, "dev-1", UserSpec{}); err != nil {
		t.Fatal(err)
	}
	a, err = f.s.Account(t.Context(), user)
	if err != nil || *a.CreditsRemaining != 30 || a.Refill == nil || *a.Refill != *daily {
		t.Fatalf("user's account after three PUTs: %+v %v, want the one grant less 20", a, err)
	}
	// The daily refill sets it to 50 at midnight.
	f.clock.Add(24 * time.Hour)
	if a, _ := f.s.Account(t.Context(), user); *a.CreditsRemaining != 50 {
		t.Fatalf("after midnight: %d", *a.CreditsRemaining)
	}

	// Concurrent creation: each tenant gets its grant once.
	var wg sync.WaitGroup
	ids := make([]string, 16)
	for i := range ids {
		wg.Go(func() {
			tn, err := f.s.CreateTenant(t.Context(), "many")
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = tn.ID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if a, err := f.s.Account(t.Context(), Owner{Kind: AccountTenant, TenantID: id}); err != nil || *a.CreditsRemaining != 100000 {
			t.Fatalf("tenant %s: %+v %v", id, a, err)
		}
	}
}

// TestAccountErrors: owners that do not exist, negative balances and
// malformed ids are refused with the sentinel callers branch on.
func TestAccountErrors(t *testing.T) {
	f := newFixture(t, Options{})
	for _, tc := range []struct {
		o    Owner
		want error
	}{
		{Owner{Kind: AccountTenant, TenantID: "nope"}, ErrNotFound},
		{Owner{Kind: AccountOrg, OrgID: "nope"}, ErrNotFound},
		{Owner{Kind: AccountUser, TenantID: "nope", UserID: "u"}, ErrNotFound},
		{Owner{Kind: AccountUser, TenantID: f.tenant.ID, UserID: ""}, ErrInvalid},
		{Owner{Kind: "galaxy", TenantID: f.tenant.ID}, ErrInvalid},
	} {
		if _, err := f.s.SetAccountCredits(t.Context(), tc.o, 1); !errors.Is(err, tc.want) {
			t.Errorf("set %+v: %v, want %v", tc.o, err, tc.want)
		}
	}
	if _, err := f.s.SetAccountCredits(t.Context(), tenantOf(f), -1); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative balance: %v", err)
	}
	if err := f.s.DeleteAccount(t.Context(), tenantOf(f)); !errors.Is(err, ErrNoAccount) {
		t.Errorf("delete a missing account: %v", err)
	}
	if _, err := New(nil, Options{AccountGrants: map[string]Grant{"galaxy": {Amount: 1}}}); err == nil {
		t.Error("a grant for an unknown kind was accepted")
	}
}
