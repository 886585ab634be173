package keystore

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/keystore/apikey"
)

func TestAdminTokenLifecycle(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := t.Context()
	exp := f.clock.Now().Add(time.Hour)
	ct, err := f.s.CreateAdminToken(ctx, AdminTokenSpec{
		Name: "ci", Scopes: []string{ScopeKeysWrite, ScopeKeysRead, ScopeKeysRead},
		OrgID: f.org.ID, ExpiresAt: &exp, CreatedBy: "someone",
	})
	if err != nil {
		t.Fatal(err)
	}
	raw := ct.Secret.Reveal()
	if _, err := AdminTokenFormat.Parse(raw); err != nil {
		t.Fatalf("token does not parse: %v", err)
	}
	if !strings.HasPrefix(raw, "kga_live_") || !strings.HasPrefix(raw, ct.Prefix) {
		t.Fatalf("prefix %q of a token in the wrong format", ct.Prefix)
	}
	if want := []string{ScopeKeysRead, ScopeKeysWrite}; !reflect.DeepEqual(ct.Scopes, want) {
		t.Fatalf("scopes %v, want %v", ct.Scopes, want)
	}
	if ct.TenantID != f.tenant.ID || ct.OrgID != f.org.ID || ct.CreatedBy != "someone" {
		t.Fatalf("bindings %+v", ct.AdminToken)
	}
	if s := fmt.Sprintf("%v %+v", ct, ct); strings.Contains(s, raw) {
		t.Fatal("a created token prints its secret")
	}

	got, err := f.s.AdminTokenByHash(ctx, apikey.HashOf(raw))
	if err != nil || !reflect.DeepEqual(got, ct.AdminToken) {
		t.Fatalf("by hash: %+v, %v; want %+v", got, err, ct.AdminToken)
	}
	if _, err := f.s.AdminTokenByHash(ctx, apikey.HashOf(raw+"x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown hash: %v", err)
	}

	other, err := f.s.CreateTenant(ctx, "Other")
	if err != nil {
		t.Fatal(err)
	}
	unbound, err := f.s.CreateAdminToken(ctx, AdminTokenSpec{Name: "all", Scopes: AdminScopes})
	if err != nil || unbound.CreatedBy != CreatedByBootstrap {
		t.Fatalf("unbound: %+v, %v", unbound.AdminToken, err)
	}
	tenantOnly, err := f.s.CreateAdminToken(ctx, AdminTokenSpec{Name: "t", Scopes: []string{ScopeTenantsRead}, TenantID: other.ID})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tenant, org string
		want        []string
	}{
		{"", "", []string{ct.ID, unbound.ID, tenantOnly.ID}},
		{f.tenant.ID, "", []string{ct.ID}},
		{other.ID, "", []string{tenantOnly.ID}},
		{"", f.org.ID, []string{ct.ID}},
	} {
		l, err := f.s.ListAdminTokens(ctx, c.tenant, c.org)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, x := range l {
			ids = append(ids, x.ID)
		}
		if !reflect.DeepEqual(ids, c.want) {
			t.Errorf("list %q %q: %v, want %v", c.tenant, c.org, ids, c.want)
		}
	}

	f.clock.Add(time.Hour)
	if _, err := f.s.AdminTokenByHash(ctx, apikey.HashOf(raw)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired token found: %v", err)
	}
	if err := f.s.DeleteAdminToken(ctx, unbound.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.AdminTokenByHash(ctx, unbound.Secret.Hash()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted token found: %v", err)
	}
	if err := f.s.DeleteAdminToken(ctx, unbound.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if err := f.s.view(ctx, func(tx Tx) error {
		return tx.Scan(bucketAdminTokenHashes, nil, nil, func(k, v []byte) (bool, error) {
			if string(v) == unbound.ID {
				return false, fmt.Errorf("hash entry of a deleted token left")
			}
			return true, nil
		})
	}); err != nil {
		t.Fatal(err)
	}
}

func TestAdminTokenRefusals(t *testing.T) {
	f := newFixture(t, Options{})
	other, err := f.s.CreateTenant(t.Context(), "Other")
	if err != nil {
		t.Fatal(err)
	}
	past := f.clock.Now().Add(-time.Second)
	for name, c := range map[string]struct {
		spec AdminTokenSpec
		want error
	}{
		"no name":        {AdminTokenSpec{Scopes: []string{ScopeKeysRead}}, ErrInvalid},
		"no scopes":      {AdminTokenSpec{Name: "x"}, ErrInvalid},
		"unknown scope":  {AdminTokenSpec{Name: "x", Scopes: []string{"keys:admin"}}, ErrInvalid},
		"past expiry":    {AdminTokenSpec{Name: "x", Scopes: []string{ScopeKeysRead}, ExpiresAt: &past}, ErrInvalid},
		"unknown tenant": {AdminTokenSpec{Name: "x", Scopes: []string{ScopeKeysRead}, TenantID: "nope"}, ErrNotFound},
		"unknown org":    {AdminTokenSpec{Name: "x", Scopes: []string{ScopeKeysRead}, OrgID: "nope"}, ErrNotFound},
		"org elsewhere":  {AdminTokenSpec{Name: "x", Scopes: []string{ScopeKeysRead}, TenantID: other.ID, OrgID: f.org.ID}, ErrInvalid},
	} {
		if _, err := f.s.CreateAdminToken(t.Context(), c.spec); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if l, _ := f.s.ListAdminTokens(t.Context(), "", ""); len(l) != 0 {
		t.Fatalf("refused tokens stored: %+v", l)
	}
}
