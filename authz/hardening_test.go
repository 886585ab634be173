package authz_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
)

// credentialLeaks lists what of the client's credentials and spoofed
// identity would reach the backend once Envoy applied d to in.
func credentialLeaks(in map[string]string, d authz.Decision, secrets ...string) []string {
	var leaks []string
	for k, v := range applyLikeEnvoy(in, d) {
		for _, s := range secrets {
			if s != "" && strings.Contains(v, s) {
				leaks = append(leaks, k)
			}
		}
		if v == "evil" {
			leaks = append(leaks, k)
		}
	}
	slices.Sort(leaks)
	return slices.Compact(leaks)
}

// TestEveryAllowStripsCredentials: whatever kind of allow it is — a public
// route, a shadow route, the unmatched default, a route made public in
// Envoy — no credential the request carried reaches the backend, whether
// or not Keygate looked at it, in any header spelling; a Basic
// Authorization is not Keygate's and passes.
func TestEveryAllowStripsCredentials(t *testing.T) {
	w := newTenantWorld(t)
	e := w.engine(t, authz.Policy{
		Rules: []authz.Rule{
			{Name: "health", Path: "/healthz", Public: true},
			{Name: "well-known", PathPrefix: "/.well-known/", Public: true},
			{Name: "shadowed", PathPrefix: "/new/", Scopes: []string{"new:read"}, Shadow: true},
		},
	}, func(c *authz.Config) { c.Signing = authz.Signing{Secret: []byte("0123456789abcdef0123456789abcdef")} })
	k := w.tenantKey.Secret.Reveal()
	other := w.vault.Secret.Reveal()
	spoof := map[string]string{
		"x_tenant_id": "evil", "x-tenant_id": "evil", "x_org-id": "evil", "x_user_id": "evil",
		"x_api_key_id": "evil", "x_api-key_name": "evil", "x_api_key_environment": "evil",
		"x_rate_limit_tier": "evil", "x_scopes": "evil", "x_keygate_signature": "evil",
		"x-tenant-id": "evil", "x-scopes": "evil",
	}
	tests := []struct {
		name     string
		path     string
		headers  map[string]string
		settings map[string]string
		wantAuth string // Authorization expected upstream ("" = none)
	}{
		{"public, x-api-key", "/healthz", map[string]string{"x-api-key": k}, nil, ""},
		{"public, bearer", "/healthz", map[string]string{"authorization": "Bearer " + k}, nil, ""},
		{"public, bearer any case", "/healthz", map[string]string{"authorization": "bEaReR\t" + k}, nil, ""},
		{"public, x-api-token", "/.well-known/jwks.json", map[string]string{"x-api-token": k}, nil, ""},
		{"public, every source", "/healthz", map[string]string{"x-api-key": k, "x-api-token": other, "authorization": "Bearer " + k}, nil, ""},
		{"public, empty key header", "/healthz", map[string]string{"x-api-key": "", "authorization": "Bearer"}, nil, ""},
		{"public, basic passes", "/healthz", map[string]string{"x-api-key": k, "authorization": "Basic dXNlcjpwYXNz"}, nil, "Basic dXNlcjpwYXNz"},
		{"public, key in underscore header", "/healthz", map[string]string{"x_api_key": k, "x_api-token": other}, nil, ""},
		{"public in Envoy", "/anything", map[string]string{"x-api-key": k}, map[string]string{"keygate.public": "true"}, ""},
		{"shadow, two keys", "/new/x", map[string]string{"x-api-key": k, "x-api-token": other}, nil, ""},
		{"shadow, invalid key", "/new/x", map[string]string{"x-api-key": "ak_live_nope"}, nil, ""},
		{"shadow, missing scope", "/new/x", map[string]string{"authorization": "Bearer " + k}, nil, ""},
		{"unmatched, key", "/elsewhere", map[string]string{"x-api-key": k}, nil, ""},
		{"unmatched, key and empty bearer", "/elsewhere", map[string]string{"x-api-key": k, "authorization": "Bearer "}, nil, ""},
		{"unmatched, key and basic", "/elsewhere", map[string]string{"x-api-key": k, "authorization": "Basic dXNlcjpwYXNz"}, nil, "Basic dXNlcjpwYXNz"},
		{"unmatched, key and its underscore twin", "/elsewhere", map[string]string{"x-api-key": k, "x_api_key": other}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := map[string]string{}
			for k, v := range spoof {
				in[k] = v
			}
			for k, v := range tt.headers {
				in[k] = v
			}
			d, err := e.Decide(t.Context(), &authz.Request{Method: "GET", Path: tt.path, Headers: in, Settings: tt.settings})
			if err != nil || !d.Allow() {
				t.Fatalf("not allowed: %s %v", d.Reason, err)
			}
			if leaks := credentialLeaks(in, d, k, other, "ak_live_nope"); len(leaks) > 0 {
				t.Fatalf("reach the backend: %v (remove %v)", leaks, d.Remove)
			}
			if got := applyLikeEnvoy(in, d)["authorization"]; got != tt.wantAuth {
				t.Fatalf("authorization upstream = %q, want %q", got, tt.wantAuth)
			}
			for _, r := range d.Remove {
				for _, s := range d.Set {
					if r == s.Name {
						t.Fatalf("%s is both set and removed", r)
					}
				}
			}
		})
	}
}

// TestCleanRequestsAllocateNoRemoveList: the removals of an ordinary allow
// are precomputed; only requests carrying extra credentials or twins pay.
func TestCleanRequestsAllocateNoRemoveList(t *testing.T) {
	w := newTenantWorld(t)
	e := w.engine(t, authz.Policy{Rules: []authz.Rule{{Path: "/healthz", Public: true}}})
	req := &authz.Request{Method: "GET", Path: "/healthz", Headers: map[string]string{"x-api-key": w.tenantKey.Secret.Reveal(), "user-agent": "x"}}
	if n := testing.AllocsPerRun(100, func() { e.Decide(t.Context(), req) }); n > 1 {
		t.Fatalf("a public allow allocates %v times", n)
	}
}

// TestPathVariantsAreNoBypass: the attacks on route rules that worked
// before, each now decided like the canonical path or refused.
func TestPathVariantsAreNoBypass(t *testing.T) {
	w := newTenantWorld(t)
	p := authz.Policy{
		DenyUnmatched: true,
		Rules: []authz.Rule{
			{Name: "well-known", PathPrefix: "/.well-known/", Public: true},
			{Name: "vault", PathPattern: "/api/v2/vault/**", Scopes: []string{"vault:read"}},
			{Name: "admin", PathPattern: "/admin/**", Scopes: []string{"admin"}, CaseInsensitive: true},
			{Name: "api-host", Host: "api.example.com", PathPrefix: "/", Scopes: []string{"admin"}},
			{Name: "rest", PathPrefix: "/", Scopes: []string{"projects:read"}},
		},
	}
	e := w.engine(t, p)
	decodes := w.engine(t, func() authz.Policy { q := p; q.DecodeEscapedSlashes = true; return q }())
	exactCase := w.engine(t, func() authz.Policy { q := p; q.ExactCase = true; return q }())
	k := key(w.tenantKey) // projects:read only
	tests := []struct {
		name   string
		e      *authz.Engine
		host   string
		path   string
		reason authz.Reason
		route  string
	}{
		{"encoded slash after public prefix", e, "", "/.well-known/..%2Fadmin", authz.ReasonInvalidPath, "(unmatched)"},
		{"encoded backslash after public prefix", e, "", "/.well-known/..%5Cadmin", authz.ReasonInvalidPath, "(unmatched)"},
		{"backslash after public prefix", e, "", `/.well-known/..\admin`, authz.ReasonInvalidPath, "(unmatched)"},
		{"double-encoded slash", e, "", "/.well-known/..%252Fadmin", authz.ReasonInvalidPath, "(unmatched)"},
		{"decoded: encoded slash is a slash", decodes, "", "/.well-known/..%2Fadmin", authz.ReasonInsufficientScope, "admin"},
		{"decoded: backslash is a slash", decodes, "", `/.well-known/..\admin`, authz.ReasonInsufficientScope, "admin"},
		{"upper case on a case-insensitive rule", e, "", "/Admin/x", authz.ReasonInsufficientScope, "admin"},
		{"upper case everywhere", e, "", "/ADMIN/X", authz.ReasonInsufficientScope, "admin"},
		{"upper case on a case-sensitive rule", e, "", "/API/v2/vault/s", authz.ReasonInvalidPath, "(unmatched)"},
		{"upper case that changes nothing", e, "", "/Projects/ABC", authz.ReasonOK, "rest"},
		{"exact case: another resource", exactCase, "", "/API/v2/vault/s", authz.ReasonOK, "rest"},
		{"exact case: case-insensitive rule still folds", exactCase, "", "/ADMIN/x", authz.ReasonInsufficientScope, "admin"},
		{"path parameter in a segment", e, "", "/api/v2/vault;a/s", authz.ReasonInvalidPath, "(unmatched)"},
		{"path parameter with dot-dot", e, "", "/.well-known/..;/admin/x", authz.ReasonInvalidPath, "(unmatched)"},
		{"encoded path parameter", e, "", "/api/v2/vault%3Ba/s", authz.ReasonInvalidPath, "(unmatched)"},
		{"harmless path parameter", e, "", "/api/v2/vault/s;jsessionid=1", authz.ReasonInsufficientScope, "vault"},
		{"encoded slash inside a rule", e, "", "/api%2Fv2/vault/s", authz.ReasonInvalidPath, "(unmatched)"},
		{"host with a trailing dot", e, "api.example.com.", "/x", authz.ReasonInsufficientScope, "api-host"},
		{"host with a trailing dot and port", e, "API.example.com.:443", "/x", authz.ReasonInsufficientScope, "api-host"},
		{"canonical still allowed", e, "", "/projects/x", authz.ReasonOK, "rest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := tt.e.Decide(t.Context(), &authz.Request{Method: "GET", Host: tt.host, Path: tt.path, Headers: k})
			if err != nil {
				t.Fatal(err)
			}
			if d.Reason != tt.reason || d.Route != tt.route {
				t.Fatalf("%s on %q, want %s on %q", d.Reason, d.Route, tt.reason, tt.route)
			}
			if tt.reason == authz.ReasonInvalidPath && (d.Status != 400 || !strings.Contains(d.Body, "encoded slashes")) {
				t.Fatalf("refusal %d %s", d.Status, d.Body)
			}
		})
	}
}

// TestRepeatedRoutingHeaderRefused: a proxy that passed two copies of the
// original URI could have the backend read the other one.
func TestRepeatedRoutingHeaderRefused(t *testing.T) {
	w := newTenantWorld(t)
	e := w.engine(t, authz.Policy{Rules: []authz.Rule{{Path: "/x", Public: true}}})
	d, err := e.Decide(t.Context(), &authz.Request{Method: "GET", Path: "/x", Unroutable: "x-original-uri", Headers: key(w.starKey)})
	if err != nil || d.Allow() || d.Status != 400 || d.Reason != authz.ReasonAmbiguousRequest {
		t.Fatalf("repeated routing header: %+v %v", d, err)
	}
}

// TestIntrospectionPays: /me spends its route's cost and credits like any
// request, and answers 429 once the budget is gone.
func TestIntrospectionPays(t *testing.T) {
	w := newLimitWorld(t)
	e := w.engine(t, authz.Config{
		Policy:  authz.Policy{IntrospectionPath: "/me"},
		Credits: w.store,
		RateLimits: authz.RateLimits{Tiers: map[string]authz.LimitSet{
			"standard": authz.One("standard", ratelimit.Limit{Requests: 3, Window: time.Minute}),
		}},
	}, nil)
	me := func(k keystore.CreatedKey) authz.Decision {
		d, err := e.Decide(t.Context(), &authz.Request{Method: "GET", Path: "/me", Headers: key(k)})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for i := range 3 {
		d := me(w.std)
		if d.Reason != authz.ReasonIntrospection || d.Status != 200 {
			t.Fatalf("/me %d: %s", i+1, d.Reason)
		}
		if header(d.ResponseHeaders, "x-ratelimit-remaining") != []string{"2", "1", "0"}[i] {
			t.Fatalf("/me %d: rate-limit headers %v", i+1, d.ResponseHeaders)
		}
	}
	if d := me(w.std); d.Reason != authz.ReasonRateLimited {
		t.Fatalf("4th /me: %s, want rate_limited", d.Reason)
	}
	for i := range 4 {
		d := me(w.metered)
		if i == 3 {
			if d.Reason != authz.ReasonRateLimited {
				t.Fatalf("4th metered /me: %s", d.Reason)
			}
			break
		}
		if d.Reason != authz.ReasonIntrospection || header(d.ResponseHeaders, "x-credits-remaining") != []string{"4", "3", "2"}[i] {
			t.Fatalf("metered /me %d: %s, credits %q", i+1, d.Reason, header(d.ResponseHeaders, "x-credits-remaining"))
		}
	}
}

// TestUnreadableClientAddressThrottled: an address written with a port is
// read; one that cannot be read is counted under one shared budget, never
// exempt from the failed-auth throttle.
func TestUnreadableClientAddressThrottled(t *testing.T) {
	w := newLimitWorld(t)
	e := w.engine(t, authz.Config{
		ClientIP:   authz.ClientIP{Header: "x-forwarded-for", TrustedHops: 1},
		RateLimits: authz.RateLimits{FailedAuth: ratelimit.Limit{Requests: 3, Window: time.Minute}},
	}, nil)
	guess := func(xff string) authz.Decision {
		d, err := e.Decide(t.Context(), &authz.Request{Method: "GET", Path: "/x", Headers: map[string]string{"x-api-key": "ak_live_guess", "x-forwarded-for": xff}})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tt := range []struct{ name, first, then string }{
		{"v4 with port", "5.5.5.5:80", "5.5.5.5:81"},
		{"v6 with port", "[2001:db8::5]:443", "2001:db8::6"},
		{"v6 in brackets", "[2001:db9::5]", "2001:db9::5"},
		{"unreadable", "not-an-address", "unknown"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 3 {
				if d := guess(tt.first); d.Reason != authz.ReasonInvalidKey {
					t.Fatalf("guess %d: %s", i+1, d.Reason)
				}
			}
			if d := guess(tt.then); d.Reason != authz.ReasonRateLimited {
				t.Fatalf("after 3 guesses from %q, %q: %s, want rate_limited", tt.first, tt.then, d.Reason)
			}
		})
	}
}
