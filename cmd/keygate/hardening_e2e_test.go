package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// The hardening tests run the attacks that once worked against the real
// binary, over its real gRPC and HTTP listeners.

const hardeningConfig = `reload_interval: -1s
policy:
  unmatched: deny
  introspection_path: /api/v2/me
client_ip: {header: x-forwarded-for, trusted_hops: 1}
rate_limits:
  tiers:
    standard: {requests: 5, window: 1m}
  failed_auth: {requests: 3, window: 1m}
routes:
  - {name: health, path: /healthz, public: true}
  - {name: well-known, path_prefix: /.well-known/, public: true}
  - {name: vault, path_pattern: "/api/v2/vault/**", scopes: ["vault:write"]}
  - {name: admin, path_pattern: "/admin/**", scopes: [admin], case_insensitive: true}
  - {name: api-host, host: api.example.com, path_prefix: /h/, scopes: [admin]}
  - {name: api, path_prefix: /api/}
`

type hardened struct {
	s      *server
	key    string
	client authv3.AuthorizationClient
}

func startHardened(t *testing.T) hardened {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	writeFile(t, cfg, hardeningConfig)
	s := startWithConfig(t, dir, cfg)
	key, client := keyAndClient(t, s)
	return hardened{s, key, client}
}

func (h hardened) check(t *testing.T, method, host, path string, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := h.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Host: host, Headers: headers},
	}}})
	if err != nil {
		t.Fatalf("Check %s: %v", path, err)
	}
	return resp
}

// TestPublicRouteStripsKeyE2E: a valid key sent to a public route, in every
// source and in underscore spellings, is named in headers_to_remove.
func TestPublicRouteStripsKeyE2E(t *testing.T) {
	h := startHardened(t)
	resp := h.check(t, "GET", "api.example.com", "/healthz", map[string]string{
		"x-api-key": h.key, "authorization": "Bearer " + h.key, "x_api_token": h.key, "x_tenant_id": "evil", "x-org_id": "evil",
	})
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("public route: %s", answer(resp))
	}
	remove := strings.Join(ok.GetHeadersToRemove(), ",") + ","
	for _, n := range []string{"x-api-key", "authorization", "x_api_token", "x_tenant_id", "x-org_id", "x-tenant-id"} {
		if !strings.Contains(remove, n+",") {
			t.Errorf("headers_to_remove %v lacks %s", ok.GetHeadersToRemove(), n)
		}
	}
	if len(ok.GetHeaders()) != 0 {
		t.Fatalf("a public route set identity headers: %v", ok.GetHeaders())
	}
	// Through /envoy (http_service) too.
	r := httpGet(t, h.s.httpAddr+"/envoy/healthz", map[string]string{"X-Api-Key": h.key})
	if r.StatusCode != 200 || !strings.Contains(r.Header.Get("X-Envoy-Auth-Headers-To-Remove"), "x-api-key") {
		t.Fatalf("/envoy public route: %d, remove %q", r.StatusCode, r.Header.Get("X-Envoy-Auth-Headers-To-Remove"))
	}
}

// TestPathAndHostVariantsE2E: the spellings that once reached a stricter
// rule's resource with no key, or with any key, are refused or meet that
// rule.
func TestPathAndHostVariantsE2E(t *testing.T) {
	h := startHardened(t)
	for _, tt := range []struct{ host, path, want string }{
		{"", "/.well-known/..%2Fadmin", "400 invalid_path"},
		{"", "/.well-known/..%5Cadmin", "400 invalid_path"},
		{"", `/.well-known/..\admin`, "400 invalid_path"},
		{"", "/.well-known/..%252Fadmin", "400 invalid_path"},
		{"", "/Admin/x", scopeDenied},
		{"", "/ADMIN/X", scopeDenied},
		{"", "/api/v2/vault;a/s", "400 invalid_path"},
		{"", "/api/v2/vault%3Ba/s", "400 invalid_path"},
		{"", "/api%2Fv2/vault/s", "400 invalid_path"},
		{"", "/api/v2/vault/s", scopeDenied},
		{"", "/API/v2/vault/s", "400 invalid_path"},
		{"", "/api/v2/items/ABC", "allow"},
		{"api.example.com.", "/h/x", scopeDenied},
		{"API.EXAMPLE.COM.:443", "/h/x", scopeDenied},
		{"", "/api/v1/items", "allow"},
	} {
		resp := h.check(t, "GET", tt.host, tt.path, map[string]string{"x-api-key": h.key})
		if got := answer(resp); got != tt.want {
			t.Errorf("%s%s = %s, want %s", tt.host, tt.path, got, tt.want)
		}
	}
	// The same through the HTTP dialects.
	r := httpGet(t, h.s.httpAddr+"/forward", map[string]string{"X-Forwarded-Uri": "/.well-known/..%2Fadmin"})
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != 400 || !strings.Contains(string(body), "encoded slashes") {
		t.Fatalf("/forward encoded slash: %d %s", r.StatusCode, body)
	}
}

// TestIntrospectionPaysE2E: /me answers the principal and spends the route's
// cost; past the tier's budget it is 429.
func TestIntrospectionPaysE2E(t *testing.T) {
	h := startHardened(t)
	for i := range 5 {
		resp := h.check(t, "GET", "", "/api/v2/me", map[string]string{"x-api-key": h.key})
		d := resp.GetDeniedResponse()
		var p map[string]any
		if d.GetStatus().GetCode() != 200 || json.Unmarshal([]byte(d.GetBody()), &p) != nil || p["tenant_id"] == nil {
			t.Fatalf("/me %d: %s %q", i+1, answer(resp), d.GetBody())
		}
	}
	if got := answer(h.check(t, "GET", "", "/api/v2/me", map[string]string{"x-api-key": h.key})); got != "429 rate_limited" {
		t.Fatalf("6th /me: %s", got)
	}
	if got := answer(h.check(t, "GET", "", "/api/v1/x", map[string]string{"x-api-key": h.key})); got != "429 rate_limited" {
		t.Fatalf("after five /me the budget is spent, got %s", got)
	}
}

// TestRepeatedRoutingHeadersE2E: nginx passing two X-Original-URI (the
// proxy's and a client's) is refused, not decided on the first.
func TestRepeatedRoutingHeadersE2E(t *testing.T) {
	h := startHardened(t)
	req, err := http.NewRequest("GET", h.s.httpAddr+"/nginx", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Add("X-Original-URI", "/healthz")
	req.Header.Add("X-Original-URI", "/admin/x")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Keygate-Status") != "400" || !strings.Contains(resp.Header.Get("X-Keygate-Body"), "more than once") {
		t.Fatalf("repeated X-Original-URI: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestClientAddressWithPortThrottledE2E: an X-Forwarded-For entry written
// with a port still counts against its address, and one that cannot be read
// shares one budget rather than escaping the throttle.
func TestClientAddressWithPortThrottledE2E(t *testing.T) {
	h := startHardened(t)
	for _, tt := range []struct{ xff, then string }{
		{"5.5.5.5:80", "5.5.5.5:81"},
		{"[2001:db8::5]:443", "2001:db8::5"},
		{"garbage", "unknown"},
	} {
		guess := func(xff string) string {
			return answer(h.check(t, "GET", "", "/api/x", map[string]string{"x-api-key": "ak_live_guess", "x-forwarded-for": xff}))
		}
		for i := range 3 {
			if got := guess(tt.xff); got != "401 invalid_api_key" {
				t.Fatalf("guess %d from %s: %s", i+1, tt.xff, got)
			}
		}
		if got := guess(tt.then); got != "429 rate_limited" {
			t.Fatalf("after 3 guesses from %s, %s: %s", tt.xff, tt.then, got)
		}
	}
}

func httpGet(t *testing.T, url string, headers map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
