package envoy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/keystore"
)

type httpHarness struct {
	srv    *httptest.Server
	store  *keystore.Store
	tenant string
}

func startHTTP(t *testing.T, cfg authz.Config) *httpHarness {
	t.Helper()
	s, e, tn := newEngine(t, cfg)
	srv := httptest.NewServer(envoy.NewHTTPHandler(e, nil))
	t.Cleanup(srv.Close)
	return &httpHarness{srv: srv, store: s, tenant: tn.ID}
}

func (h *httpHarness) do(t *testing.T, method, path string, headers map[string]string) (*http.Response, string) {
	t.Helper()
	var pairs [][2]string
	for k, v := range headers {
		pairs = append(pairs, [2]string{k, v})
	}
	return h.raw(t, method, path, pairs)
}

// raw sends a request whose headers may repeat.
func (h *httpHarness) raw(t *testing.T, method, path string, headers [][2]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range headers {
		req.Header.Add(kv[0], kv[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestHTTPEnvoyDialect(t *testing.T) {
	h := startHTTP(t, authz.Config{Policy: authz.Policy{Rules: []authz.Rule{
		{Name: "health", Path: "/healthz", Public: true},
		{Name: "vault", PathPrefix: "/vault/", Scopes: []string{"vault:write"}},
	}}})
	k, _ := h.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: h.tenant, Name: "k", Scopes: []string{"vault:read"}})

	resp, body := h.do(t, "POST", "/envoy/api/items?x=1", map[string]string{"X-Api-Key": k.Secret.Reveal(), "X-Tenant-Id": "evil"})
	if resp.StatusCode != 200 || body != "" {
		t.Fatalf("allow: %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Tenant-Id") != h.tenant || resp.Header.Get("X-Api-Key-Id") != k.ID || resp.Header.Get("X-Ratelimit-Remaining") == "" {
		t.Fatalf("allow headers %v", resp.Header)
	}
	if got := resp.Header.Get("X-Envoy-Auth-Headers-To-Remove"); !strings.Contains(got, "x-api-key") || !strings.Contains(got, "x-org-id") {
		t.Fatalf("x-envoy-auth-headers-to-remove = %q", got)
	}
	// The original path (after the prefix) is what the rules see.
	resp, body = h.do(t, "GET", "/envoy/vault/x", map[string]string{"Authorization": "Bearer " + k.Secret.Reveal()})
	if resp.StatusCode != 403 || !strings.Contains(body, "API key is missing required scope: vault:write") {
		t.Fatalf("scope denial: %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get(authz.DecisionIDHeader) == "" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("denial headers %v", resp.Header)
	}
	resp, _ = h.do(t, "GET", "/envoy/healthz", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("public route: %d", resp.StatusCode)
	}
	resp, body = h.do(t, "GET", "/envoy/x", nil)
	if resp.StatusCode != 401 || resp.Header.Get("Www-Authenticate") == "" || !strings.Contains(body, "API key is required") {
		t.Fatalf("no key: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if resp, _ := h.do(t, "GET", "/elsewhere", nil); resp.StatusCode != 404 {
		t.Fatalf("unknown dialect path: %d", resp.StatusCode)
	}
}

// TestHTTPNginxDialect: nginx understands only 2xx, 401 and 403, so the
// real status and body travel in headers for the example's error_page.
func TestHTTPNginxDialect(t *testing.T) {
	h := startHTTP(t, authz.Config{Policy: authz.Policy{Rules: []authz.Rule{{Name: "admin", PathPrefix: "/admin", Scopes: []string{"admin"}}}}})
	k, _ := h.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: h.tenant, Name: "k"})
	revoked, _ := h.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: h.tenant, Name: "r"})
	h.store.RevokeKey(t.Context(), revoked.ID)
	orig := func(uri, key string) map[string]string {
		m := map[string]string{"X-Original-URI": uri, "X-Original-Method": "GET"}
		if key != "" {
			m["X-Api-Key"] = key
		}
		return m
	}
	resp, _ := h.do(t, "GET", "/nginx", orig("/api/x", k.Secret.Reveal()))
	if resp.StatusCode != 200 || resp.Header.Get("X-Tenant-Id") != h.tenant {
		t.Fatalf("allow: %d %v", resp.StatusCode, resp.Header)
	}
	for _, tt := range []struct {
		uri, key   string
		status     int
		realStatus string
		message    string
	}{
		{"/api/x", revoked.Secret.Reveal(), 401, "401", "API key has been revoked"},
		{"/admin/x", k.Secret.Reveal(), 403, "403", "API key is missing required scope: admin"},
	} {
		resp, _ := h.do(t, "GET", "/nginx", orig(tt.uri, tt.key))
		if resp.StatusCode != tt.status || resp.Header.Get(envoy.HeaderStatus) != tt.realStatus {
			t.Fatalf("%s: %d %v", tt.uri, resp.StatusCode, resp.Header)
		}
		var b map[string]string
		if err := json.Unmarshal([]byte(resp.Header.Get(envoy.HeaderBody)), &b); err != nil || b["error"] != tt.message {
			t.Fatalf("%s: x-keygate-body %q", tt.uri, resp.Header.Get(envoy.HeaderBody))
		}
	}
}

func TestHTTPNginx429(t *testing.T) {
	h := startHTTP(t, authz.Config{
		RateLimits: authz.RateLimits{FailedAuth: rateLimit(1)},
		ClientIP:   authz.ClientIP{Header: "x-real-ip", TrustedHops: 1},
	})
	hdr := map[string]string{"X-Original-URI": "/x", "X-Api-Key": "not-a-key", "X-Real-IP": "198.51.100.9"}
	h.do(t, "GET", "/nginx", hdr)
	resp, _ := h.do(t, "GET", "/nginx", hdr)
	if resp.StatusCode != 403 || resp.Header.Get(envoy.HeaderStatus) != "429" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("throttled through nginx dialect: %d %v", resp.StatusCode, resp.Header)
	}
	// Another client behind the same nginx is not throttled.
	k, _ := h.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: h.tenant, Name: "k"})
	if resp, _ := h.do(t, "GET", "/nginx", map[string]string{"X-Original-URI": "/x", "X-Api-Key": k.Secret.Reveal(), "X-Real-IP": "203.0.113.5"}); resp.StatusCode != 200 {
		t.Fatalf("another client behind the proxy: %d", resp.StatusCode)
	}
}

// TestHTTPPeerIsNotTheClient: over the HTTP listener the TCP peer is the
// proxy. Without client_ip, one guesser must not throttle everyone behind
// it, and an IP allowlist must not match the proxy's address.
func TestHTTPPeerIsNotTheClient(t *testing.T) {
	h := startHTTP(t, authz.Config{RateLimits: authz.RateLimits{FailedAuth: rateLimit(1)}})
	for i := 0; i < 3; i++ {
		h.do(t, "GET", "/forward", map[string]string{"X-Forwarded-Uri": "/x", "X-Api-Key": "guess"})
	}
	k, _ := h.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: h.tenant, Name: "k"})
	if resp, _ := h.do(t, "GET", "/forward", map[string]string{"X-Forwarded-Uri": "/x", "X-Api-Key": k.Secret.Reveal()}); resp.StatusCode != 200 {
		t.Fatalf("a valid key behind the same proxy as a guesser: %d", resp.StatusCode)
	}
	local, _ := h.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: h.tenant, Name: "l", AllowedCIDRs: []string{"127.0.0.0/8"}})
	if resp, _ := h.do(t, "GET", "/forward", map[string]string{"X-Forwarded-Uri": "/x", "X-Api-Key": local.Secret.Reveal()}); resp.StatusCode != 403 {
		t.Fatalf("an allowlist matched the proxy's loopback address: %d", resp.StatusCode)
	}
}

func TestHTTPForwardDialect(t *testing.T) {
	h := startHTTP(t, authz.Config{Policy: authz.Policy{Rules: []authz.Rule{{Name: "api", Host: "api.example.com", PathPrefix: "/api/"}}, DenyUnmatched: true}})
	k, _ := h.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: h.tenant, Name: "k"})
	fwd := map[string]string{"X-Forwarded-Uri": "/api/items", "X-Forwarded-Method": "DELETE", "X-Forwarded-Host": "api.example.com", "X-Api-Token": k.Secret.Reveal()}
	resp, _ := h.do(t, "GET", "/forward", fwd)
	if resp.StatusCode != 200 || resp.Header.Get("X-Api-Key-Id") != k.ID {
		t.Fatalf("forward allow: %d %v", resp.StatusCode, resp.Header)
	}
	fwd["X-Forwarded-Host"] = "other.example.com"
	resp, body := h.do(t, "GET", "/forward", fwd)
	if resp.StatusCode != 403 || !strings.Contains(body, "Access to this route is not allowed") {
		t.Fatalf("forward deny keeps its real status and body: %d %q", resp.StatusCode, body)
	}
}

func rateLimit(n int) ratelimit.Limit { return ratelimit.Limit{Requests: n, Window: time.Minute} }
