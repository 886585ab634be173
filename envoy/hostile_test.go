package envoy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
)

// TestHostileInput sends what an attacker would through the real gRPC
// server: huge and numerous headers, many credentials at once, bytes that
// split or disguise a key, and path tricks against the route rules. Each
// gets the right refusal, no request errors out, and nothing is allowed
// that should not be.
func TestHostileInput(t *testing.T) {
	h := start(t, authz.Config{Policy: authz.Policy{Rules: []authz.Rule{
		{Name: "public", PathPrefix: "/public/", Public: true},
		{Name: "admin", PathPrefix: "/admin", Scopes: []string{"admin"}},
	}}})
	k := h.key(t, keystore.KeySpec{})
	many := map[string]string{"x-api-key": k.Secret.Reveal()}
	for i := 0; i < 5000; i++ {
		many[fmt.Sprintf("x-filler-%d", i)] = "v"
	}
	tests := []struct {
		name    string
		path    string
		headers map[string]string
		status  int // 0: allowed
		message string
	}{
		{"1 MB key", "/x", map[string]string{"x-api-key": strings.Repeat("a", 1<<20)}, 401, "Invalid API key"},
		{"1 MB other header beside a good key", "/x", map[string]string{"x-api-key": k.Secret.Reveal(), "x-big": strings.Repeat("b", 1<<20)}, 0, ""},
		{"5000 headers", "/x", many, 0, ""},
		{"all three credential headers", "/x", map[string]string{"authorization": "Bearer " + k.Secret.Reveal(), "x-api-key": k.Secret.Reveal(), "x-api-token": k.Secret.Reveal()}, 401, "Invalid API key"},
		{"repeated header joined", "/x", map[string]string{"x-api-key": k.Secret.Reveal() + "," + k.Secret.Reveal()}, 401, "Invalid API key"},
		{"NUL inside", "/x", map[string]string{"x-api-key": k.Secret.Reveal()[:10] + "\x00" + k.Secret.Reveal()[10:]}, 401, "Invalid API key"},
		{"NUL appended", "/x", map[string]string{"x-api-key": k.Secret.Reveal() + "\x00"}, 401, "Invalid API key"},
		{"CRLF injection", "/x", map[string]string{"x-api-key": k.Secret.Reveal() + "\r\nx-tenant-id: evil"}, 401, "Invalid API key"},
		{"Cyrillic look-alike", "/x", map[string]string{"x-api-key": strings.Replace(k.Secret.Reveal(), "a", "а", 1)}, 401, "Invalid API key"},
		{"fullwidth prefix", "/x", map[string]string{"x-api-key": "ａｋ" + k.Secret.Reveal()[2:]}, 401, "Invalid API key"},
		{"dot-dot out of public", "/public/../admin/users", map[string]string{"x-api-key": k.Secret.Reveal()}, 403, "missing required scope: admin"},
		{"encoded dot-dot", "/public/%2e%2e/admin", map[string]string{"x-api-key": k.Secret.Reveal()}, 403, "missing required scope: admin"},
		{"double slash", "//admin//users", map[string]string{"x-api-key": k.Secret.Reveal()}, 403, "missing required scope: admin"},
		{"encoded letter", "/%61dmin", map[string]string{"x-api-key": k.Secret.Reveal()}, 403, "missing required scope: admin"},
		{"dot-dot without key", "/public/../admin", nil, 401, "API key is required"},
		{"a case that reaches another rule is refused", "/ADMIN", map[string]string{"x-api-key": k.Secret.Reveal()}, 400, "letter case that change the route"},
		{"query cannot carry a key", "/x?api_key=" + k.Secret.Reveal(), nil, 401, "API key is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := checkRequest(tt.headers)
			req.Attributes.Request.Http.Path = tt.path
			resp := h.check(t, req)
			if tt.status == 0 {
				if resp.GetOkResponse() == nil {
					t.Fatalf("refused: %v", resp.GetDeniedResponse())
				}
				return
			}
			den := resp.GetDeniedResponse()
			if den == nil || int(den.GetStatus().GetCode()) != tt.status || !strings.Contains(den.GetBody(), tt.message) {
				t.Fatalf("got %v, want %d %q", resp, tt.status, tt.message)
			}
			if strings.Contains(den.GetBody(), k.Secret.Reveal()) {
				t.Fatal("the answer echoes the key")
			}
		})
	}
}
