package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
)

// tenantWorld: two tenants, orgs, and keys of every level and environment.
type tenantWorld struct {
	store                            *keystore.Store
	acme, other                      string // tenants
	acmeEU, acmeUS, otherOrg         string // orgs
	tenantKey, euKey, testKey, vault keystore.CreatedKey
	starKey, ipKey                   keystore.CreatedKey
}

func newTenantWorld(t *testing.T) *tenantWorld {
	t.Helper()
	s, err := keystore.Open(filepath.Join(t.TempDir(), "keygate.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	w := &tenantWorld{store: s}
	a, _ := s.CreateTenant(t.Context(), "Acme")
	o, _ := s.CreateTenant(t.Context(), "Other")
	w.acme, w.other = a.ID, o.ID
	eu, _ := s.CreateOrg(t.Context(), a.ID, "EU")
	us, _ := s.CreateOrg(t.Context(), a.ID, "US")
	oo, _ := s.CreateOrg(t.Context(), o.ID, "Other org")
	w.acmeEU, w.acmeUS, w.otherOrg = eu.ID, us.ID, oo.ID
	mk := func(spec keystore.KeySpec) keystore.CreatedKey {
		t.Helper()
		if spec.TenantID == "" {
			spec.TenantID = a.ID
		}
		spec.Name = "k"
		k, err := s.CreateKey(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	w.tenantKey = mk(keystore.KeySpec{Scopes: []string{"projects:read"}})
	w.euKey = mk(keystore.KeySpec{OrgID: eu.ID, Scopes: []string{"projects:read"}})
	w.testKey = mk(keystore.KeySpec{Environment: "test", Scopes: []string{"projects:read"}})
	w.vault = mk(keystore.KeySpec{Scopes: []string{"vault:read", "chat:*"}})
	w.starKey = mk(keystore.KeySpec{Scopes: []string{"*"}})
	w.ipKey = mk(keystore.KeySpec{AllowedCIDRs: []string{"10.1.0.0/16", "2001:db8::/32"}})
	return w
}

func (w *tenantWorld) engine(t *testing.T, p authz.Policy, mod ...func(*authz.Config)) *authz.Engine {
	t.Helper()
	cfg := authz.Config{Policy: p}
	for _, m := range mod {
		m(&cfg)
	}
	e, err := authz.New(cfg, w.store)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

type call struct {
	method, path, host, peer string
	headers, settings        map[string]string
}

func (c call) run(t *testing.T, e *authz.Engine) (authz.Decision, error) {
	t.Helper()
	if c.method == "" {
		c.method = "GET"
	}
	return e.Decide(context.Background(), &authz.Request{Method: c.method, Path: c.path, Host: c.host, Peer: c.peer, Headers: c.headers, Settings: c.settings})
}

func key(k keystore.CreatedKey) map[string]string {
	return map[string]string{"x-api-key": k.Secret.Reveal()}
}

var routes = authz.Policy{
	OrgHeader:         "x-org-id",
	IntrospectionPath: "/api/v2/me",
	Rules: []authz.Rule{
		{Name: "health", Path: "/healthz", Public: true},
		{Name: "docs", PathPrefix: "/docs/", Public: true},
		{Name: "org-projects", PathPattern: "/api/v2/orgs/{org}/projects/**", OrgParam: "org", Scopes: []string{"projects:read"}},
		{Name: "vault-write", Methods: []string{"POST", "put"}, PathPrefix: "/api/v2/vault/", Scopes: []string{"vault:read", "vault:write"}, Cost: 5},
		{Name: "vault-read", PathPrefix: "/api/v2/vault/", Scopes: []string{"vault:read"}},
		{Name: "chat", PathPrefix: "/api/v2/chat/", Scopes: []string{"chat:write"}},
		{Name: "live-only", PathPrefix: "/billing/", Environments: []string{"live"}},
		{Name: "admin-host", Host: "admin.example.com", Scopes: []string{"admin"}},
		{Name: "wild-host", Host: "*.internal.example.com", Public: true},
		{Name: "admin", PathPrefix: "/admin", Scopes: []string{"admin"}},
	},
}

// TestPolicyDecisions is the decision table of route policy: each rule
// feature, first-match order, wildcards, and org matching for tenant- and
// org-level keys.
func TestPolicyDecisions(t *testing.T) {
	w := newTenantWorld(t)
	e := w.engine(t, routes)
	tests := []struct {
		name   string
		call   call
		reason authz.Reason
		route  string
		org    string // x-org-id expected upstream on allow ("" = removed)
	}{
		{"public without key", call{path: "/healthz"}, authz.ReasonOK, "health", ""},
		{"public prefix", call{path: "/docs/intro"}, authz.ReasonOK, "docs", ""},
		{"public prefix is not a path trick", call{path: "/docs/../admin", headers: key(w.vault)}, authz.ReasonInsufficientScope, "admin", ""},
		{"encoded dot segments", call{path: "/docs/%2e%2e/admin", headers: key(w.vault)}, authz.ReasonInsufficientScope, "admin", ""},
		{"double slash", call{path: "//admin", headers: key(w.vault)}, authz.ReasonInsufficientScope, "admin", ""},
		{"scope held", call{path: "/api/v2/vault/projects", headers: key(w.vault)}, authz.ReasonOK, "vault-read", ""},
		{"methods pick the rule", call{method: "POST", path: "/api/v2/vault/projects", headers: key(w.vault)}, authz.ReasonInsufficientScope, "vault-write", ""},
		{"methods case-insensitive", call{method: "PUT", path: "/api/v2/vault/x", headers: key(w.starKey)}, authz.ReasonOK, "vault-write", ""},
		{"scope wildcard chat:*", call{path: "/api/v2/chat/send", headers: key(w.vault)}, authz.ReasonOK, "chat", ""},
		{"scope wildcard *", call{path: "/admin/users", headers: key(w.starKey)}, authz.ReasonOK, "admin", ""},
		{"scope missing", call{path: "/api/v2/chat/send", headers: key(w.tenantKey)}, authz.ReasonInsufficientScope, "chat", ""},
		{"environment allowed", call{path: "/billing/invoices", headers: key(w.tenantKey)}, authz.ReasonOK, "live-only", ""},
		{"environment refused", call{path: "/billing/invoices", headers: key(w.testKey)}, authz.ReasonEnvironmentNotAllowed, "live-only", ""},
		{"host exact", call{path: "/x", host: "admin.example.com:8443", headers: key(w.vault)}, authz.ReasonInsufficientScope, "admin-host", ""},
		{"host wildcard", call{path: "/x", host: "a.internal.example.com"}, authz.ReasonOK, "wild-host", ""},
		{"host wildcard needs a subdomain", call{path: "/x", host: "internal.example.com", headers: key(w.vault)}, authz.ReasonOK, "(unmatched)", ""},
		{"unmatched needs a key", call{path: "/elsewhere"}, authz.ReasonMissingKey, "(unmatched)", ""},
		{"unmatched with key", call{path: "/elsewhere", headers: key(w.euKey)}, authz.ReasonOK, "(unmatched)", "eu"},
		{"org key, own org", call{path: "/api/v2/orgs/EU/projects/p1", headers: key(w.euKey)}, authz.ReasonOK, "org-projects", "eu"},
		{"org key, other org of its tenant", call{path: "/api/v2/orgs/US/projects/p1", headers: key(w.euKey)}, authz.ReasonOrgForbidden, "org-projects", ""},
		{"tenant key, org of its tenant", call{path: "/api/v2/orgs/US/projects", headers: key(w.tenantKey)}, authz.ReasonOK, "org-projects", "us"},
		{"tenant key, org of another tenant", call{path: "/api/v2/orgs/OTHER/projects", headers: key(w.tenantKey)}, authz.ReasonOrgForbidden, "org-projects", ""},
		{"tenant key, unknown org", call{path: "/api/v2/orgs/nope/projects", headers: key(w.tenantKey)}, authz.ReasonOrgForbidden, "org-projects", ""},
		{"org header, tenant key", call{path: "/elsewhere", headers: map[string]string{"x-api-key": w.tenantKey.Secret.Reveal(), "x-org-id": "US"}}, authz.ReasonOK, "(unmatched)", "us"},
		{"org header, org key elsewhere", call{path: "/elsewhere", headers: map[string]string{"x-api-key": w.euKey.Secret.Reveal(), "x-org-id": "US"}}, authz.ReasonOrgForbidden, "(unmatched)", ""},
		{"ip allowed", call{path: "/x", peer: "10.1.2.3", headers: key(w.ipKey)}, authz.ReasonOK, "(unmatched)", ""},
		{"ip allowed, mapped v4", call{path: "/x", peer: "::ffff:10.1.2.3", headers: key(w.ipKey)}, authz.ReasonOK, "(unmatched)", ""},
		{"ip allowed v6", call{path: "/x", peer: "2001:db8::1", headers: key(w.ipKey)}, authz.ReasonOK, "(unmatched)", ""},
		{"ip refused", call{path: "/x", peer: "203.0.113.9", headers: key(w.ipKey)}, authz.ReasonIPNotAllowed, "(unmatched)", ""},
		{"ip unknown", call{path: "/x", headers: key(w.ipKey)}, authz.ReasonIPNotAllowed, "(unmatched)", ""},
	}
	orgs := map[string]string{"EU": w.acmeEU, "US": w.acmeUS, "OTHER": w.otherOrg, "eu": w.acmeEU, "us": w.acmeUS}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.call
			c.path = replaceOrg(c.path, orgs)
			if v, ok := c.headers["x-org-id"]; ok {
				c.headers["x-org-id"] = orgs[v]
			}
			spoofed := map[string]string{"x-tenant-id": "evil", "x-scopes": "admin", "x-api-key-id": "evil"}
			for k, v := range c.headers {
				spoofed[k] = v
			}
			c.headers = spoofed
			d, err := c.run(t, e)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if d.Reason != tt.reason || d.Route != tt.route {
				t.Fatalf("decision %s on route %q, want %s on %q (body %s)", d.Reason, d.Route, tt.reason, tt.route, d.Body)
			}
			if !d.Allow() {
				return
			}
			up := applyLikeEnvoy(c.headers, d)
			if got, want := up["x-org-id"], orgs[tt.org]; got != want {
				t.Fatalf("upstream x-org-id = %q, want %q", got, want)
			}
			if up["x-tenant-id"] == "evil" || up["x-scopes"] == "admin" || up["x-api-key-id"] == "evil" {
				t.Fatalf("spoofed identity reached upstream: %v", up)
			}
			if d.Credential == nil {
				for _, h := range []string{"x-tenant-id", "x-scopes", "x-api-key-id", "x-org-id"} {
					if _, ok := up[h]; ok {
						t.Fatalf("public route passed %s upstream: %v", h, up)
					}
				}
			}
		})
	}
}

func replaceOrg(p string, orgs map[string]string) string {
	for name, id := range orgs {
		p = strings.Replace(p, "/orgs/"+name+"/", "/orgs/"+id+"/", 1)
		if strings.HasSuffix(p, "/orgs/"+name) {
			p = strings.TrimSuffix(p, name) + id
		}
	}
	return p
}

func TestMissingScopesBody(t *testing.T) {
	w := newTenantWorld(t)
	for _, format := range []string{authz.FormatSimple, authz.FormatProblem} {
		e := w.engine(t, routes, func(c *authz.Config) { c.Errors.Format = format })
		d, _ := call{method: "POST", path: "/api/v2/vault/projects", headers: key(w.tenantKey)}.run(t, e)
		var body map[string]any
		if err := json.Unmarshal([]byte(d.Body), &body); err != nil {
			t.Fatal(err)
		}
		const msg = "API key is missing required scope: vault:read, vault:write"
		switch format {
		case authz.FormatSimple:
			if diff := cmp.Diff(body, map[string]any{"error": msg}); diff != "" {
				t.Fatalf("(-got +want):\n%s", diff)
			}
		case authz.FormatProblem:
			if body["detail"] != msg || body["code"] != "insufficient_scope" || body["status"] != 403.0 {
				t.Fatalf("problem body %v", body)
			}
			if diff := cmp.Diff(body["missing_scopes"], []any{"vault:read", "vault:write"}); diff != "" {
				t.Fatalf("missing_scopes (-got +want):\n%s", diff)
			}
		}
	}
}

// TestContextExtensionsPrecedence: Envoy's per-route settings override the
// matched rule field by field; typos and bad values fail closed.
func TestContextExtensionsPrecedence(t *testing.T) {
	w := newTenantWorld(t)
	e := w.engine(t, routes)
	vaultPath := "/api/v2/vault/projects"
	tests := []struct {
		name     string
		path     string
		k        keystore.CreatedKey
		settings map[string]string
		reason   authz.Reason
		cost     int
		err      bool
	}{
		{"rule alone", vaultPath, w.tenantKey, nil, authz.ReasonInsufficientScope, 1, false},
		{"extension replaces scopes", vaultPath, w.tenantKey, map[string]string{"keygate.scopes": "projects:read"}, authz.ReasonOK, 1, false},
		{"extension requires more", "/elsewhere", w.vault, map[string]string{"keygate.scopes": "vault:read, chat:write"}, authz.ReasonOK, 1, false},
		{"extension scope missing", "/elsewhere", w.vault, map[string]string{"keygate.scopes": "billing:read"}, authz.ReasonInsufficientScope, 1, false},
		{"extension makes public", "/admin/x", keystore.CreatedKey{}, map[string]string{"keygate.public": "true"}, authz.ReasonOK, 1, false},
		{"extension un-publics", "/healthz", keystore.CreatedKey{}, map[string]string{"keygate.public": "false"}, authz.ReasonMissingKey, 1, false},
		{"extension environments", vaultPath, w.vault, map[string]string{"keygate.environments": "test"}, authz.ReasonEnvironmentNotAllowed, 1, false},
		{"extension cost", vaultPath, w.vault, map[string]string{"keygate.cost": "7"}, authz.ReasonOK, 7, false},
		{"other extensions ignored", vaultPath, w.vault, map[string]string{"istio.something": "x"}, authz.ReasonOK, 1, false},
		{"typo fails closed", vaultPath, w.vault, map[string]string{"keygate.scope": "x"}, authz.ReasonUnavailable, 1, true},
		{"bad bool fails closed", vaultPath, w.vault, map[string]string{"keygate.public": "yes please"}, authz.ReasonUnavailable, 1, true},
		{"bad cost fails closed", vaultPath, w.vault, map[string]string{"keygate.cost": "-1"}, authz.ReasonUnavailable, 1, true},
		{"bad env fails closed", vaultPath, w.vault, map[string]string{"keygate.environments": "prod"}, authz.ReasonUnavailable, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.k.Secret.Reveal() != "" {
				h["x-api-key"] = tt.k.Secret.Reveal()
			}
			d, err := call{path: tt.path, headers: h, settings: tt.settings}.run(t, e)
			if (err != nil) != tt.err || tt.err && !errors.Is(err, authz.ErrUnavailable) {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if d.Reason != tt.reason || d.Cost != tt.cost {
				t.Fatalf("decision %s cost %d, want %s cost %d", d.Reason, d.Cost, tt.reason, tt.cost)
			}
		})
	}
}

func TestUnmatchedAndEnvironments(t *testing.T) {
	w := newTenantWorld(t)
	p := routes
	p.DenyUnmatched = true
	p.Environments = []string{"test"}
	e := w.engine(t, p)
	if d, _ := (call{path: "/elsewhere", headers: key(w.testKey)}).run(t, e); d.Reason != authz.ReasonRouteNotAllowed || d.Status != 403 {
		t.Fatalf("unmatched with deny: %s %d", d.Reason, d.Status)
	}
	// A route Envoy configured for Keygate is a route, even if no rule matches.
	if d, _ := (call{path: "/elsewhere", headers: key(w.testKey), settings: map[string]string{"keygate.scopes": "projects:read"}}).run(t, e); !d.Allow() {
		t.Fatalf("route configured in Envoy: %s", d.Reason)
	}
	if d, _ := (call{path: "/api/v2/vault/x", headers: key(w.vault)}).run(t, e); d.Reason != authz.ReasonEnvironmentNotAllowed {
		t.Fatalf("listener limited to test, live key: %s", d.Reason)
	}
	d, _ := (call{path: "/api/v2/orgs/x/projects", headers: key(w.testKey)}).run(t, e)
	if d.Reason != authz.ReasonOrgForbidden {
		t.Fatalf("test key on unknown org: %s", d.Reason)
	}
}

func TestShadowMode(t *testing.T) {
	w := newTenantWorld(t)
	p := authz.Policy{
		ShadowTenants: []string{w.other},
		Rules: []authz.Rule{
			{Name: "shadowed", PathPrefix: "/new/", Scopes: []string{"new:read"}, Shadow: true},
			{Name: "enforced", PathPrefix: "/old/", Scopes: []string{"new:read"}},
		},
	}
	e := w.engine(t, p)
	otherKey, err := w.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: w.other, Name: "o"})
	if err != nil {
		t.Fatal(err)
	}
	revoked, _ := w.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: w.acme, Name: "r"})
	w.store.RevokeKey(t.Context(), revoked.ID)
	tests := []struct {
		name      string
		call      call
		allow     bool
		wouldDeny authz.Reason
		identity  bool
	}{
		{"missing scope on shadow route", call{path: "/new/x", headers: key(w.tenantKey)}, true, authz.ReasonInsufficientScope, true},
		{"no key on shadow route", call{path: "/new/x", headers: map[string]string{"x-tenant-id": "evil"}}, true, authz.ReasonMissingKey, false},
		{"revoked key on shadow route", call{path: "/new/x", headers: key(revoked)}, true, authz.ReasonRevokedKey, false},
		{"same on enforced route", call{path: "/old/x", headers: key(w.tenantKey)}, false, "", false},
		{"shadow tenant on enforced route", call{path: "/old/x", headers: key(otherKey)}, true, authz.ReasonInsufficientScope, true},
		{"shadow route that allows", call{path: "/new/x", headers: key(w.starKey)}, true, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := tt.call.run(t, e)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow() != tt.allow || d.WouldDeny != tt.wouldDeny {
				t.Fatalf("allow=%v would_deny=%q, want %v %q", d.Allow(), d.WouldDeny, tt.allow, tt.wouldDeny)
			}
			if !d.Allow() {
				return
			}
			up := applyLikeEnvoy(tt.call.headers, d)
			_, hasTenant := up["x-tenant-id"]
			if hasTenant != tt.identity || up["x-tenant-id"] == "evil" {
				t.Fatalf("upstream identity %v, want identity=%v", up, tt.identity)
			}
			if _, ok := up["x-api-key"]; ok {
				t.Fatal("shadow allow passed the credential upstream")
			}
		})
	}
}

func TestIntrospection(t *testing.T) {
	w := newTenantWorld(t)
	e := w.engine(t, routes)
	d, err := call{path: "/api/v2/me", headers: map[string]string{"authorization": "Bearer " + w.euKey.Secret.Reveal()}}.run(t, e)
	if err != nil || d.Allow() || d.Status != 200 || d.Reason != authz.ReasonIntrospection {
		t.Fatalf("introspection: %+v, %v", d, err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(d.Body), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"tenant_id": w.acme, "org_id": w.acmeEU, "auth_method": "api_key", "api_key_id": w.euKey.ID,
		"api_key_name": "k", "api_key_prefix": w.euKey.DisplayPrefix, "environment": "live",
		"rate_limit_tier": "standard", "scopes": []any{"projects:read"},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Fatalf("principal (-got +want):\n%s", diff)
	}
	if strings.Contains(d.Body, w.euKey.Secret.Reveal()) {
		t.Fatal("introspection body contains the key")
	}
	w.store.RevokeKey(t.Context(), w.euKey.ID)
	if d, _ := (call{path: "/api/v2/me", headers: key(w.euKey)}).run(t, e); d.Reason != authz.ReasonRevokedKey {
		t.Fatalf("introspection with a revoked key: %s", d.Reason)
	}
	if d, _ := (call{method: "POST", path: "/api/v2/me", headers: key(w.tenantKey)}).run(t, e); !d.Allow() {
		t.Fatalf("POST to the introspection path is an ordinary request: %s", d.Reason)
	}
}

func TestClientIPFromForwardedFor(t *testing.T) {
	w := newTenantWorld(t)
	e := w.engine(t, authz.Policy{}, func(c *authz.Config) { c.ClientIP = authz.ClientIP{Header: "x-forwarded-for", TrustedHops: 2} })
	for _, tt := range []struct {
		xff, peer string
		allow     bool
	}{
		{"203.0.113.1, 10.1.0.5, 192.168.0.1", "192.168.0.9", true},  // 2nd from the right is the client
		{"10.1.0.5, 203.0.113.1, 192.168.0.1", "192.168.0.9", false}, // a claim further left is ignored
		{"192.168.0.1", "10.1.9.9", true},                            // too few hops: the peer
		{"garbage, 192.168.0.1", "10.1.9.9", false},
	} {
		h := key(w.ipKey)
		h["x-forwarded-for"] = tt.xff
		d, _ := call{path: "/x", peer: tt.peer, headers: h}.run(t, e)
		if d.Allow() != tt.allow {
			t.Errorf("xff %q peer %s: allow=%v (%s), want %v", tt.xff, tt.peer, d.Allow(), d.Reason, tt.allow)
		}
	}
	for _, bad := range []authz.ClientIP{{Header: "x-forwarded-for"}, {TrustedHops: 1}, {Header: "X Bad", TrustedHops: 1}} {
		if _, err := authz.New(authz.Config{ClientIP: bad}, w.store); err == nil {
			t.Errorf("ClientIP %+v accepted", bad)
		}
	}
}

func TestSignedIdentity(t *testing.T) {
	w := newTenantWorld(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	e := w.engine(t, routes, func(c *authz.Config) {
		c.Signing = authz.Signing{Secret: secret}
		c.Now = func() time.Time { return now }
	})
	d, _ := call{path: "/api/v2/orgs/" + w.acmeUS + "/projects", headers: map[string]string{"x-api-key": w.tenantKey.Secret.Reveal(), "x-keygate-signature": "forged"}}.run(t, e)
	up := applyLikeEnvoy(map[string]string{"x-keygate-signature": "forged"}, d)
	values := [8]string{up["x-tenant-id"], up["x-org-id"], up["x-user-id"], up["x-api-key-id"], up["x-api-key-name"], up["x-api-key-environment"], up["x-rate-limit-tier"], up["x-scopes"]}
	sig := up["x-keygate-signature"]
	if !authz.VerifySignature(secret, sig, values, now.Add(time.Minute), 5*time.Minute) {
		t.Fatalf("signature %q does not verify over %v", sig, values)
	}
	tampered := values
	tampered[1] = w.acmeEU
	if authz.VerifySignature(secret, sig, tampered, now, 5*time.Minute) {
		t.Fatal("signature verifies over a changed org")
	}
	if authz.VerifySignature(secret, sig, values, now.Add(10*time.Minute), 5*time.Minute) {
		t.Fatal("stale signature verifies")
	}
	if authz.VerifySignature([]byte("another secret of at least 32 bytes!!"), sig, values, now, 5*time.Minute) {
		t.Fatal("signature verifies with another secret")
	}
	// Public routes are signed too: the absence of identity is proven.
	d, _ = call{path: "/healthz"}.run(t, e)
	up = applyLikeEnvoy(nil, d)
	if !authz.VerifySignature(secret, up["x-keygate-signature"], [8]string{}, now, time.Minute) {
		t.Fatalf("public route signature: %v", up)
	}
	if _, err := authz.New(authz.Config{Signing: authz.Signing{Secret: []byte("short")}}, w.store); err == nil {
		t.Fatal("a short signing secret was accepted")
	}
}

func TestDecisionIDsAndHotSwap(t *testing.T) {
	w := newTenantWorld(t)
	e := w.engine(t, routes)
	seen := map[uint64]bool{}
	for i := 0; i < 100; i++ {
		d, _ := call{path: "/healthz"}.run(t, e)
		if seen[d.ID] {
			t.Fatalf("decision id %x repeated", d.ID)
		}
		seen[d.ID] = true
		if len(authz.FormatID(d.ID)) != 16 {
			t.Fatalf("FormatID = %q", authz.FormatID(d.ID))
		}
	}
	if err := e.SetPolicy(authz.Policy{Rules: []authz.Rule{{PathPattern: "/a/{x}/{x}"}}}); err == nil {
		t.Fatal("SetPolicy accepted a bad pattern")
	}
	if d, _ := (call{path: "/healthz"}).run(t, e); !d.Allow() {
		t.Fatal("a refused SetPolicy replaced the running policy")
	}
	if err := e.SetPolicy(authz.Policy{}); err != nil {
		t.Fatal(err)
	}
	if d, _ := (call{path: "/healthz"}).run(t, e); d.Reason != authz.ReasonMissingKey {
		t.Fatalf("after SetPolicy, /healthz is %s", d.Reason)
	}
}

func TestPolicyValidation(t *testing.T) {
	err := authz.ValidatePolicy(authz.Policy{Rules: []authz.Rule{
		{Name: "a", Path: "/x", PathPrefix: "/y"},
		{Name: "b", PathPattern: "/orgs/{org}", OrgParam: "tenant"},
		{Name: "a", Public: true, Scopes: []string{"s"}},
		{Environments: []string{"prod"}},
		{Cost: -1, Host: "a:b"},
	}})
	if err == nil {
		t.Fatal("invalid policy accepted")
	}
	var re *authz.RuleError
	if !errors.As(err, &re) {
		t.Fatalf("no RuleError in %v", err)
	}
	for _, want := range []string{"rule 1 (a)", "rule 2 (b)", "rule 3 (a)", "also rule 1", "rule 4", "prod", "rule 5", "cost -1", "host"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("validation error lacks %q:\n%v", want, err)
		}
	}
}
