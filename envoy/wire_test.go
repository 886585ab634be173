package envoy

import (
	"strings"
	"testing"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate/authz"
)

// sameAsResponse fails unless the wire encoding of d decodes to exactly
// the message Response builds (without metadata when metadata is false)
// and ResponseSize predicted its length.
func sameAsResponse(t *testing.T, d authz.Decision, metadata bool) {
	t.Helper()
	wire := AppendResponse(nil, &d, metadata)
	if n := ResponseSize(&d, metadata); n != len(wire) {
		t.Fatalf("ResponseSize = %d, encoding has %d bytes", n, len(wire))
	}
	var got authv3.CheckResponse
	if err := proto.Unmarshal(wire, &got); err != nil {
		t.Fatalf("encoding does not decode: %v", err)
	}
	want := Response(d)
	if !metadata {
		want.DynamicMetadata = nil
	}
	if !proto.Equal(&got, want) {
		t.Fatalf("encoding decodes to\n%v\nResponse builds\n%v", &got, want)
	}
	// Appending keeps what is already in the buffer.
	prefix := []byte("keep")
	if b := AppendResponse(prefix, &d, metadata); string(b[:4]) != "keep" || string(b[4:]) != string(wire) {
		t.Fatal("AppendResponse does not append")
	}
}

func TestWireMatchesResponse(t *testing.T) {
	cred := &authz.Credential{ID: "01a2", TenantID: "t-1", OrgID: "o-1", Environment: "live", Tier: "standard"}
	long := strings.Repeat("v", 300) // lengths past one varint byte
	cases := map[string]authz.Decision{
		"allow": {Kind: authz.KindAllow, Reason: authz.ReasonOK, Status: 200, Credential: cred, ID: 0xdeadbeef, Route: "api", Cost: 3,
			Set:             []authz.Header{{Name: "x-tenant-id", Value: "t-1"}, {Name: "x-scopes", Value: ""}, {Name: "x-long", Value: long}},
			Remove:          []string{"x-api-key", "x_tenant_id"},
			ResponseHeaders: []authz.Header{{Name: "ratelimit", Value: `"standard";r=9;t=1`}, {Name: "x-credits-remaining", Value: "0"}}},
		"allow public, nothing set": {Kind: authz.KindAllow, Reason: authz.ReasonOK, Status: 200, Route: "(unmatched)"},
		"allow shadow": {Kind: authz.KindAllow, Reason: authz.ReasonOK, Status: 200, WouldDeny: "rate_limited", Credential: &authz.Credential{ID: "k", TenantID: "t"},
			Remove: []string{"x-api-key"}},
		"deny 401": {Kind: authz.KindDeny, Reason: "invalid_api_key", Status: 401, ID: 1,
			ResponseHeaders: []authz.Header{{Name: "www-authenticate", Value: `ApiKey realm="keygate"`}, {Name: "content-type", Value: "application/json"}},
			Body:            `{"error":"invalid_api_key"}`},
		"deny 429 of a known key": {Kind: authz.KindDeny, Reason: "rate_limited", Status: 429, Credential: cred, ID: 1 << 63,
			ResponseHeaders: []authz.Header{{Name: "retry-after", Value: "1"}}, Body: long},
		"deny 503, no body":  {Kind: authz.KindDeny, Reason: "unavailable", Status: 503},
		"deny, odd status":   {Kind: authz.KindDeny, Reason: "x", Status: 418, Cost: -5},
		"reply":              {Kind: authz.KindReply, Reason: "introspection", Status: 200, Credential: cred, Body: `{"active":true}`, ResponseHeaders: []authz.Header{{Name: "content-type", Value: "application/json"}}},
		"unicode everywhere": {Kind: authz.KindAllow, Reason: authz.ReasonOK, Status: 200, Route: "ルート", Set: []authz.Header{{Name: "x-user-id", Value: "ユーザー"}}, Credential: &authz.Credential{ID: "é", TenantID: "ü"}},
		"zero decision":      {},
	}
	for name, d := range cases {
		t.Run(name, func(t *testing.T) {
			sameAsResponse(t, d, true)
			sameAsResponse(t, d, false)
		})
	}
}

// TestWireAllocations: the encoding itself allocates nothing; what a
// Check allocates on the wire path is the buffer gRPC pools.
func TestWireAllocations(t *testing.T) {
	d := authz.Decision{Kind: authz.KindAllow, Reason: authz.ReasonOK, Status: 200, Route: "api", ID: 7,
		Credential: &authz.Credential{ID: "k", TenantID: "t", Environment: "live", Tier: "standard"},
		Set:        []authz.Header{{Name: "x-tenant-id", Value: "t"}}, Remove: []string{"x-api-key"}}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = AppendResponse(buf[:0], &d, true) }); n != 0 {
		t.Fatalf("AppendResponse allocates %v times per answer", n)
	}
}

// FuzzWire: for any decision the core could hand over (strings are valid
// UTF-8: the store refuses anything else, and proto3 would refuse to
// encode it either way), the wire encoding means what Response says.
func FuzzWire(f *testing.F) {
	f.Add(uint8(1), 200, "x-tenant-id", "t-1", "x-api-key", "ratelimit", "1", "body", "route", "tenant", "org", uint64(5), 2)
	f.Add(uint8(0), 429, "", "", "", "retry-after", "", "", "", "", "", uint64(0), 0)
	f.Add(uint8(2), 200, "content-type", strings.Repeat("x", 200), "a", "b", "c", "{}", "r", "", "", uint64(1<<40), -1)
	f.Fuzz(func(t *testing.T, kind uint8, status int, name, value, remove, rname, rvalue, body, route, tenant, org string, id uint64, cost int) {
		for _, s := range []string{name, value, remove, rname, rvalue, body, route, tenant, org} {
			if !utf8.ValidString(s) {
				return
			}
		}
		d := authz.Decision{Kind: authz.Kind(kind % 3), Reason: authz.Reason(route), Status: status, ID: id, Route: route, Cost: cost, Body: body,
			Set: []authz.Header{{Name: name, Value: value}}, Remove: []string{remove}, ResponseHeaders: []authz.Header{{Name: rname, Value: rvalue}}}
		if tenant != "" {
			d.Credential = &authz.Credential{ID: name, TenantID: tenant, OrgID: org, Tier: value}
		}
		sameAsResponse(t, d, true)
		sameAsResponse(t, d, false)
	})
}
