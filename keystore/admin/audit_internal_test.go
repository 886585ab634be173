package admin

import (
	"fmt"
	"testing"
	"time"
)

func TestActionOf(t *testing.T) {
	for route, want := range map[string]string{
		"POST /v1/tenants":                         "tenants.create",
		"GET /v1/tenants":                          "tenants.list",
		"GET /v1/tenants/{id}":                     "tenants.get",
		"PUT /v1/tenants/{tenant}/users/{user}":    "users.put",
		"DELETE /v1/tenants/{tenant}/users/{user}": "users.delete",
		"GET /v1/tenants/{tenant}/users":           "users.list",
		"POST /v1/orgs":                            "orgs.create",
		"POST /v1/keys":                            "keys.create",
		"POST /v1/keys/import":                     "keys.import",
		"PATCH /v1/keys/{id}":                      "keys.update",
		"POST /v1/keys/{id}/revoke":                "keys.revoke",
		"POST /v1/keys/{id}/rotate":                "keys.rotate",
		"POST /v1/keys/{id}/credits":               "keys.credits",
		"DELETE /v1/keys/{id}":                     "keys.delete",
		"POST /v1/admin-tokens":                    "admin_tokens.create",
		"GET /v1/admin-tokens":                     "admin_tokens.list",
		"DELETE /v1/admin-tokens/{token}":          "admin_tokens.delete",
		"POST /v1/admin/tokens/{id}/revoke":        "admin_tokens.revoke",
		"GET /v1/keys/{id}/usage":                  "keys.usage",
		"GET /v1/usage":                            "usage.list",
		"GET /v1/audit":                            "audit.list",
		"GET /metrics":                             "metrics.read",
		"":                                         actionNoRoute,
	} {
		if got := actionOf(route); got != want {
			t.Errorf("actionOf(%q) = %q, want %q", route, got, want)
		}
	}
}

func TestPathTargets(t *testing.T) {
	for _, tc := range []struct {
		route, path string
		want        map[string]string
	}{
		{"POST /v1/keys/{id}/revoke", "/v1/keys/k%2F1/revoke", map[string]string{"key_id": "k/1"}},
		{"PUT /v1/tenants/{tenant}/users/{user}", "/v1/tenants/t1/users/ada%40example.com", map[string]string{"tenant_id": "t1", "user_id": "ada@example.com"}},
		{"DELETE /v1/admin-tokens/{token}", "/v1/admin-tokens/at1", map[string]string{"admin_token_id": "at1"}},
		{"POST /v1/widgets/{id}/spin", "/v1/widgets/w1/spin", map[string]string{"widget_id": "w1"}},
		{"GET /v1/orgs/{id}", "/v1/orgs/o1", map[string]string{"org_id": "o1"}},
		{"POST /v1/keys", "/v1/keys", map[string]string{}},
		{"POST /v1/keys/{id}/revoke", "/v1/keys/a/b/revoke", nil},
	} {
		if got := pathTargets(tc.route, tc.path); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("pathTargets(%q, %q) = %v, want %v", tc.route, tc.path, got, tc.want)
		}
	}
	long := make([]byte, 1000)
	for i := range long {
		long[i] = 'a'
	}
	if got := pathTargets("DELETE /v1/keys/{id}", "/v1/keys/"+string(long)); len(got["key_id"]) > maxTargetLen+len("…") {
		t.Errorf("a long id is kept whole: %d bytes", len(got["key_id"]))
	}
}

func TestLocationTargets(t *testing.T) {
	for loc, want := range map[string]map[string]string{
		"/v1/keys/k1":                   {"key_id": "k1"},
		"/v1/tenants/t1/users/ada%2Fb":  {"tenant_id": "t1", "user_id": "ada/b"},
		"/v1/admin-tokens/at1":          {"admin_token_id": "at1"},
		"/v1/orgs/o1":                   {"org_id": "o1"},
		"https://x.example/v1/keys/k2?": {"key_id": "k2"},
	} {
		if got := locationTargets(loc); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("locationTargets(%q) = %v, want %v", loc, got, want)
		}
	}
}

func TestRecorded(t *testing.T) {
	for _, tc := range []struct {
		method, route string
		status        int
		want          bool
	}{
		{"POST", "POST /v1/keys", 201, true},
		{"DELETE", "DELETE /v1/keys/{id}", 500, true},
		{"PATCH", "", 404, true},
		{"GET", "GET /v1/keys", 200, false},
		{"GET", "GET /v1/keys/{id}", 404, false},
		{"GET", "GET /v1/keys", 401, true},
		{"GET", "GET /v1/audit", 403, true},
		{"HEAD", "GET /v1/keys", 401, true},
		{"GET", "GET /healthz", 200, false},
		{"GET", "GET /readyz", 503, false},
	} {
		if got := recorded(tc.method, tc.route, tc.status); got != tc.want {
			t.Errorf("recorded(%s, %q, %d) = %v", tc.method, tc.route, tc.status, got)
		}
	}
}

func TestTokenBucket(t *testing.T) {
	b := newTokenBucket(10, 3)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if !b.take(now) {
			t.Fatalf("burst %d refused", i)
		}
	}
	if b.take(now) {
		t.Fatal("beyond the burst")
	}
	if !b.take(now.Add(100 * time.Millisecond)) {
		t.Fatal("not refilled at the rate")
	}
}
