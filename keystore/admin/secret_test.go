package admin_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keygate/keygate/keystore/admin"
	"github.com/keygate/keygate/keystore/apikey"
)

// TestNewKeyAnswerRevealsSecret: keystore.CreatedKey encodes its secret
// redacted, so the create and rotate answers reveal it on purpose: their
// "key" is the raw key, whose hash finds the new key, and nothing else the
// API answers carries it.
func TestNewKeyAnswerRevealsSecret(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, _, k := f.seed()
	if b, err := json.Marshal(k); err != nil || strings.Contains(string(b), k.Secret.Reveal()) || !strings.Contains(string(b), `"key":"ak_live_`) {
		t.Fatalf("json.Marshal(CreatedKey) = %s, %v; want the secret redacted", b, err)
	}
	check := func(what string, r response, status int) string {
		t.Helper()
		if r.status != status {
			t.Fatalf("%s: %d %s", what, r.status, r.body)
		}
		var got struct {
			ID  string `json:"id"`
			Key string `json:"key"`
		}
		r.decode(t, &got)
		if _, err := apikey.MustFormat("ak").Parse(got.Key); err != nil {
			t.Fatalf("%s: key %q: %v", what, got.Key, err)
		}
		cred, found, err := f.store.LookupKey(t.Context(), apikey.HashOf(got.Key))
		if err != nil || !found || cred.ID != got.ID {
			t.Fatalf("%s: the answered key finds %+v, %v, %v; want key %s", what, cred, found, err, got.ID)
		}
		return got.Key
	}
	created := check("create", f.do("POST", "/v1/keys", `{"tenant_id":"`+tn.ID+`","name":"n"}`), 201)
	rotated := check("rotate", f.do("POST", "/v1/keys/"+k.ID+"/rotate", ""), 201)
	if created == rotated {
		t.Fatal("create and rotate answered the same key")
	}
	r := f.do("GET", "/v1/keys?tenant_id="+tn.ID, "")
	for _, s := range []string{created, rotated, k.Secret.Reveal()} {
		if strings.Contains(string(r.body), s) {
			t.Errorf("a listing shows a secret")
		}
	}
}
