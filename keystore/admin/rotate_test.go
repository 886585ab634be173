package admin_test

import (
	"strings"
	"testing"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// TestRotateGraceLimits: a grace period over the maximum is a 400 naming
// the maximum; in a full org a rotation with grace is a 409 saying what to
// do instead, and one without grace goes through.
func TestRotateGraceLimits(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, o, k := f.seed()
	r := f.do("POST", "/v1/keys/"+k.ID+"/rotate", `{"grace_period":"87600h"}`)
	if got := r.errBody(t); r.status != 400 || !strings.Contains(got.Error, "maximum of 168h") {
		t.Fatalf("grace 87600h = %d %s, want 400 naming the maximum of 168h", r.status, r.body)
	}
	for range 4 {
		if _, err := f.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, OrgID: o.ID, Name: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	r = f.do("POST", "/v1/keys/"+k.ID+"/rotate", `{"grace_period":"1h"}`)
	if got := r.errBody(t); r.status != 409 || got.Code != "org_key_limit" || !strings.Contains(got.Error, "rotate without a grace period") {
		t.Fatalf("grace in a full org = %d %s, want 409 org_key_limit saying to rotate without grace", r.status, r.body)
	}
	if r := f.do("POST", "/v1/keys/"+k.ID+"/rotate", ""); r.status != 201 {
		t.Fatalf("rotation without grace in a full org = %d %s", r.status, r.body)
	}
}
