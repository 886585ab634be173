package admin_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/admintoken"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// mint stores an admin token directly and returns its secret.
func (f *fixture) mint(spec keystore.AdminTokenSpec) string {
	f.t.Helper()
	if spec.Name == "" {
		spec.Name = "test"
	}
	ct, err := f.store.CreateAdminToken(f.t.Context(), spec)
	if err != nil {
		f.t.Fatal(err)
	}
	return ct.Secret.Reveal()
}

// as sends a request with token tok.
func (f *fixture) as(tok, method, path, body string) response {
	f.t.Helper()
	return f.doAuth(method, path, body, "Bearer "+tok)
}

var tokenText = regexp.MustCompile(`kga_[a-z]+_[0-9A-Za-z]+`)

func wantStatus(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		// A create's answer holds a token, which stays out of test logs too.
		body := tokenText.ReplaceAllString(string(r.body), "[token]")
		t.Errorf("%s: %d %s, want %d %s", what, r.status, body, status, code)
		return
	}
	if code != "" {
		if got := r.errBody(t).Code; got != code {
			t.Errorf("%s: code %q, want %q", what, got, code)
		}
	}
}

// TestAdminTokenScopes: each scope opens its routes and no others; the
// bootstrap token opens every one.
func TestAdminTokenScopes(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "up 1") })
	f := newFixture(t, admin.Options{Metrics: metrics})
	tn, o, k := f.seed()
	routes := []struct{ method, path, body, scope string }{
		{"GET", "/v1/tenants", "", keystore.ScopeTenantsRead},
		{"GET", "/v1/tenants/" + tn.ID, "", keystore.ScopeTenantsRead},
		{"POST", "/v1/tenants", `{"name":"n"}`, keystore.ScopeTenantsWrite},
		{"GET", "/v1/orgs", "", keystore.ScopeTenantsRead},
		{"GET", "/v1/orgs/" + o.ID, "", keystore.ScopeTenantsRead},
		{"POST", "/v1/orgs", `{"tenant_id":"` + tn.ID + `","name":"o"}`, keystore.ScopeTenantsWrite},
		{"GET", "/v1/tenants/" + tn.ID + "/users", "", keystore.ScopeKeysRead},
		{"PUT", "/v1/tenants/" + tn.ID + "/users/ada", `{}`, keystore.ScopeKeysWrite},
		{"GET", "/v1/tenants/" + tn.ID + "/users/ada", "", keystore.ScopeKeysRead},
		{"DELETE", "/v1/tenants/" + tn.ID + "/users/ada", "", keystore.ScopeKeysWrite},
		{"GET", "/v1/keys", "", keystore.ScopeKeysRead},
		{"GET", "/v1/keys/" + k.ID, "", keystore.ScopeKeysRead},
		{"POST", "/v1/keys", `{"tenant_id":"` + tn.ID + `","name":"k"}`, keystore.ScopeKeysWrite},
		{"PATCH", "/v1/keys/" + k.ID, `{"name":"renamed"}`, keystore.ScopeKeysWrite},
		{"POST", "/v1/keys/" + k.ID + "/credits", `{"set":5}`, keystore.ScopeKeysWrite},
		{"POST", "/v1/keys/" + k.ID + "/rotate", `{"grace_period":"1m"}`, keystore.ScopeKeysWrite},
		{"POST", "/v1/keys/" + k.ID + "/revoke", "", keystore.ScopeKeysWrite},
		{"DELETE", "/v1/keys/" + k.ID, "", keystore.ScopeKeysWrite},
		{"GET", "/metrics", "", keystore.ScopeMetricsRead},
		{"GET", "/v1/admin-tokens", "", keystore.ScopeAdminTokensRead},
		{"POST", "/v1/admin-tokens", `{"name":"t","scopes":["keys:read"]}`, keystore.ScopeAdminTokensWrite},
		{"DELETE", "/v1/admin-tokens/nope", "", keystore.ScopeAdminTokensWrite},
	}
	for _, scope := range keystore.AdminScopes {
		tok := f.mint(keystore.AdminTokenSpec{Scopes: []string{scope, keystore.ScopeKeysRead}})
		if scope == keystore.ScopeKeysRead {
			tok = f.mint(keystore.AdminTokenSpec{Scopes: []string{scope}})
		}
		// Every token here holds keys:read too (admin-tokens:write needs it
		// to mint a keys:read token), so only reads of keys pass for all.
		for _, rt := range routes {
			r := f.as(tok, rt.method, rt.path, rt.body)
			what := scope + ": " + rt.method + " " + rt.path
			if rt.scope == scope || rt.scope == keystore.ScopeKeysRead {
				if r.status == http.StatusForbidden || r.status == http.StatusUnauthorized {
					t.Errorf("%s: %d %s, want it allowed", what, r.status, r.body)
				}
				continue
			}
			wantStatus(t, what, r, http.StatusForbidden, "insufficient_scope")
		}
	}
	for _, rt := range routes {
		if r := f.do(rt.method, rt.path, rt.body); r.status == http.StatusForbidden || r.status == http.StatusUnauthorized {
			t.Errorf("bootstrap: %s %s: %d %s", rt.method, rt.path, r.status, r.body)
		}
	}
}

type reachWorld struct {
	tA, tB            keystore.Tenant
	oA1, oA2, oB1     keystore.Org
	kA1, kA2, kAT     keystore.CreatedKey
	kB1               keystore.CreatedKey
	tenantTok, orgTok string
}

func (f *fixture) reachWorld() reachWorld {
	f.t.Helper()
	ctx := f.t.Context()
	var w reachWorld
	must := func(err error) {
		f.t.Helper()
		if err != nil {
			f.t.Fatal(err)
		}
	}
	var err error
	w.tA, err = f.store.CreateTenant(ctx, "A")
	must(err)
	w.tB, err = f.store.CreateTenant(ctx, "B")
	must(err)
	w.oA1, err = f.store.CreateOrg(ctx, w.tA.ID, "A1")
	must(err)
	w.oA2, err = f.store.CreateOrg(ctx, w.tA.ID, "A2")
	must(err)
	w.oB1, err = f.store.CreateOrg(ctx, w.tB.ID, "B1")
	must(err)
	key := func(tenant, org string) keystore.CreatedKey {
		k, err := f.store.CreateKey(ctx, keystore.KeySpec{TenantID: tenant, OrgID: org, Name: "k"})
		must(err)
		return k
	}
	w.kA1, w.kA2, w.kAT, w.kB1 = key(w.tA.ID, w.oA1.ID), key(w.tA.ID, w.oA2.ID), key(w.tA.ID, ""), key(w.tB.ID, w.oB1.ID)
	w.tenantTok = f.mint(keystore.AdminTokenSpec{Name: "tenant A", Scopes: keystore.AdminScopes, TenantID: w.tA.ID})
	w.orgTok = f.mint(keystore.AdminTokenSpec{Name: "org A1", Scopes: keystore.AdminScopes, OrgID: w.oA1.ID})
	return w
}

func ids[T any](t *testing.T, r response, id func(T) string) []string {
	t.Helper()
	var l struct {
		Data []T `json:"data"`
		Keys []T `json:"keys"`
	}
	r.decode(t, &l)
	var out []string
	for _, x := range append(l.Data, l.Keys...) {
		out = append(out, id(x))
	}
	slices.Sort(out)
	return out
}

// TestAdminTokenReach: a tenant-bound token reaches its tenant only, an
// org-bound one its org's keys only; anything else that exists is 403
// out_of_reach, and what does not exist stays 404.
func TestAdminTokenReach(t *testing.T) {
	f := newFixture(t, admin.Options{})
	w := f.reachWorld()
	key := func(k keystore.CreatedKey) string { return "/v1/keys/" + k.ID }
	newKey := func(tenant, org string) string {
		return fmt.Sprintf(`{"tenant_id":%q,"org_id":%q,"name":"n"}`, tenant, org)
	}
	const ok, no, missing = http.StatusOK, http.StatusForbidden, http.StatusNotFound
	for _, c := range []struct {
		tok, method, path, body string
		want                    int
	}{
		{w.tenantTok, "GET", "/v1/tenants/" + w.tA.ID, "", ok},
		{w.tenantTok, "GET", "/v1/tenants/" + w.tB.ID, "", no},
		{w.tenantTok, "POST", "/v1/tenants", `{"name":"x"}`, no},
		{w.tenantTok, "POST", "/v1/orgs", `{"tenant_id":"` + w.tB.ID + `","name":"x"}`, no},
		{w.tenantTok, "POST", "/v1/orgs", `{"tenant_id":"` + w.tA.ID + `","name":"x"}`, http.StatusCreated},
		{w.tenantTok, "GET", "/v1/orgs?tenant_id=" + w.tB.ID, "", no},
		{w.tenantTok, "GET", "/v1/orgs/" + w.oB1.ID, "", no},
		{w.tenantTok, "GET", "/v1/orgs/" + w.oA2.ID, "", ok},
		{w.tenantTok, "GET", "/v1/keys?tenant_id=" + w.tB.ID, "", no},
		{w.tenantTok, "GET", "/v1/keys?org_id=" + w.oB1.ID, "", no},
		{w.tenantTok, "GET", "/v1/keys?org_id=" + w.oA2.ID, "", ok},
		{w.tenantTok, "GET", key(w.kB1), "", no},
		{w.tenantTok, "GET", key(w.kA2), "", ok},
		{w.tenantTok, "GET", key(w.kAT), "", ok},
		{w.tenantTok, "GET", "/v1/keys/no-such-key", "", missing},
		{w.tenantTok, "PATCH", key(w.kB1), `{"name":"x"}`, no},
		{w.tenantTok, "POST", key(w.kB1) + "/revoke", "", no},
		{w.tenantTok, "POST", key(w.kB1) + "/rotate", "", no},
		{w.tenantTok, "POST", key(w.kB1) + "/credits", `{"set":1}`, no},
		{w.tenantTok, "DELETE", key(w.kB1), "", no},
		{w.tenantTok, "POST", "/v1/keys", newKey(w.tB.ID, w.oB1.ID), no},
		{w.tenantTok, "POST", "/v1/keys/import", `{"tenant_id":"` + w.tB.ID + `","name":"i","key":"imported-key-0123456789abcdef"}`, no},
		{w.tenantTok, "POST", "/v1/keys", newKey(w.tA.ID, ""), http.StatusCreated},
		{w.tenantTok, "PUT", "/v1/tenants/" + w.tB.ID + "/users/ada", `{}`, no},
		{w.tenantTok, "GET", "/v1/tenants/" + w.tB.ID + "/users", "", no},
		{w.tenantTok, "GET", "/v1/tenants/" + w.tA.ID + "/users", "", ok},

		{w.orgTok, "GET", "/v1/tenants/" + w.tA.ID, "", ok},
		{w.orgTok, "GET", "/v1/tenants/" + w.tB.ID, "", no},
		{w.orgTok, "POST", "/v1/tenants", `{"name":"x"}`, no},
		{w.orgTok, "POST", "/v1/orgs", `{"tenant_id":"` + w.tA.ID + `","name":"x"}`, no},
		{w.orgTok, "GET", "/v1/orgs/" + w.oA1.ID, "", ok},
		{w.orgTok, "GET", "/v1/orgs/" + w.oA2.ID, "", no},
		{w.orgTok, "GET", "/v1/orgs?tenant_id=" + w.tB.ID, "", no},
		{w.orgTok, "GET", "/v1/keys?org_id=" + w.oA2.ID, "", no},
		{w.orgTok, "GET", "/v1/keys?tenant_id=" + w.tB.ID, "", no},
		{w.orgTok, "GET", key(w.kA1), "", ok},
		{w.orgTok, "GET", key(w.kA2), "", no},
		{w.orgTok, "GET", key(w.kAT), "", no},
		{w.orgTok, "GET", key(w.kB1), "", no},
		{w.orgTok, "PATCH", key(w.kA2), `{"name":"x"}`, no},
		{w.orgTok, "POST", key(w.kA2) + "/revoke", "", no},
		{w.orgTok, "POST", key(w.kAT) + "/rotate", "", no},
		{w.orgTok, "POST", key(w.kA2) + "/credits", `{"set":1}`, no},
		{w.orgTok, "DELETE", key(w.kA2), "", no},
		{w.orgTok, "DELETE", key(w.kAT), "", no},
		{w.orgTok, "POST", "/v1/keys", newKey(w.tA.ID, ""), no},
		{w.orgTok, "POST", "/v1/keys", newKey(w.tA.ID, w.oA2.ID), no},
		{w.orgTok, "POST", "/v1/keys", newKey(w.tB.ID, w.oB1.ID), no},
		{w.orgTok, "POST", "/v1/keys", newKey(w.tA.ID, w.oA1.ID), http.StatusCreated},
		{w.orgTok, "GET", "/v1/tenants/" + w.tA.ID + "/users", "", no},
		{w.orgTok, "PUT", "/v1/tenants/" + w.tA.ID + "/users/ada", `{}`, no},
		{w.orgTok, "PATCH", key(w.kA1), `{"name":"mine"}`, ok},
	} {
		r := f.as(c.tok, c.method, c.path, c.body)
		who := "tenant"
		if c.tok == w.orgTok {
			who = "org"
		}
		code := ""
		if c.want == no {
			code = "out_of_reach"
		}
		wantStatus(t, who+": "+c.method+" "+c.path+" "+c.body, r, c.want, code)
	}

	// Listings are narrowed to the reach.
	tenantID := func(x keystore.Tenant) string { return x.ID }
	orgID := func(x keystore.Org) string { return x.ID }
	keyOrg := func(x keystore.Key) string { return x.TenantID + "/" + x.OrgID }
	for _, tok := range []string{w.tenantTok, w.orgTok} {
		if got := ids(t, f.as(tok, "GET", "/v1/tenants", ""), tenantID); !slices.Equal(got, []string{w.tA.ID}) {
			t.Errorf("tenants: %v", got)
		}
	}
	if got := ids(t, f.as(w.orgTok, "GET", "/v1/orgs", ""), orgID); !slices.Equal(got, []string{w.oA1.ID}) {
		t.Errorf("org token's orgs: %v", got)
	}
	orgKeys := ids(t, f.as(w.orgTok, "GET", "/v1/keys", ""), keyOrg)
	if len(orgKeys) < 2 { // kA1 and the one it created
		t.Errorf("org token lists %v", orgKeys)
	}
	for _, k := range orgKeys {
		if k != w.tA.ID+"/"+w.oA1.ID {
			t.Errorf("org token lists a key of %s", k)
		}
	}
	tenantKeys := ids(t, f.as(w.tenantTok, "GET", "/v1/keys", ""), keyOrg)
	if len(tenantKeys) < 4 {
		t.Errorf("tenant token lists %v", tenantKeys)
	}
	for _, k := range tenantKeys {
		if !strings.HasPrefix(k, w.tA.ID+"/") {
			t.Errorf("tenant token lists a key of %s", k)
		}
	}

	// Nothing out of reach changed.
	for _, k := range []keystore.CreatedKey{w.kA2, w.kAT, w.kB1} {
		got, err := f.store.Key(t.Context(), k.ID)
		if err != nil || got.Name != "k" || got.RevokedAt != nil {
			t.Errorf("key out of reach touched: %+v, %v", got, err)
		}
	}
}

// TestAdminTokenMinting: a token mints only tokens with a subset of its
// scopes and within its reach, and deletes only tokens within its reach.
func TestAdminTokenMinting(t *testing.T) {
	f := newFixture(t, admin.Options{})
	w := f.reachWorld()
	orgMinter := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeKeysRead, keystore.ScopeKeysWrite, keystore.ScopeAdminTokensWrite, keystore.ScopeAdminTokensRead}, OrgID: w.oA1.ID})
	tenantMinter := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeKeysRead, keystore.ScopeAdminTokensWrite}, TenantID: w.tA.ID})
	unboundMinter := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeKeysRead, keystore.ScopeAdminTokensWrite}})
	noMint := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeKeysRead, keystore.ScopeKeysWrite}, OrgID: w.oA1.ID})
	body := func(scopes, tenant, org string) string {
		return fmt.Sprintf(`{"name":"m","scopes":[%s],"tenant_id":%q,"org_id":%q}`, scopes, tenant, org)
	}
	for _, c := range []struct {
		name, tok, body string
		status          int
		code            string
	}{
		{"org adds a scope", orgMinter, body(`"keys:read","tenants:read"`, "", ""), 403, "insufficient_scope"},
		{"org mints the bootstrap's", orgMinter, body(`"audit:read"`, "", ""), 403, "insufficient_scope"},
		{"org mints tenant-bound", orgMinter, body(`"keys:read"`, w.tA.ID, w.oA2.ID), 403, "out_of_reach"},
		{"org mints another org", orgMinter, body(`"keys:read"`, "", w.oA2.ID), 403, "out_of_reach"},
		{"org mints another tenant", orgMinter, body(`"keys:read"`, w.tB.ID, ""), 403, "out_of_reach"},
		{"tenant mints another tenant", tenantMinter, body(`"keys:read"`, w.tB.ID, ""), 403, "out_of_reach"},
		{"tenant mints another tenant's org", tenantMinter, body(`"keys:read"`, "", w.oB1.ID), 403, "out_of_reach"},
		{"tenant adds keys:write", tenantMinter, body(`"keys:write"`, "", ""), 403, "insufficient_scope"},
		{"unbound adds keys:write", unboundMinter, body(`"keys:write"`, "", ""), 403, "insufficient_scope"},
		{"no admin-tokens:write", noMint, body(`"keys:read"`, "", ""), 403, "insufficient_scope"},
		{"unknown scope", unboundMinter, body(`"root"`, "", ""), 403, "insufficient_scope"},
		{"org mints within", orgMinter, body(`"keys:read"`, "", ""), 201, ""},
		{"tenant mints its org", tenantMinter, body(`"keys:read"`, "", w.oA2.ID), 201, ""},
		{"unbound mints bound", unboundMinter, body(`"keys:read"`, w.tB.ID, ""), 201, ""},
	} {
		r := f.as(c.tok, "POST", "/v1/admin-tokens", c.body)
		wantStatus(t, c.name, r, c.status, c.code)
	}
	// A bound minter that names no binding mints its own.
	var got keystore.AdminToken
	r := f.as(orgMinter, "POST", "/v1/admin-tokens", `{"name":"child","scopes":["keys:read"]}`)
	r.decode(t, &got)
	if got.OrgID != w.oA1.ID || got.TenantID != w.tA.ID || got.CreatedBy == "" || got.CreatedBy == keystore.CreatedByBootstrap {
		t.Fatalf("child of an org-bound token: %+v", got)
	}

	// Deleting: only within reach.
	list, err := f.store.ListAdminTokens(t.Context(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	var tenantBound, otherTenant string
	for _, x := range list {
		switch {
		case x.TenantID == w.tA.ID && x.OrgID == "":
			tenantBound = x.ID
		case x.TenantID == w.tB.ID:
			otherTenant = x.ID
		}
	}
	wantStatus(t, "org deletes tenant-bound", f.as(orgMinter, "DELETE", "/v1/admin-tokens/"+tenantBound, ""), 403, "out_of_reach")
	wantStatus(t, "tenant deletes other tenant's", f.as(tenantMinter, "DELETE", "/v1/admin-tokens/"+otherTenant, ""), 403, "out_of_reach")
	narrow := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeAdminTokensWrite}, TenantID: w.tA.ID})
	wantStatus(t, "narrow deletes broader", f.as(narrow, "DELETE", "/v1/admin-tokens/"+tenantBound, ""), 403, "insufficient_scope")
	wantStatus(t, "org deletes its child", f.as(orgMinter, "DELETE", "/v1/admin-tokens/"+got.ID, ""), 204, "")
	wantStatus(t, "deleted twice", f.as(orgMinter, "DELETE", "/v1/admin-tokens/"+got.ID, ""), 404, "not_found")

	// Listing: an org-bound token sees its org's tokens only.
	var l struct{ Data []keystore.AdminToken }
	f.as(orgMinter, "GET", "/v1/admin-tokens", "").decode(t, &l)
	if len(l.Data) == 0 {
		t.Fatal("org token lists no tokens")
	}
	for _, x := range l.Data {
		if x.OrgID != w.oA1.ID {
			t.Errorf("org token lists %+v", x)
		}
	}
	wantStatus(t, "org lists another tenant's", f.as(orgMinter, "GET", "/v1/admin-tokens?tenant_id="+w.tB.ID, ""), 403, "out_of_reach")

	// An expiring token cannot mint one that outlives it; one that names
	// no expiry gets its creator's.
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	expiring := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeKeysRead, keystore.ScopeAdminTokensWrite}, ExpiresAt: &exp})
	wantStatus(t, "outlive", f.as(expiring, "POST", "/v1/admin-tokens", `{"name":"x","scopes":["keys:read"],"expires_in":"2h"}`), 403, "insufficient_scope")
	r = f.as(expiring, "POST", "/v1/admin-tokens", `{"name":"x","scopes":["keys:read"]}`)
	wantStatus(t, "inherit expiry", r, 201, "")
	var child keystore.AdminToken
	r.decode(t, &child)
	if child.ExpiresAt == nil || !child.ExpiresAt.Equal(exp) {
		t.Fatalf("child of an expiring token expires %v, want %v", child.ExpiresAt, exp)
	}
	wantStatus(t, "shorter", f.as(expiring, "POST", "/v1/admin-tokens", `{"name":"x","scopes":["keys:read"],"expires_in":"30m"}`), 201, "")
}

// TestAdminTokenCreateShowsTokenOnce: the token is in the create answer
// and nowhere after; it works at once.
func TestAdminTokenCreateShowsTokenOnce(t *testing.T) {
	f := newFixture(t, admin.Options{})
	r := f.do("POST", "/v1/admin-tokens", `{"name":"ci","scopes":["tenants:read"],"expires_in":"1h"}`)
	wantStatus(t, "create", r, http.StatusCreated, "")
	var created struct {
		keystore.AdminToken
		Token string `json:"token"`
	}
	r.decode(t, &created)
	if _, err := keystore.AdminTokenFormat.Parse(created.Token); err != nil || created.ExpiresAt == nil || created.CreatedBy != keystore.CreatedByBootstrap {
		t.Fatalf("created: %+v, %v", created.AdminToken, err)
	}
	if loc := r.header.Get("Location"); loc != "/v1/admin-tokens/"+url.PathEscape(created.ID) {
		t.Errorf("Location %q", loc)
	}
	wantStatus(t, "use", f.as(created.Token, "GET", "/v1/tenants", ""), http.StatusOK, "")
	l := f.do("GET", "/v1/admin-tokens", "")
	if strings.Contains(string(l.body), created.Token) || strings.Contains(string(l.body), `"token"`) || strings.Contains(string(l.body), `"hash"`) {
		t.Fatalf("listing shows the token: %s", l.body)
	}
	var listed struct{ Data []map[string]any }
	l.decode(t, &listed)
	if len(listed.Data) != 1 || listed.Data[0]["prefix"] != created.Prefix || !strings.HasPrefix(created.Token, created.Prefix) {
		t.Fatalf("listing: %s", l.body)
	}
	if strings.Contains(f.logs.String(), created.Token) {
		t.Fatal("the token is in the logs")
	}
	for _, bad := range []string{
		`{"name":"x","scopes":["nope"]}`,
		`{"name":"x","scopes":[]}`,
		`{"name":"x","scopes":["keys:read"],"expires_in":"-1h"}`,
		`{"name":"x","scopes":["keys:read"],"tenant_id":"nope"}`,
		`{"name":"x","scopes":["keys:read"],"extra":1}`,
	} {
		if r := f.do("POST", "/v1/admin-tokens", bad); r.status != http.StatusBadRequest && r.status != http.StatusNotFound {
			t.Errorf("%s: %d %s", bad, r.status, r.body)
		}
	}
}

// TestAdminTokenRefused: anything that is not a live token is 401 with the
// challenge, before any handler runs.
func TestAdminTokenRefused(t *testing.T) {
	var (
		mu  sync.Mutex
		now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureOn(t, s, admin.Options{Now: clock})
	live := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeTenantsRead}})
	wantStatus(t, "live", f.as(live, "GET", "/v1/tenants", ""), http.StatusOK, "")

	in := time.Minute
	exp := clock().Add(in)
	expiring := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeTenantsRead}, ExpiresAt: &exp})
	revoked, err := f.store.CreateAdminToken(t.Context(), keystore.AdminTokenSpec{Name: "r", Scopes: []string{keystore.ScopeTenantsRead}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "before revoke", f.as(revoked.Secret.Reveal(), "GET", "/v1/tenants", ""), http.StatusOK, "")
	wantStatus(t, "revoke", f.do("DELETE", "/v1/admin-tokens/"+revoked.ID, ""), http.StatusNoContent, "")
	mu.Lock()
	now = now.Add(in)
	mu.Unlock()

	unknown, err := keystore.AdminTokenFormat.Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	mistyped := live[:len(live)-1] + string(live[len(live)-1]^1)
	apiKey, err := f.store.CreateTenant(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	k, err := f.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: apiKey.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	for name, auth := range map[string]string{
		"revoked":   "Bearer " + revoked.Secret.Reveal(),
		"expired":   "Bearer " + expiring,
		"unknown":   "Bearer " + unknown,
		"mistyped":  "Bearer " + mistyped,
		"api key":   "Bearer " + k.Secret.Reveal(),
		"basic":     "Basic " + live,
		"no scheme": live,
		"none":      "",
		"prefix":    "Bearer kga_",
	} {
		r := f.doAuth("GET", "/v1/tenants", "", auth)
		wantStatus(t, name, r, http.StatusUnauthorized, "unauthorized")
		if r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no challenge", name)
		}
	}
	logs := f.logs.String()
	for _, secret := range []string{live, expiring, unknown, revoked.Secret.Reveal()} {
		if strings.Contains(logs, secret) {
			t.Fatal("a token is in the logs")
		}
	}
}

// TestBootstrapTokenReread: a replaced token file takes effect on the next
// request, and the old token stops working; a removed file admits no one.
func TestBootstrapTokenReread(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin-token")
	put := func(tok string) {
		t.Helper()
		if err := os.WriteFile(path+".new", []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	first, second := "bootstrap-token-one-0123", "bootstrap-token-two-0123"
	put(first)
	src, err := admintoken.FileSource(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureOn(t, s, admin.Options{TokenSource: src})
	wantStatus(t, "first", f.as(first, "POST", "/v1/tenants", `{"name":"a"}`), http.StatusCreated, "")
	put(second)
	wantStatus(t, "old after replace", f.as(first, "GET", "/v1/tenants", ""), http.StatusUnauthorized, "unauthorized")
	wantStatus(t, "new after replace", f.as(second, "POST", "/v1/tenants", `{"name":"b"}`), http.StatusCreated, "")
	os.Remove(path)
	wantStatus(t, "removed", f.as(second, "GET", "/v1/tenants", ""), http.StatusUnauthorized, "unauthorized")
	if strings.Contains(f.logs.String(), second) {
		t.Fatal("the bootstrap token is in the logs")
	}
}
