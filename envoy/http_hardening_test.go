package envoy_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/keystore"
)

// TestHTTPEnvoyPublicRouteStripsCredentials: through /envoy, a public route
// names every credential header present and every underscore twin in
// x-envoy-auth-headers-to-remove.
func TestHTTPEnvoyPublicRouteStripsCredentials(t *testing.T) {
	h := startHTTP(t, authz.Config{Policy: authz.Policy{Rules: []authz.Rule{{Name: "health", Path: "/healthz", Public: true}}}})
	k, _ := h.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: h.tenant, Name: "k"})
	resp, _ := h.raw(t, "GET", "/envoy/healthz", [][2]string{
		{"X-Api-Key", k.Secret.Reveal()}, {"Authorization", "Bearer " + k.Secret.Reveal()}, {"X_Tenant_Id", "evil"}, {"X-Api_Token", "x"},
	})
	if resp.StatusCode != 200 {
		t.Fatalf("public route: %d", resp.StatusCode)
	}
	remove := map[string]bool{}
	for _, n := range strings.Split(resp.Header.Get("X-Envoy-Auth-Headers-To-Remove"), ",") {
		remove[strings.TrimSpace(n)] = true
	}
	for _, n := range []string{"x-api-key", "authorization", "x_tenant_id", "x-api_token", "x-tenant-id", "x-scopes"} {
		if !remove[n] {
			t.Errorf("x-envoy-auth-headers-to-remove lacks %s: %v", n, remove)
		}
	}
}

// TestHTTPRepeatedRoutingHeaders: two copies of the original URI, method or
// host, or no URI at all, are refused (400), in the nginx dialect as a 403
// carrying 400.
func TestHTTPRepeatedRoutingHeaders(t *testing.T) {
	h := startHTTP(t, authz.Config{Policy: authz.Policy{Rules: []authz.Rule{{Name: "x", Path: "/x", Public: true}}}})
	for _, tt := range []struct {
		name, path string
		headers    [][2]string
		status     int
	}{
		{"nginx uri", "/nginx", [][2]string{{"X-Original-URI", "/x"}, {"X-Original-URI", "/admin"}}, 403},
		{"nginx method", "/nginx", [][2]string{{"X-Original-URI", "/x"}, {"X-Original-Method", "GET"}, {"X-Original-Method", "DELETE"}}, 403},
		{"forward uri", "/forward", [][2]string{{"X-Forwarded-Uri", "/x"}, {"X-Forwarded-Uri", "/admin"}}, 400},
		{"forward method", "/forward", [][2]string{{"X-Forwarded-Uri", "/x"}, {"X-Forwarded-Method", "GET"}, {"X-Forwarded-Method", "POST"}}, 400},
		{"forward host", "/forward", [][2]string{{"X-Forwarded-Uri", "/x"}, {"X-Forwarded-Host", "a.example.com"}, {"X-Forwarded-Host", "b.example.com"}}, 400},
		{"nginx without uri", "/nginx", [][2]string{{"X-Original-Method", "GET"}}, 403},
		{"forward without uri", "/forward", [][2]string{{"X-Forwarded-Method", "GET"}}, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.raw(t, "GET", tt.path, tt.headers)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			if tt.path == "/nginx" {
				body = resp.Header.Get(envoy.HeaderBody)
				if resp.Header.Get(envoy.HeaderStatus) != "400" {
					t.Fatalf("x-keygate-status %q", resp.Header.Get(envoy.HeaderStatus))
				}
			}
			if !strings.Contains(body, "a routing header is missing or was sent more than once") {
				t.Fatalf("body %q", body)
			}
		})
		// One copy of each is fine.
	}
	if resp, _ := h.raw(t, "GET", "/nginx", [][2]string{{"X-Original-URI", "/x"}, {"X-Original-Method", "GET"}}); resp.StatusCode != 200 {
		t.Fatalf("single routing headers: %d", resp.StatusCode)
	}
}

// TestHTTPIntrospectionIsNeverAnAllow: the /me reply reaches the client in
// every dialect and none reads it as an allow (which would send the request
// on to the backend without an identity).
func TestHTTPIntrospectionIsNeverAnAllow(t *testing.T) {
	h := startHTTP(t, authz.Config{Policy: authz.Policy{IntrospectionPath: "/me"}})
	k, _ := h.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: h.tenant, Name: "k"})
	for _, tt := range []struct {
		name, path string
		headers    [][2]string
		status     int
		inHeader   bool // the principal travels in x-keygate-body
	}{
		{"envoy", "/envoy/me", nil, 203, false},
		{"nginx", "/nginx", [][2]string{{"X-Original-URI", "/me"}}, 403, true},
		{"forward", "/forward", [][2]string{{"X-Forwarded-Uri", "/me"}}, 403, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.raw(t, "GET", tt.path, append(tt.headers, [2]string{"X-Api-Key", k.Secret.Reveal()}))
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.path != "/envoy/me" && resp.Header.Get(envoy.HeaderStatus) != "200" {
				t.Fatalf("x-keygate-status %q, want 200", resp.Header.Get(envoy.HeaderStatus))
			}
			if tt.inHeader {
				body = resp.Header.Get(envoy.HeaderBody)
			}
			var p map[string]any
			if err := json.Unmarshal([]byte(body), &p); err != nil || p["api_key_id"] != k.ID {
				t.Fatalf("principal %q: %v", body, err)
			}
			if resp.Header.Get("X-Tenant-Id") != "" {
				t.Fatal("the reply carries upstream identity headers")
			}
		})
	}
}
