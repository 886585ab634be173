package admin_test

import (
	"net/http"
	"testing"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

type accountBody struct {
	ID               string           `json:"id"`
	Kind             string           `json:"kind"`
	TenantID         string           `json:"tenant_id"`
	OrgID            string           `json:"org_id"`
	UserID           string           `json:"user_id"`
	CreditsRemaining *int64           `json:"credits_remaining"`
	Refill           *keystore.Refill `json:"refill"`
}

// TestAccountRoutes: each owner's account is opened by set, changed by
// add and refill, read, closed; the wrong bodies are 400s and a missing
// account 404 no_account.
func TestAccountRoutes(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, o, _ := f.seed()
	for _, tc := range []struct {
		base, kind, id string
	}{
		{"/v1/tenants/" + tn.ID, keystore.AccountTenant, "tenant/" + tn.ID},
		{"/v1/orgs/" + o.ID, keystore.AccountOrg, "org/" + o.ID},
		{"/v1/tenants/" + tn.ID + "/users/dev-1", keystore.AccountUser, "user/" + tn.ID + "/dev-1"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			if r := f.do("GET", tc.base+"/credits", ""); r.status != http.StatusNotFound || r.errBody(t).Code != "no_account" {
				t.Fatalf("GET before an account: %d %s", r.status, r.body)
			}
			if r := f.do("POST", tc.base+"/credits", `{"add": 5}`); r.status != http.StatusNotFound {
				t.Fatalf("add before an account: %d %s", r.status, r.body)
			}
			var a accountBody
			r := f.do("POST", tc.base+"/credits", `{"set": 100}`)
			r.decode(t, &a)
			if r.status != 200 || a.ID != tc.id || a.Kind != tc.kind || a.TenantID != tn.ID || *a.CreditsRemaining != 100 {
				t.Fatalf("set: %d %s", r.status, r.body)
			}
			r = f.do("POST", tc.base+"/credits", `{"add": -30}`)
			r.decode(t, &a)
			if r.status != 200 || *a.CreditsRemaining != 70 {
				t.Fatalf("add -30: %d %s", r.status, r.body)
			}
			r = f.do("POST", tc.base+"/credits", `{"refill": {"interval": "monthly", "day": 1, "amount": 1000}}`)
			r.decode(t, &a)
			if r.status != 200 || a.Refill == nil || a.Refill.Amount != 1000 || *a.CreditsRemaining != 70 {
				t.Fatalf("refill: %d %s", r.status, r.body)
			}
			for _, bad := range []string{`{}`, `{"add": 1, "set": 2}`, `{"set": -1}`, `{"refill": {"interval": "weekly", "amount": 1}}`, `{"sett": 1}`} {
				if r := f.do("POST", tc.base+"/credits", bad); r.status != http.StatusBadRequest {
					t.Errorf("POST %s: %d %s, want 400", bad, r.status, r.body)
				}
			}
			r = f.do("GET", tc.base+"/credits", "")
			r.decode(t, &a)
			if r.status != 200 || *a.CreditsRemaining != 70 {
				t.Fatalf("GET: %d %s", r.status, r.body)
			}
			if r := f.do("GET", tc.base+"/credits/usage?granularity=day", ""); r.status != 200 {
				t.Fatalf("usage: %d %s", r.status, r.body)
			}
			if r := f.do("DELETE", tc.base+"/credits", ""); r.status != http.StatusNoContent {
				t.Fatalf("DELETE: %d %s", r.status, r.body)
			}
			if r := f.do("DELETE", tc.base+"/credits", ""); r.status != http.StatusNotFound {
				t.Fatalf("DELETE again: %d %s", r.status, r.body)
			}
		})
	}
	if r := f.do("POST", "/v1/tenants/nope/credits", `{"set": 1}`); r.status != http.StatusNotFound || r.errBody(t).Code != "not_found" {
		t.Fatalf("an unknown tenant: %d %s", r.status, r.body)
	}
}

// TestAccountScopesAndReach: credits need credits:read / credits:write,
// which keys:write does not give, and a bound token reaches only its own
// owners' accounts; an org-bound token cannot touch its tenant's.
func TestAccountScopesAndReach(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, o, _ := f.seed()
	other, err := f.store.CreateTenant(t.Context(), "Other")
	if err != nil {
		t.Fatal(err)
	}
	for _, base := range []string{"/v1/tenants/" + tn.ID, "/v1/orgs/" + o.ID, "/v1/tenants/" + other.ID} {
		if r := f.do("POST", base+"/credits", `{"set": 10}`); r.status != 200 {
			t.Fatalf("bootstrap set %s: %d %s", base, r.status, r.body)
		}
	}
	keysOnly := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeKeysRead, keystore.ScopeKeysWrite}, OrgID: o.ID})
	orgCredits := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeCreditsRead, keystore.ScopeCreditsWrite}, OrgID: o.ID})
	tenantReader := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeCreditsRead}, TenantID: tn.ID})
	for _, tc := range []struct {
		name, tok, method, path, body string
		status                        int
		code                          string
	}{
		{"keys:write gives no credits", keysOnly, "POST", "/v1/orgs/" + o.ID + "/credits", `{"add": 1000000}`, 403, "insufficient_scope"},
		{"keys:read reads no credits", keysOnly, "GET", "/v1/orgs/" + o.ID + "/credits", "", 403, "insufficient_scope"},
		{"org token reads its org", orgCredits, "GET", "/v1/orgs/" + o.ID + "/credits", "", 200, ""},
		{"org token not its tenant", orgCredits, "GET", "/v1/tenants/" + tn.ID + "/credits", "", 403, "out_of_reach"},
		{"org token not its tenant's users", orgCredits, "POST", "/v1/tenants/" + tn.ID + "/users/u/credits", `{"set": 1}`, 403, "out_of_reach"},
		{"tenant reader reads its tenant", tenantReader, "GET", "/v1/tenants/" + tn.ID + "/credits", "", 200, ""},
		{"tenant reader reads its org", tenantReader, "GET", "/v1/orgs/" + o.ID + "/credits/usage", "", 200, ""},
		{"tenant reader cannot write", tenantReader, "POST", "/v1/tenants/" + tn.ID + "/credits", `{"add": 1}`, 403, "insufficient_scope"},
		{"tenant reader not another tenant", tenantReader, "GET", "/v1/tenants/" + other.ID + "/credits", "", 403, "out_of_reach"},
	} {
		r := f.as(tc.tok, tc.method, tc.path, tc.body)
		if r.status != tc.status || tc.code != "" && r.errBody(t).Code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, r.status, r.body, tc.status, tc.code)
		}
	}
	if a, err := f.store.Account(t.Context(), keystore.Owner{Kind: keystore.AccountOrg, OrgID: o.ID}); err != nil || *a.CreditsRemaining != 10 {
		t.Fatalf("the org's balance after the refusals: %+v %v", a, err)
	}
}
