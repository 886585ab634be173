package admin_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// TestAllowedCIDRs: the IP allowlist goes through create, import, get and
// PATCH as plain JSON, canonicalized by the store.
func TestAllowedCIDRs(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, _, _ := f.seed()
	keyBody := func(extra string) string {
		return `{"tenant_id":"` + tn.ID + `","name":"n"` + extra + `}`
	}
	get := func(id string) keystore.Key {
		t.Helper()
		r := f.do("GET", "/v1/keys/"+id, "")
		if r.status != 200 {
			t.Fatalf("get key: %d %s", r.status, r.body)
		}
		var k keystore.Key
		r.decode(t, &k)
		return k
	}

	r := f.do("POST", "/v1/keys", keyBody(`,"allowed_cidrs":["192.0.2.7","10.1.2.3/8","::ffff:192.0.2.7"]`))
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var ck keystore.CreatedKey
	r.decode(t, &ck)
	want := []string{"192.0.2.7/32", "10.0.0.0/8"}
	if d := cmp.Diff(ck.AllowedCIDRs, want); d != "" {
		t.Errorf("created allowed_cidrs (-got +want):\n%s", d)
	}
	if d := cmp.Diff(get(ck.ID).AllowedCIDRs, want); d != "" {
		t.Errorf("allowed_cidrs after get (-got +want):\n%s", d)
	}

	r = f.do("POST", "/v1/keys/import", keyBody(`,"key":"legacy_key_0123456789","allowed_cidrs":["2001:db8::1"]`))
	if r.status != 201 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	var im keystore.Key
	r.decode(t, &im)
	if d := cmp.Diff(get(im.ID).AllowedCIDRs, []string{"2001:db8::1/128"}); d != "" {
		t.Errorf("imported allowed_cidrs (-got +want):\n%s", d)
	}

	r = f.do("PATCH", "/v1/keys/"+ck.ID, `{"allowed_cidrs":["2001:db8::/32"]}`)
	if r.status != 200 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	if d := cmp.Diff(get(ck.ID).AllowedCIDRs, []string{"2001:db8::/32"}); d != "" {
		t.Errorf("allowed_cidrs after patch (-got +want):\n%s", d)
	}
	// A PATCH of another field leaves the list alone.
	if r := f.do("PATCH", "/v1/keys/"+ck.ID, `{"name":"renamed"}`); r.status != 200 {
		t.Fatalf("rename: %d %s", r.status, r.body)
	}
	if d := cmp.Diff(get(ck.ID).AllowedCIDRs, []string{"2001:db8::/32"}); d != "" {
		t.Errorf("allowed_cidrs after rename (-got +want):\n%s", d)
	}

	r = f.do("PATCH", "/v1/keys/"+ck.ID, `{"allowed_cidrs":[]}`)
	if r.status != 200 {
		t.Fatalf("clear: %d %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), "allowed_cidrs") {
		t.Errorf("cleared key still shows allowed_cidrs: %s", r.body)
	}
	if got := get(ck.ID).AllowedCIDRs; got != nil {
		t.Errorf("allowed_cidrs after clear = %q", got)
	}

	tests := []struct {
		name, method, path, body, bad string
	}{
		{"create", "POST", "/v1/keys", keyBody(`,"allowed_cidrs":["10.0.0.0/8","10.0.0.0/33"]`), "10.0.0.0/33"},
		{"create host name", "POST", "/v1/keys", keyBody(`,"allowed_cidrs":["example.com"]`), "example.com"},
		{"import", "POST", "/v1/keys/import", keyBody(`,"key":"another_legacy_key_0123","allowed_cidrs":["10.0.0.1:80"]`), "10.0.0.1:80"},
		{"patch", "PATCH", "/v1/keys/" + im.ID, `{"allowed_cidrs":["300.0.0.1"]}`, "300.0.0.1"},
		{"not a list", "PATCH", "/v1/keys/" + im.ID, `{"allowed_cidrs":"10.0.0.0/8"}`, "allowed_cidrs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(tt.method, tt.path, tt.body)
			if e := r.errBody(t); r.status != 400 || e.Code != "invalid_request" || !strings.Contains(e.Error, tt.bad) {
				t.Errorf("%d %s, want 400 invalid_request naming %q", r.status, r.body, tt.bad)
			}
		})
	}
	// The refused PATCHes changed nothing.
	if d := cmp.Diff(get(im.ID).AllowedCIDRs, []string{"2001:db8::1/128"}); d != "" {
		t.Errorf("allowed_cidrs after refused patches (-got +want):\n%s", d)
	}
}
