package etcdstore_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
)

// TestUserLimitsReachEveryReplica: a user record written through one
// replica changes the limits of the user's keys on every replica's next
// lookup, although each had the key's credential cached.
func TestUserLimitsReachEveryReplica(t *testing.T) {
	_, rs := three(t, keystore.Options{})
	rs = rs[:2]
	tn, _ := setup(t, rs[0].s)
	ck, err := rs[0].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, UserID: "ada", Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	raw := ck.Secret.Reveal()
	for _, r := range rs {
		if c := mustLookup(t, r.s, raw); c.UserLimits != nil {
			t.Fatalf("user without a record: %+v", c.UserLimits)
		}
	}
	for i, n := range []int{10, 20, 30} {
		writer := rs[i%2].s
		limits := map[string]ratelimit.Limit{"per_minute": {Requests: n, Window: time.Minute}}
		if _, _, err := writer.PutUser(t.Context(), tn.ID, "ada", keystore.UserSpec{Limits: limits}); err != nil {
			t.Fatal(err)
		}
		want := []authz.NamedLimit{{Name: "per_minute", Limit: limits["per_minute"]}}
		for j, r := range rs {
			if c := mustLookup(t, r.s, raw); !reflect.DeepEqual(c.UserLimits, want) {
				t.Fatalf("round %d replica %d: %+v, want %+v", i, j, c.UserLimits, want)
			}
		}
	}
	if err := rs[1].s.DeleteUser(t.Context(), tn.ID, "ada"); err != nil {
		t.Fatal(err)
	}
	for j, r := range rs {
		if c := mustLookup(t, r.s, raw); c.UserLimits != nil {
			t.Fatalf("replica %d after delete: %+v", j, c.UserLimits)
		}
	}
	p, err := rs[0].s.ListUsers(t.Context(), tn.ID, "", 0)
	if err != nil || len(p.Users) != 0 {
		t.Fatalf("users after delete: %+v, %v", p, err)
	}
}

// TestKeyLimitsReachEveryReplica: a key's own limits changed through one
// replica apply on the other's next lookup.
func TestKeyLimitsReachEveryReplica(t *testing.T) {
	_, rs := three(t, keystore.Options{})
	rs = rs[:2]
	tn, _ := setup(t, rs[0].s)
	ck, err := rs[0].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	raw := ck.Secret.Reveal()
	for _, r := range rs {
		mustLookup(t, r.s, raw)
	}
	limits := map[string]ratelimit.Limit{"per_day": {}}
	if _, err := rs[0].s.UpdateKey(t.Context(), ck.ID, keystore.KeyUpdate{Limits: &limits}); err != nil {
		t.Fatal(err)
	}
	for j, r := range rs {
		if c := mustLookup(t, r.s, raw); !reflect.DeepEqual(c.Limits, []authz.NamedLimit{{Name: "per_day"}}) {
			t.Fatalf("replica %d: %+v", j, c.Limits)
		}
	}
}
