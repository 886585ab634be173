package authz_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore/apikey"
)

type decided struct {
	id  string
	use authz.Use
}

// usageRecorder records every KeyDecided; KeyUsed must not be called
// beside it.
type usageRecorder struct {
	t   *testing.T
	got []decided
}

func (r *usageRecorder) KeyUsed(*authz.Credential, time.Time) {
	r.t.Error("KeyUsed called on a UsageRecorder")
}

func (r *usageRecorder) KeyDecided(c *authz.Credential, _ time.Time, u authz.Use) {
	r.got = append(r.got, decided{c.ID, u})
}

// TestUsageRecorderOncePerKnownKey: every decision about a known key is
// told once, with the status answered; unknown keys, missing keys and
// public routes are not.
func TestUsageRecorderOncePerKnownKey(t *testing.T) {
	w := newWorld(t)
	r := &usageRecorder{t: t}
	e := w.engine(t, authz.Config{Recorder: r, Policy: authz.Policy{
		IntrospectionPath: "/me",
		Rules: []authz.Rule{
			{Name: "admin", PathPrefix: "/admin", Scopes: []string{"admin"}},
			{Name: "shadow", PathPrefix: "/shadow", Scopes: []string{"admin"}, Shadow: true},
			{Name: "public", PathPrefix: "/public", Public: true},
		},
	}})
	bogus, _ := apikey.MustFormat("ak").Generate("live")
	key := func(k string) map[string]string { return map[string]string{"x-api-key": k} }
	for _, c := range []struct {
		path    string
		headers map[string]string
	}{
		{"/v1/things", key(w.active.Secret.Reveal())},
		{"/admin/x", key(w.active.Secret.Reveal())},
		{"/shadow/x", key(w.active.Secret.Reveal())},
		{"/me", key(w.active.Secret.Reveal())},
		{"/v1/things", key(w.revoked.Secret.Reveal())},
		{"/v1/things", key(bogus)},
		{"/v1/things", nil},
		{"/public/x", key(w.active.Secret.Reveal())},
	} {
		decideAt(t, e, c.path, c.headers)
	}
	want := []decided{
		{w.active.ID, authz.Use{Status: 200, Admitted: true}},
		{w.active.ID, authz.Use{Status: 403}},
		{w.active.ID, authz.Use{Status: 200}}, // a shadow allow: not admitted, so no last-used time
		{w.active.ID, authz.Use{Status: 200, Admitted: true}},
		{w.revoked.ID, authz.Use{Status: 401}},
	}
	if diff := cmp.Diff(r.got, want, cmp.AllowUnexported(decided{})); diff != "" {
		t.Fatalf("decisions told (-got +want):\n%s", diff)
	}
}

func decideAt(t *testing.T, e *authz.Engine, path string, headers map[string]string) authz.Decision {
	t.Helper()
	d, err := e.Decide(t.Context(), &authz.Request{Method: "GET", Path: path, Headers: headers})
	if err != nil {
		t.Fatalf("Decide %s: %v", path, err)
	}
	return d
}
