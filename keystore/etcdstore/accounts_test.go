package etcdstore_test

import (
	"sync"
	"testing"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
)

// TestAccountReplicas: tenants created at once through two replicas each
// get their grant once; three keys of one tenant, each spent through
// another replica, spend the tenant's one balance to exactly zero, and
// then every key is refused on every replica.
func TestAccountReplicas(t *testing.T) {
	const grant = 30
	_, rs := three(t, keystore.Options{AccountGrants: map[string]keystore.Grant{keystore.AccountTenant: {Amount: grant}}})

	var wg sync.WaitGroup
	ids := make([]string, 16)
	for i := range ids {
		wg.Go(func() {
			tn, err := rs[i%2].s.CreateTenant(t.Context(), "many")
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = tn.ID
		})
	}
	wg.Wait()
	for _, id := range ids {
		a, err := rs[2].s.Account(t.Context(), keystore.Owner{Kind: keystore.AccountTenant, TenantID: id})
		if err != nil || *a.CreditsRemaining != grant || a.Granted != grant {
			t.Fatalf("tenant %s through the third replica: %+v %v", id, a, err)
		}
	}

	tn, o := setup(t, rs[0].s)
	var (
		raws []string
		cs   []*authz.Credential
	)
	for i, spec := range []keystore.KeySpec{{}, {OrgID: o.ID}, {UserID: "dev"}} {
		spec.TenantID, spec.Name = tn.ID, "k"
		ck, err := rs[i].s.CreateKey(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, ck.Secret.Reveal())
		c := mustLookup(t, rs[i].s, ck.Secret.Reveal())
		if !c.Metered || len(c.Accounts) != 1 {
			t.Fatalf("key %d: metered %v accounts %v", i, c.Metered, c.Accounts)
		}
		cs = append(cs, c)
	}
	first := roundRobin(t, rs, cs, 3*grant)
	second := settle(t, rs, cs)
	t.Logf("allowed %d, then %d once the slices went back", first, second)
	if first+second != grant {
		t.Fatalf("%d + %d allowed in all, want exactly the grant %d", first, second, grant)
	}
	for i, r := range rs {
		for j, raw := range raws {
			if spendOnce(t, r, mustLookup(t, r.s, raw)) {
				t.Fatalf("key %d spent through replica %d after the account reached zero", j, i)
			}
		}
	}
	if a, err := rs[1].s.Account(t.Context(), keystore.Owner{Kind: keystore.AccountTenant, TenantID: tn.ID}); err != nil || *a.CreditsRemaining != 0 {
		t.Fatalf("the account after: %+v %v", a, err)
	}
}
