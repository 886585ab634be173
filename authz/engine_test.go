package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// world is a real store in a temp dir with one key in every state.
type world struct {
	store                                    *keystore.Store
	now                                      time.Time
	tenant, org                              string
	active, orgKey, expired, revoked, paused keystore.CreatedKey
	graceOld                                 keystore.CreatedKey
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{now: t0}
	s, err := keystore.Open(filepath.Join(t.TempDir(), "keygate.db"), keystore.Options{Now: func() time.Time { return w.now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	w.store = s
	tn, _ := s.CreateTenant(t.Context(), "Acme")
	og, _ := s.CreateOrg(t.Context(), tn.ID, "Acme EU")
	w.tenant, w.org = tn.ID, og.ID
	mk := func(spec keystore.KeySpec) keystore.CreatedKey {
		t.Helper()
		spec.TenantID = tn.ID
		if spec.Name == "" {
			spec.Name = "key"
		}
		k, err := s.CreateKey(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	w.active = mk(keystore.KeySpec{Name: "Production Backend", UserID: "user-1", Scopes: []string{"vault:read", "chat:write"}, Tier: "enterprise"})
	w.orgKey = mk(keystore.KeySpec{OrgID: og.ID, Environment: "test"})
	soon := t0.Add(time.Minute)
	w.expired = mk(keystore.KeySpec{ExpiresAt: &soon})
	w.revoked = mk(keystore.KeySpec{})
	if _, err := s.RevokeKey(t.Context(), w.revoked.ID); err != nil {
		t.Fatal(err)
	}
	w.paused = mk(keystore.KeySpec{})
	if _, err := s.UpdateKey(t.Context(), w.paused.ID, keystore.KeyUpdate{Status: new(authz.StatusInactive)}); err != nil {
		t.Fatal(err)
	}
	w.graceOld = mk(keystore.KeySpec{})
	if _, err := s.RotateKey(t.Context(), w.graceOld.ID, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	w.now = t0.Add(10 * time.Minute) // past the expiry, inside the grace period
	return w
}

func (w *world) engine(t *testing.T, cfg authz.Config) *authz.Engine {
	t.Helper()
	cfg.Now = func() time.Time { return w.now }
	e, err := authz.New(cfg, w.store)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func decide(t *testing.T, e *authz.Engine, headers map[string]string) authz.Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), &authz.Request{Method: "GET", Path: "/v1/things", Headers: headers})
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return d
}

// TestDecisionTable covers every key-related row of DESIGN.md's error table
// in both body formats.
func TestDecisionTable(t *testing.T) {
	w := newWorld(t)
	bogus, _ := apikey.MustFormat("ak").Generate("live") // well-formed, never stored
	tests := []struct {
		name    string
		headers map[string]string
		reason  authz.Reason
		status  int
		message string
	}{
		{"no key", map[string]string{"accept": "*/*"}, authz.ReasonMissingKey, 401, "API key is required"},
		{"empty x-api-key", map[string]string{"x-api-key": ""}, authz.ReasonMissingKey, 401, "API key is required"},
		{"empty bearer", map[string]string{"authorization": "Bearer "}, authz.ReasonMissingKey, 401, "API key is required"},
		{"basic scheme is not a key", map[string]string{"authorization": "Basic dXNlcjpwYXNz"}, authz.ReasonMissingKey, 401, "API key is required"},
		{"malformed", map[string]string{"x-api-key": "ak_live_a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6"}, authz.ReasonInvalidKey, 401, "Invalid API key"},
		{"unknown well-formed", map[string]string{"x-api-key": bogus}, authz.ReasonInvalidKey, 401, "Invalid API key"},
		{"duplicated header", map[string]string{"x-api-key": w.active.Secret.Reveal() + "," + w.active.Secret.Reveal()}, authz.ReasonInvalidKey, 401, "Invalid API key"},
		{"two sources", map[string]string{"x-api-key": w.active.Secret.Reveal(), "x-api-token": w.orgKey.Secret.Reveal()}, authz.ReasonInvalidKey, 401, "Invalid API key"},
		{"same key in two sources", map[string]string{"x-api-key": w.active.Secret.Reveal(), "authorization": "Bearer " + w.active.Secret.Reveal()}, authz.ReasonInvalidKey, 401, "Invalid API key"},
		{"10 KB garbage", map[string]string{"x-api-key": strings.Repeat("A", 10<<10)}, authz.ReasonInvalidKey, 401, "Invalid API key"},
		{"non-ascii", map[string]string{"x-api-key": "ak_live_ÄÖÜ" + strings.Repeat("a", 27)}, authz.ReasonInvalidKey, 401, "Invalid API key"},
		{"nul byte", map[string]string{"x-api-key": w.active.Secret.Reveal()[:20] + "\x00" + w.active.Secret.Reveal()[21:]}, authz.ReasonInvalidKey, 401, "Invalid API key"},
		{"expired", map[string]string{"x-api-key": w.expired.Secret.Reveal()}, authz.ReasonExpiredKey, 401, "API key has expired"},
		{"revoked", map[string]string{"x-api-key": w.revoked.Secret.Reveal()}, authz.ReasonRevokedKey, 401, "API key has been revoked"},
		{"inactive", map[string]string{"x-api-key": w.paused.Secret.Reveal()}, authz.ReasonInactiveKey, 401, "API key is inactive"},
		{"bearer", map[string]string{"authorization": "Bearer " + w.active.Secret.Reveal()}, authz.ReasonOK, 200, ""},
		{"bearer lower-case scheme", map[string]string{"authorization": "bearer  " + w.active.Secret.Reveal()}, authz.ReasonOK, 200, ""},
		{"x-api-key", map[string]string{"x-api-key": w.active.Secret.Reveal()}, authz.ReasonOK, 200, ""},
		{"x-api-token", map[string]string{"x-api-token": w.orgKey.Secret.Reveal()}, authz.ReasonOK, 200, ""},
		{"x-api-key beside basic auth", map[string]string{"x-api-key": w.active.Secret.Reveal(), "authorization": "Basic dXNlcjpwYXNz"}, authz.ReasonOK, 200, ""},
		{"old key inside rotation grace", map[string]string{"x-api-key": w.graceOld.Secret.Reveal()}, authz.ReasonOK, 200, ""},
	}
	for _, format := range []string{authz.FormatSimple, authz.FormatProblem} {
		e := w.engine(t, authz.Config{Errors: authz.ErrorStyle{Format: format, ProblemTypeBase: "https://api.example.com/errors/"}})
		for _, tt := range tests {
			t.Run(format+"/"+tt.name, func(t *testing.T) {
				d := decide(t, e, tt.headers)
				if d.Reason != tt.reason || d.Status != tt.status || d.Allow() != (tt.reason == authz.ReasonOK) {
					t.Fatalf("decision = %s %d allow=%v, want %s %d", d.Reason, d.Status, d.Allow(), tt.reason, tt.status)
				}
				if d.Allow() {
					if d.Body != "" || header(d.ResponseHeaders, "content-type") != "" {
						t.Fatalf("allow carries a denial body: %+v", d)
					}
					if header(d.ResponseHeaders, "x-ratelimit-remaining") == "" {
						t.Fatalf("allow without the remaining budget: %+v", d.ResponseHeaders)
					}
					return
				}
				if len(d.Set) != 0 || len(d.Remove) != 0 {
					t.Fatalf("denial carries upstream headers: %+v", d)
				}
				checkBody(t, format, d, tt.message)
				if got := header(d.ResponseHeaders, "www-authenticate"); !strings.HasPrefix(got, `Bearer realm="keygate"`) {
					t.Fatalf("401 www-authenticate = %q", got)
				}
			})
		}
	}
}

func checkBody(t *testing.T, format string, d authz.Decision, message string) {
	t.Helper()
	switch format {
	case authz.FormatSimple:
		var body map[string]any
		if err := json.Unmarshal([]byte(d.Body), &body); err != nil {
			t.Fatalf("body %q: %v", d.Body, err)
		}
		if diff := cmp.Diff(body, map[string]any{"error": message}); diff != "" {
			t.Fatalf("simple body (-got +want):\n%s", diff)
		}
		if ct := header(d.ResponseHeaders, "content-type"); ct != "application/json" {
			t.Fatalf("content-type %q", ct)
		}
	case authz.FormatProblem:
		var body map[string]any
		if err := json.Unmarshal([]byte(d.Body), &body); err != nil {
			t.Fatalf("body %q: %v", d.Body, err)
		}
		want := map[string]any{
			"type":   "https://api.example.com/errors/" + string(d.Reason),
			"title":  body["title"],
			"status": float64(d.Status),
			"detail": message,
			"code":   string(d.Reason),
		}
		if diff := cmp.Diff(body, want); diff != "" {
			t.Fatalf("problem body (-got +want):\n%s", diff)
		}
		if title, _ := body["title"].(string); title == "" {
			t.Fatal("problem body without title")
		}
		if ct := header(d.ResponseHeaders, "content-type"); ct != "application/problem+json" {
			t.Fatalf("content-type %q", ct)
		}
	}
}

func header(hs []authz.Header, name string) string {
	for _, h := range hs {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}

// TestAllowHeaders: identity headers are set to overwrite, the credential
// header and every identity header not set are removed, and nothing is both.
func TestAllowHeaders(t *testing.T) {
	w := newWorld(t)
	e := w.engine(t, authz.Config{})
	spoofed := map[string]string{
		"authorization": "Bearer " + w.active.Secret.Reveal(),
		"x-tenant-id":   "evil-tenant",
		"x-org-id":      "evil-org",
		"x-scopes":      "admin:*",
	}
	d := decide(t, e, spoofed)
	if !d.Allow() {
		t.Fatalf("denied: %s", d.Reason)
	}
	wantSet := []authz.Header{
		{Name: "x-tenant-id", Value: w.tenant},
		{Name: "x-user-id", Value: "user-1"},
		{Name: "x-api-key-id", Value: w.active.ID},
		{Name: "x-api-key-name", Value: "Production Backend"},
		{Name: "x-api-key-environment", Value: "live"},
		{Name: "x-rate-limit-tier", Value: "enterprise"},
		{Name: "x-scopes", Value: "vault:read,chat:write"},
	}
	if diff := cmp.Diff(d.Set, wantSet); diff != "" {
		t.Fatalf("Set (-got +want):\n%s", diff)
	}
	// A tenant-level key sets no org: the client's x-org-id must go.
	if diff := cmp.Diff(d.Remove, []string{"authorization", "x-org-id"}); diff != "" {
		t.Fatalf("Remove (-got +want):\n%s", diff)
	}
	upstream := applyLikeEnvoy(spoofed, d)
	if upstream["x-tenant-id"] != w.tenant || upstream["x-scopes"] != "vault:read,chat:write" {
		t.Fatalf("spoofed identity reached upstream: %v", upstream)
	}
	if _, ok := upstream["x-org-id"]; ok {
		t.Fatalf("spoofed x-org-id reached upstream: %v", upstream)
	}
	if _, ok := upstream["authorization"]; ok {
		t.Fatal("credential reached upstream")
	}

	// An org-level key from x-api-token, without user or scopes.
	d = decide(t, e, map[string]string{"x-api-token": w.orgKey.Secret.Reveal(), "x-user-id": "evil", "x-scopes": "admin"})
	upstream = applyLikeEnvoy(map[string]string{"x-api-token": w.orgKey.Secret.Reveal(), "x-user-id": "evil", "x-scopes": "admin"}, d)
	want := map[string]string{
		"x-tenant-id": w.tenant, "x-org-id": w.org, "x-api-key-id": w.orgKey.ID, "x-api-key-name": "key",
		"x-api-key-environment": "test", "x-rate-limit-tier": "standard",
	}
	if diff := cmp.Diff(upstream, want); diff != "" {
		t.Fatalf("upstream headers (-got +want):\n%s", diff)
	}
	for _, r := range d.Remove {
		if header(d.Set, r) != "" {
			t.Fatalf("%s is both set and removed", r)
		}
	}
}

// applyLikeEnvoy applies a decision the way Envoy does: sets overwrite,
// then removals run.
func applyLikeEnvoy(in map[string]string, d authz.Decision) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		out[k] = v
	}
	for _, h := range d.Set {
		out[h.Name] = h.Value
	}
	for _, r := range d.Remove {
		delete(out, r)
	}
	return out
}

func TestConfiguredSourcesAndHeaders(t *testing.T) {
	w := newWorld(t)
	e := w.engine(t, authz.Config{
		Sources: []string{"x-api-key"},
		Headers: authz.IdentityHeaders{Tenant: "x-acme-tenant", Scopes: "x-acme-scopes"},
	})
	if d := decide(t, e, map[string]string{"authorization": "Bearer " + w.active.Secret.Reveal()}); d.Reason != authz.ReasonMissingKey {
		t.Fatalf("disabled bearer source: %s, want missing", d.Reason)
	}
	d := decide(t, e, map[string]string{"x-api-key": w.active.Secret.Reveal()})
	if header(d.Set, "x-acme-tenant") != w.tenant || header(d.Set, "x-acme-scopes") == "" || header(d.Set, "x-tenant-id") != "" {
		t.Fatalf("renamed headers not used: %+v", d.Set)
	}
	for _, bad := range []authz.Config{
		{Sources: []string{}},
		{Sources: []string{"X-Api-Key"}},
		{Sources: []string{"x-api-key", "x-api-key"}},
		{Headers: authz.IdentityHeaders{Tenant: "x-api-key"}},
		{Headers: authz.IdentityHeaders{Tenant: ":authority"}},
		{Headers: authz.IdentityHeaders{Tenant: "host"}},
		{Headers: authz.IdentityHeaders{Tenant: "x-tenant-id\r\n"}},
		{Errors: authz.ErrorStyle{Format: "xml"}},
		{Errors: authz.ErrorStyle{Realm: `a"b`}},
	} {
		if _, err := authz.New(bad, w.store); err == nil {
			t.Errorf("New(%+v) accepted a bad config", bad)
		}
	}
}

func TestForeignKeys(t *testing.T) {
	w := newWorld(t)
	legacy := "sk_legacy_0123456789abcdefABCDEF"
	if _, err := w.store.ImportKey(t.Context(), keystore.Import{KeySpec: keystore.KeySpec{TenantID: w.tenant, Name: "legacy"}, Raw: apikey.NewSecret(legacy)}); err != nil {
		t.Fatal(err)
	}
	strict := w.engine(t, authz.Config{})
	if d := decide(t, strict, map[string]string{"x-api-key": legacy}); d.Reason != authz.ReasonInvalidKey {
		t.Fatalf("foreign key with strict format: %s", d.Reason)
	}
	open := w.engine(t, authz.Config{AcceptForeignKeys: true})
	if d := decide(t, open, map[string]string{"x-api-key": legacy}); !d.Allow() {
		t.Fatalf("imported foreign key denied: %s", d.Reason)
	}
	if d := decide(t, open, map[string]string{"x-api-key": legacy + "x"}); d.Reason != authz.ReasonInvalidKey {
		t.Fatalf("unknown foreign key: %s", d.Reason)
	}
}

// TestFailClosed: a store that cannot answer, or a deadline that has
// passed, gives the 503 denial, never an allow.
func TestFailClosed(t *testing.T) {
	w := newWorld(t)
	e := w.engine(t, authz.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := e.Decide(ctx, &authz.Request{Headers: map[string]string{"x-api-key": w.active.Secret.Reveal()}})
	if !errors.Is(err, authz.ErrUnavailable) || d.Allow() || d.Status != 503 || d.Reason != authz.ReasonUnavailable {
		t.Fatalf("cancelled ctx: %+v, %v", d, err)
	}
	checkBody(t, authz.FormatSimple, d, "Authorization temporarily unavailable")

	decide(t, e, map[string]string{"x-api-key": w.active.Secret.Reveal()}) // cache it
	if err := w.store.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = e.Decide(context.Background(), &authz.Request{Headers: map[string]string{"x-api-key": w.active.Secret.Reveal()}})
	if !errors.Is(err, authz.ErrUnavailable) || !errors.Is(err, keystore.ErrClosed) || d.Allow() || d.Status != 503 {
		t.Fatalf("closed store: %+v, %v", d, err)
	}
	if strings.Contains(err.Error(), w.active.Secret.Reveal()) {
		t.Fatal("error carries the raw key")
	}
}

type recorder struct{ ids []string }

func (r *recorder) KeyUsed(c *authz.Credential, _ time.Time) { r.ids = append(r.ids, c.ID) }

func TestRecorderOnlyOnAllow(t *testing.T) {
	w := newWorld(t)
	r := &recorder{}
	e := w.engine(t, authz.Config{Recorder: r})
	decide(t, e, map[string]string{"x-api-key": w.active.Secret.Reveal()})
	decide(t, e, map[string]string{"x-api-key": w.revoked.Secret.Reveal()})
	if diff := cmp.Diff(r.ids, []string{w.active.ID}); diff != "" {
		t.Fatalf("recorded uses (-got +want):\n%s", diff)
	}
}

func TestReasonStatus(t *testing.T) {
	for r, want := range map[authz.Reason]int{
		authz.ReasonOK: 200, authz.ReasonMissingKey: 401, authz.ReasonOrgForbidden: 403,
		authz.ReasonRateLimited: 429, authz.ReasonCreditsExhausted: 429, authz.ReasonUnavailable: 503,
		authz.ReasonEnvironmentNotAllowed: 403, authz.ReasonInsufficientScope: 403,
	} {
		if got := r.Status(); got != want {
			t.Errorf("%s.Status() = %d, want %d", r, got, want)
		}
	}
	if authz.ReasonRateLimited.Message() != "Rate limit exceeded. Please try again later." {
		t.Error("rate limit message differs from AlfaOne's")
	}
}
