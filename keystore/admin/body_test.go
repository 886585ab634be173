package admin_test

import (
	"testing"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// TestBodiesExactNames: every route that takes a body accepts its fields
// only under their exact names and each at most once, at every level, and
// a refused body changes nothing. encoding/json alone would take "NAME"
// for "name" and the last of two "name"s.
func TestBodiesExactNames(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, o, k := f.seed()
	metered, err := f.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "metered", CreditsRemaining: new(int64(10))})
	if err != nil {
		t.Fatal(err)
	}
	key := "/v1/keys/" + k.ID
	tenant := `"tenant_id":"` + tn.ID + `"`
	tests := []struct {
		name, method, path, body string
		wantMsg                  string
	}{
		{"tenant upper case", "POST", "/v1/tenants", `{"NAME":"x"}`, `unknown field "NAME"`},
		{"tenant duplicate", "POST", "/v1/tenants", `{"name":"x","name":"y"}`, `duplicate field "name"`},
		{"org title case", "POST", "/v1/orgs", `{` + tenant + `,"Name":"x"}`, `unknown field "Name"`},
		{"org duplicate tenant", "POST", "/v1/orgs", `{` + tenant + `,"name":"x","tenant_id":"other"}`, `duplicate field "tenant_id"`},
		{"key upper case", "POST", "/v1/keys", `{` + tenant + `,"NAME":"x"}`, `unknown field "NAME"`},
		{"key Go field name", "POST", "/v1/keys", `{` + tenant + `,"name":"x","OrgID":"` + o.ID + `"}`, `unknown field "OrgID"`},
		{"key duplicate scopes", "POST", "/v1/keys", `{` + tenant + `,"name":"x","scopes":["a"],"scopes":["admin:*"]}`, `duplicate field "scopes"`},
		{"key duplicate metadata key", "POST", "/v1/keys", `{` + tenant + `,"name":"x","metadata":{"team":"a","team":"b"}}`, `duplicate field "metadata.team"`},
		{"key duplicate expires_in", "POST", "/v1/keys", `{` + tenant + `,"name":"x","expires_in":"1h","expires_in":"87600h"}`, `duplicate field "expires_in"`},
		{"import Kelvin-sign key", "POST", "/v1/keys/import", `{` + tenant + `,"name":"x","` + "\u212a" + `ey":"legacy-secret-raw-0000000000"}`, "unknown field \"\u212aey\""},
		{"import duplicate key", "POST", "/v1/keys/import", `{` + tenant + `,"name":"x","key":"legacy-secret-raw-0000000000","key":"legacy-secret-raw-1111111111"}`, `duplicate field "key"`},
		{"import duplicate metadata", "POST", "/v1/keys/import", `{` + tenant + `,"name":"x","key":"legacy-secret-raw-0000000000","metadata":{"a":"1","a":"2"}}`, `duplicate field "metadata.a"`},
		{"update upper case", "PATCH", key, `{"STATUS":"inactive"}`, `unknown field "STATUS"`},
		{"update duplicate status", "PATCH", key, `{"status":"inactive","status":"active"}`, `duplicate field "status"`},
		{"revoke option", "POST", key + "/revoke", `{"Force":true}`, `unknown field "Force"`},
		{"rotate upper case", "POST", key + "/rotate", `{"Grace_Period":"1h"}`, `unknown field "Grace_Period"`},
		{"rotate duplicate grace", "POST", key + "/rotate", `{"grace_period":"1h","grace_period":"2h"}`, `duplicate field "grace_period"`},
		{"credits upper case", "POST", "/v1/keys/" + metered.ID + "/credits", `{"SET":1000000}`, `unknown field "SET"`},
		{"credits duplicate", "POST", "/v1/keys/" + metered.ID + "/credits", `{"add":1,"add":1000000}`, `duplicate field "add"`},
	}
	before := f.snapshot()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(tt.method, tt.path, tt.body)
			got := r.errBody(t)
			if r.status != 400 || got.Code != "invalid_request" || got.Error != tt.wantMsg {
				t.Fatalf("%s %s %s = %d %s, want 400 invalid_request %q", tt.method, tt.path, tt.body, r.status, r.body, tt.wantMsg)
			}
		})
	}
	if after := f.snapshot(); after != before {
		t.Errorf("refused bodies changed the store:\nbefore %s\nafter  %s", before, after)
	}

	// The exact names still work on every route.
	for _, ok := range []struct{ method, path, body string }{
		{"POST", "/v1/tenants", `{"name":"x"}`},
		{"POST", "/v1/orgs", `{` + tenant + `,"name":"x"}`},
		{"POST", "/v1/keys", `{` + tenant + `,"name":"x","metadata":{"team":"a","Team":"b"}}`},
		{"POST", "/v1/keys/import", `{` + tenant + `,"name":"x","key":"legacy-secret-raw-0000000000"}`},
		{"PATCH", key, `{"status":"inactive"}`},
		{"POST", "/v1/keys/" + metered.ID + "/credits", `{"add":1}`},
		{"POST", key + "/rotate", `{"grace_period":"1h"}`},
		{"POST", key + "/revoke", `{}`},
	} {
		if r := f.do(ok.method, ok.path, ok.body); r.status >= 300 {
			t.Errorf("%s %s %s = %d %s", ok.method, ok.path, ok.body, r.status, r.body)
		}
	}
}

// snapshot renders every tenant, org and key, to compare before and after.
func (f *fixture) snapshot() string {
	f.t.Helper()
	var out string
	for _, path := range []string{"/v1/tenants", "/v1/orgs", "/v1/keys?limit=1000"} {
		r := f.do("GET", path, "")
		if r.status != 200 {
			f.t.Fatalf("GET %s = %d %s", path, r.status, r.body)
		}
		out += string(r.body)
	}
	return out
}
