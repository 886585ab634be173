package admin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate/internal/secret"
	"github.com/keygate/keygate/internal/syncbuf"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

const token = "test-admin-token-0123456789"

type fixture struct {
	t     *testing.T
	store *keystore.Store
	srv   *httptest.Server
	logs  *syncbuf.Buffer
}

func newFixture(t *testing.T, opts admin.Options) *fixture {
	t.Helper()
	s, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return newFixtureOn(t, s, opts)
}

// newFixtureOn serves the admin API over store s, which it closes.
func newFixtureOn(t *testing.T, s *keystore.Store, opts admin.Options) *fixture {
	t.Helper()
	t.Cleanup(func() { s.Close() })
	logs := &syncbuf.Buffer{}
	if opts.Token.IsZero() {
		opts.Token = secret.New(token)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h, err := admin.New(s, opts)
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	// Every exchange is held against the OpenAPI document (openapi_test.go).
	srv := httptest.NewServer(checked(t, h))
	t.Cleanup(srv.Close)
	return &fixture{t: t, store: s, srv: srv, logs: logs}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r response) errBody(t *testing.T) errorBody {
	t.Helper()
	var e errorBody
	r.decode(t, &e)
	return e
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// do sends a request with the admin token.
func (f *fixture) do(method, path, body string) response {
	f.t.Helper()
	return f.doAuth(method, path, body, "Bearer "+token)
}

func (f *fixture) doAuth(method, path, body, auth string) response {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// seed creates a tenant, an org in it and an org-level key.
func (f *fixture) seed() (keystore.Tenant, keystore.Org, keystore.CreatedKey) {
	f.t.Helper()
	tn, err := f.store.CreateTenant(f.t.Context(), "Acme")
	if err != nil {
		f.t.Fatal(err)
	}
	o, err := f.store.CreateOrg(f.t.Context(), tn.ID, "Acme EU")
	if err != nil {
		f.t.Fatal(err)
	}
	k, err := f.store.CreateKey(f.t.Context(), keystore.KeySpec{TenantID: tn.ID, OrgID: o.ID, Name: "ci", Scopes: []string{"vault:read"}})
	if err != nil {
		f.t.Fatal(err)
	}
	return tn, o, k
}

func TestNewRequiresToken(t *testing.T) {
	s, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := admin.New(s, admin.Options{}); err == nil {
		t.Error("New without a token: want an error")
	}
	if _, err := admin.New(nil, admin.Options{Token: secret.New("x")}); err == nil {
		t.Error("New without a store: want an error")
	}
}

func TestRoutes(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, o, k := f.seed()
	keyJSON := func(r response) keystore.Key {
		var got keystore.Key
		r.decode(t, &got)
		return got
	}
	hashHex := sha256.Sum256([]byte("legacy-secret-by-hash-000000000"))

	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		check      func(t *testing.T, r response)
	}{
		{"healthz", "GET", "/healthz", "", 200, func(t *testing.T, r response) {
			if d := cmp.Diff(string(r.body), "{\"status\":\"ok\"}\n"); d != "" {
				t.Errorf("body (-got +want):\n%s", d)
			}
		}},
		{"readyz", "GET", "/readyz", "", 200, func(t *testing.T, r response) {
			if d := cmp.Diff(string(r.body), "{\"status\":\"ready\"}\n"); d != "" {
				t.Errorf("body (-got +want):\n%s", d)
			}
		}},
		{"create tenant", "POST", "/v1/tenants", `{"name":"Globex"}`, 201, func(t *testing.T, r response) {
			var got keystore.Tenant
			r.decode(t, &got)
			if got.ID == "" || got.Name != "Globex" {
				t.Errorf("tenant = %+v", got)
			}
			if loc := r.header.Get("Location"); loc != "/v1/tenants/"+got.ID {
				t.Errorf("Location = %q", loc)
			}
		}},
		{"list tenants", "GET", "/v1/tenants", "", 200, func(t *testing.T, r response) {
			var got struct{ Data []keystore.Tenant }
			r.decode(t, &got)
			var names []string
			for _, x := range got.Data {
				names = append(names, x.Name)
			}
			if d := cmp.Diff(names, []string{"Acme", "Globex"}); d != "" {
				t.Errorf("names (-got +want):\n%s", d)
			}
		}},
		{"get tenant", "GET", "/v1/tenants/" + tn.ID, "", 200, func(t *testing.T, r response) {
			var got keystore.Tenant
			r.decode(t, &got)
			if d := cmp.Diff(got, tn); d != "" {
				t.Errorf("tenant (-got +want):\n%s", d)
			}
		}},
		{"create org", "POST", "/v1/orgs", `{"tenant_id":"` + tn.ID + `","name":"Acme US"}`, 201, func(t *testing.T, r response) {
			var got keystore.Org
			r.decode(t, &got)
			if got.TenantID != tn.ID || got.Name != "Acme US" || got.ID == "" {
				t.Errorf("org = %+v", got)
			}
		}},
		{"list orgs of tenant", "GET", "/v1/orgs?tenant_id=" + tn.ID, "", 200, func(t *testing.T, r response) {
			var got struct{ Data []keystore.Org }
			r.decode(t, &got)
			if len(got.Data) != 2 || got.Data[0].ID != o.ID {
				t.Errorf("orgs = %+v", got.Data)
			}
		}},
		{"list all orgs", "GET", "/v1/orgs", "", 200, func(t *testing.T, r response) {
			var got struct{ Data []keystore.Org }
			r.decode(t, &got)
			if len(got.Data) != 2 {
				t.Errorf("orgs = %+v", got.Data)
			}
		}},
		{"get org", "GET", "/v1/orgs/" + o.ID, "", 200, func(t *testing.T, r response) {
			var got keystore.Org
			r.decode(t, &got)
			if d := cmp.Diff(got, o); d != "" {
				t.Errorf("org (-got +want):\n%s", d)
			}
		}},
		{"create key", "POST", "/v1/keys", `{"tenant_id":"` + tn.ID + `","name":"deploy","scopes":["a:read","b:write"],"environment":"test","tier":"enterprise","expires_in":"720h","metadata":{"team":"ops"}}`, 201, func(t *testing.T, r response) {
			var got keystore.CreatedKey
			r.decode(t, &got)
			if !strings.HasPrefix(got.Secret.Reveal(), "ak_test_") || got.ID == "" {
				t.Errorf("created key id %q, key prefix %q", got.ID, got.DisplayPrefix)
			}
			want := keystore.Key{Name: "deploy", TenantID: tn.ID, Environment: "test", Tier: "enterprise",
				Scopes: []string{"a:read", "b:write"}, Status: "active", Metadata: map[string]string{"team": "ops"}}
			got.Key.ID, got.Key.DisplayPrefix, got.Key.CreatedAt = "", "", time.Time{}
			exp := got.Key.ExpiresAt
			got.Key.ExpiresAt = nil
			if d := cmp.Diff(got.Key, want); d != "" {
				t.Errorf("key (-got +want):\n%s", d)
			}
			if exp == nil || time.Until(*exp) < 719*time.Hour || time.Until(*exp) > 721*time.Hour {
				t.Errorf("expires_at = %v, want about 720h from now", exp)
			}
		}},
		{"create key in slot", "POST", "/v1/keys", `{"tenant_id":"` + tn.ID + `","name":"embed","slot":"embedded"}`, 201, func(t *testing.T, r response) {
			if got := keyJSON(r); got.Slot != "embedded" {
				t.Errorf("slot = %q", got.Slot)
			}
		}},
		{"import raw", "POST", "/v1/keys/import", `{"tenant_id":"` + tn.ID + `","name":"legacy","key":"legacy-secret-raw-0000000000"}`, 201, func(t *testing.T, r response) {
			got := keyJSON(r)
			if !got.Imported || got.ID == "" || got.DisplayPrefix != "legacy-s" {
				t.Errorf("imported key = %+v", got)
			}
			if bytes.Contains(r.body, []byte("legacy-secret-raw-0000000000")) {
				t.Error("import response echoes the raw key")
			}
		}},
		{"import by sha256", "POST", "/v1/keys/import", `{"tenant_id":"` + tn.ID + `","name":"hashed","key_sha256":"` + hex.EncodeToString(hashHex[:]) + `","display_prefix":"legacy_","expires_in":"1h"}`, 201, func(t *testing.T, r response) {
			got := keyJSON(r)
			if !got.Imported || got.DisplayPrefix != "legacy_" || got.ExpiresAt == nil {
				t.Errorf("imported key = %+v", got)
			}
		}},
		{"list keys", "GET", "/v1/keys?tenant_id=" + tn.ID + "&org_id=" + o.ID + "&status=active", "", 200, func(t *testing.T, r response) {
			var got keystore.Page
			r.decode(t, &got)
			if len(got.Keys) != 1 || got.Keys[0].ID != k.ID || got.HasMore {
				t.Errorf("page = %+v", got)
			}
		}},
		{"get key", "GET", "/v1/keys/" + k.ID, "", 200, func(t *testing.T, r response) {
			if d := cmp.Diff(keyJSON(r), k.Key); d != "" {
				t.Errorf("key (-got +want):\n%s", d)
			}
			if bytes.Contains(r.body, []byte(k.Secret.Reveal())) || bytes.Contains(r.body, []byte(`"key"`)) {
				t.Error("get returns the secret")
			}
		}},
		{"update key", "PATCH", "/v1/keys/" + k.ID, `{"name":"ci-2","scopes":["x:y"],"tier":"enterprise","status":"inactive","expires_in":"24h"}`, 200, func(t *testing.T, r response) {
			got := keyJSON(r)
			if got.Name != "ci-2" || got.Tier != "enterprise" || got.Status != "inactive" || got.ExpiresAt == nil {
				t.Errorf("updated key = %+v", got)
			}
			if d := cmp.Diff(got.Scopes, []string{"x:y"}); d != "" {
				t.Errorf("scopes (-got +want):\n%s", d)
			}
		}},
		{"update key clear expiry", "PATCH", "/v1/keys/" + k.ID, `{"clear_expiry":true,"status":"active"}`, 200, func(t *testing.T, r response) {
			if got := keyJSON(r); got.ExpiresAt != nil || got.Status != "active" {
				t.Errorf("updated key = %+v", got)
			}
		}},
		{"rotate key", "POST", "/v1/keys/" + k.ID + "/rotate", `{"grace_period":"1h"}`, 201, func(t *testing.T, r response) {
			var got keystore.CreatedKey
			r.decode(t, &got)
			if got.ID == k.ID || got.Secret.Reveal() == k.Secret.Reveal() || !strings.HasPrefix(got.Secret.Reveal(), "ak_live_") {
				t.Errorf("rotation did not give a new key: id %q", got.ID)
			}
			old, err := f.store.Key(t.Context(), k.ID)
			if err != nil {
				t.Fatal(err)
			}
			if old.RotatedTo != got.ID || old.RevokedAt == nil || old.StateAt(time.Now()) != keystore.StateActive {
				t.Errorf("old key after rotation with grace = %+v", old)
			}
		}},
		{"revoke key", "POST", "/v1/keys/" + k.ID + "/revoke", "", 200, func(t *testing.T, r response) {
			if got := keyJSON(r); got.Status != "revoked" || got.RevokedAt == nil {
				t.Errorf("revoked key = %+v", got)
			}
		}},
		{"delete key", "DELETE", "/v1/keys/" + k.ID, "", 204, func(t *testing.T, r response) {
			if len(r.body) != 0 {
				t.Errorf("204 with body %q", r.body)
			}
			if _, err := f.store.Key(t.Context(), k.ID); !errors.Is(err, keystore.ErrNotFound) {
				t.Errorf("key after delete: %v, want not found", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(tt.method, tt.path, tt.body)
			if r.status != tt.wantStatus {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, r.status, r.body, tt.wantStatus)
			}
			if r.status != http.StatusNoContent {
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
			}
			if cc := r.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", cc)
			}
			tt.check(t, r)
		})
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, o, k := f.seed()
	for i := 0; i < 4; i++ { // the seeded key is the first of five allowed
		if _, err := f.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, OrgID: o.ID, Name: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	revoked, err := f.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.RevokeKey(t.Context(), revoked.ID); err != nil {
		t.Fatal(err)
	}
	tenantKey := func(extra string) string {
		return `{"tenant_id":"` + tn.ID + `","name":"n"` + extra + `}`
	}

	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		auth       string // "-": none
		wantStatus int
		wantCode   string
	}{
		{"no token", "GET", "/v1/tenants", "", "-", 401, "unauthorized"},
		{"wrong token", "GET", "/v1/tenants", "", "Bearer nope", 401, "unauthorized"},
		{"token as prefix", "GET", "/v1/tenants", "", "Bearer " + token + "x", 401, "unauthorized"},
		{"basic scheme", "GET", "/v1/tenants", "", "Basic " + token, 401, "unauthorized"},
		{"no token on unknown path", "GET", "/v1/nothing", "", "-", 401, "unauthorized"},
		{"no token wrong method", "PUT", "/v1/tenants", "", "-", 401, "unauthorized"},
		{"lower-case scheme", "GET", "/v1/tenants/nope", "", "bearer " + token, 404, "not_found"},
		{"unknown field", "POST", "/v1/tenants", `{"name":"x","nmae":"y"}`, "", 400, "invalid_request"},
		{"bad json", "POST", "/v1/tenants", `{"name":`, "", 400, "invalid_request"},
		{"syntax error", "POST", "/v1/tenants", `{"name" "x"}`, "", 400, "invalid_request"},
		{"wrong type", "POST", "/v1/tenants", `{"name":5}`, "", 400, "invalid_request"},
		{"not an object", "POST", "/v1/tenants", `["x"]`, "", 400, "invalid_request"},
		{"trailing data", "POST", "/v1/tenants", `{"name":"x"}{"name":"y"}`, "", 400, "invalid_request"},
		{"empty body", "POST", "/v1/tenants", "", "", 400, "invalid_request"},
		{"empty name", "POST", "/v1/tenants", `{"name":""}`, "", 400, "invalid_request"},
		{"org without tenant", "POST", "/v1/orgs", `{"name":"x"}`, "", 400, "invalid_request"},
		{"org of unknown tenant", "POST", "/v1/orgs", `{"tenant_id":"nope","name":"x"}`, "", 404, "not_found"},
		{"invalid env", "POST", "/v1/keys", tenantKey(`,"environment":"prod"`), "", 400, "invalid_request"},
		{"invalid tier", "POST", "/v1/keys", tenantKey(`,"tier":"gold"`), "", 400, "invalid_request"},
		{"invalid scope", "POST", "/v1/keys", tenantKey(`,"scopes":["a b"]`), "", 400, "invalid_request"},
		{"bad expires_in", "POST", "/v1/keys", tenantKey(`,"expires_in":"soon"`), "", 400, "invalid_request"},
		{"negative expires_in", "POST", "/v1/keys", tenantKey(`,"expires_in":"-1h"`), "", 400, "invalid_request"},
		{"bad expires_at", "POST", "/v1/keys", tenantKey(`,"expires_at":"tomorrow"`), "", 400, "invalid_request"},
		{"expires_in and expires_at", "POST", "/v1/keys", tenantKey(`,"expires_in":"1h","expires_at":"2099-01-01T00:00:00Z"`), "", 400, "invalid_request"},
		{"key of unknown tenant", "POST", "/v1/keys", `{"tenant_id":"nope","name":"n"}`, "", 404, "not_found"},
		{"org key limit", "POST", "/v1/keys", `{"tenant_id":"` + tn.ID + `","org_id":"` + o.ID + `","name":"sixth"}`, "", 409, "org_key_limit"},
		{"import both forms", "POST", "/v1/keys/import", tenantKey(`,"key":"abcdefghijklmnopqrstu","key_sha256":"00"`), "", 400, "invalid_request"},
		{"import bad hash", "POST", "/v1/keys/import", tenantKey(`,"key_sha256":"xyz"`), "", 400, "invalid_request"},
		{"import existing key", "POST", "/v1/keys/import", tenantKey(`,"key":"` + k.Secret.Reveal() + `"`), "", 409, "conflict"},
		{"unknown tenant", "GET", "/v1/tenants/nope", "", "", 404, "not_found"},
		{"unknown org", "GET", "/v1/orgs/nope", "", "", 404, "not_found"},
		{"orgs of unknown tenant", "GET", "/v1/orgs?tenant_id=nope", "", "", 404, "not_found"},
		{"orgs unknown param", "GET", "/v1/orgs?tenant=x", "", "", 400, "invalid_request"},
		{"unknown key", "GET", "/v1/keys/nope", "", "", 404, "not_found"},
		{"update unknown key", "PATCH", "/v1/keys/nope", `{"name":"x"}`, "", 404, "not_found"},
		{"update revoked key", "PATCH", "/v1/keys/" + revoked.ID, `{"name":"x"}`, "", 409, "conflict"},
		{"update bad status", "PATCH", "/v1/keys/" + k.ID, `{"status":"revoked"}`, "", 400, "invalid_request"},
		{"update expires_in and clear", "PATCH", "/v1/keys/" + k.ID, `{"expires_in":"1h","clear_expiry":true}`, "", 400, "invalid_request"},
		{"revoke unknown key", "POST", "/v1/keys/nope/revoke", "", "", 404, "not_found"},
		{"revoke with options", "POST", "/v1/keys/" + k.ID + "/revoke", `{"force":true}`, "", 400, "invalid_request"},
		{"rotate unknown key", "POST", "/v1/keys/nope/rotate", "", "", 404, "not_found"},
		{"rotate revoked key", "POST", "/v1/keys/" + revoked.ID + "/rotate", "", "", 409, "conflict"},
		{"rotate bad grace", "POST", "/v1/keys/" + k.ID + "/rotate", `{"grace_period":"-1h"}`, "", 400, "invalid_request"},
		{"rotate grace over the maximum", "POST", "/v1/keys/" + k.ID + "/rotate", `{"grace_period":"87600h"}`, "", 400, "invalid_request"},
		{"rotate with grace in a full org", "POST", "/v1/keys/" + k.ID + "/rotate", `{"grace_period":"1h"}`, "", 409, "org_key_limit"},
		{"delete unknown key", "DELETE", "/v1/keys/nope", "", "", 404, "not_found"},
		{"list bad limit", "GET", "/v1/keys?limit=x", "", "", 400, "invalid_request"},
		{"list limit too big", "GET", "/v1/keys?limit=100000", "", "", 400, "invalid_request"},
		{"list bad status", "GET", "/v1/keys?status=gone", "", "", 400, "invalid_request"},
		{"list unknown param", "GET", "/v1/keys?tenant=" + tn.ID, "", "", 400, "invalid_request"},
		{"list unknown org", "GET", "/v1/keys?org_id=nope", "", "", 404, "not_found"},
		{"method not allowed", "PUT", "/v1/tenants", "", "", 405, "method_not_allowed"},
		{"method not allowed on key", "POST", "/v1/keys/" + k.ID, "", "", 405, "method_not_allowed"},
		{"unknown route", "GET", "/v1/nothing", "", "", 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := "Bearer " + token
			switch tt.auth {
			case "-":
				auth = ""
			case "":
			default:
				auth = tt.auth
			}
			r := f.doAuth(tt.method, tt.path, tt.body, auth)
			got := r.errBody(t)
			if r.status != tt.wantStatus || got.Code != tt.wantCode {
				t.Fatalf("%s %s = %d %s, want %d %s", tt.method, tt.path, r.status, r.body, tt.wantStatus, tt.wantCode)
			}
			if got.Error == "" {
				t.Error("error message is empty")
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			switch r.status {
			case 401:
				if d := cmp.Diff(r.header.Get("WWW-Authenticate"), `Bearer realm="keygate-admin"`); d != "" {
					t.Errorf("WWW-Authenticate (-got +want):\n%s", d)
				}
			case 405:
				if r.header.Get("Allow") == "" {
					t.Error("405 without Allow")
				}
			}
			if k.Secret.Reveal() != "" && bytes.Contains(r.body, []byte(k.Secret.Reveal())) {
				t.Error("error body contains a raw key")
			}
		})
	}
}

func TestProbesNeedNoToken(t *testing.T) {
	notReady := errors.New("store not open")
	var ready error
	f := newFixture(t, admin.Options{Ready: []admin.ReadyCheck{{Name: "store", Check: func(context.Context) error { return ready }}}})
	for _, tc := range []struct {
		path       string
		ready      error
		wantStatus int
		wantBody   string
	}{
		{"/healthz", nil, 200, `{"status":"ok"}`},
		{"/healthz", notReady, 200, `{"status":"ok"}`},
		{"/readyz", nil, 200, `{"status":"ready","checks":{"store":"ok"}}`},
		{"/readyz", notReady, 503, `{"status":"unavailable","checks":{"store":"failed"}}`},
	} {
		ready = tc.ready
		r := f.doAuth("GET", tc.path, "", "")
		if r.status != tc.wantStatus || strings.TrimSpace(string(r.body)) != tc.wantBody {
			t.Errorf("GET %s (ready %v) = %d %s, want %d %s", tc.path, tc.ready, r.status, r.body, tc.wantStatus, tc.wantBody)
		}
	}
}

func TestBodyTooLarge(t *testing.T) {
	f := newFixture(t, admin.Options{})
	big := `{"name":"` + strings.Repeat("a", 2<<20) + `"}`
	r := f.do("POST", "/v1/tenants", big)
	if got := r.errBody(t); r.status != 413 || got.Code != "body_too_large" {
		t.Fatalf("2 MiB body = %d %s, want 413 body_too_large", r.status, r.body)
	}

	// Without a Content-Length the limit is enforced while reading.
	req, err := http.NewRequest("POST", f.srv.URL+"/v1/tenants", io.MultiReader(strings.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got errorBody
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 413 || got.Code != "body_too_large" {
		t.Fatalf("chunked 2 MiB body = %d %+v, want 413 body_too_large", resp.StatusCode, got)
	}
}

func TestRevokeThenGet(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, _, _ := f.seed()
	r := f.do("POST", "/v1/keys", `{"tenant_id":"`+tn.ID+`","name":"short-lived"}`)
	if r.status != 201 {
		t.Fatalf("create = %d %s", r.status, r.body)
	}
	var created keystore.CreatedKey
	r.decode(t, &created)
	if r := f.do("POST", "/v1/keys/"+created.ID+"/revoke", "{}"); r.status != 200 {
		t.Fatalf("revoke = %d %s", r.status, r.body)
	}
	r = f.do("GET", "/v1/keys/"+created.ID, "")
	var got keystore.Key
	r.decode(t, &got)
	if got.Status != "revoked" {
		t.Errorf("status after revoke = %q, want revoked", got.Status)
	}
}

func TestRotateWithoutGrace(t *testing.T) {
	f := newFixture(t, admin.Options{})
	_, _, k := f.seed()
	r := f.do("POST", "/v1/keys/"+k.ID+"/rotate", "")
	if r.status != 201 {
		t.Fatalf("rotate = %d %s", r.status, r.body)
	}
	var got keystore.CreatedKey
	r.decode(t, &got)
	if got.ID == k.ID || got.Secret.Reveal() == "" || got.Secret.Reveal() == k.Secret.Reveal() {
		t.Errorf("rotate returned id %q, want a new id and key", got.ID)
	}
	old, err := f.store.Key(t.Context(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old.Status != "revoked" {
		t.Errorf("old key status = %q, want revoked at once", old.Status)
	}
}

func TestImportedKeysWork(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, _, _ := f.seed()
	raw := "sk_legacy_0123456789abcdef"
	sum := sha256.Sum256([]byte("other_legacy_0123456789abcdef"))
	for _, body := range []string{
		`{"tenant_id":"` + tn.ID + `","name":"raw","key":"` + raw + `"}`,
		`{"tenant_id":"` + tn.ID + `","name":"hash","key_sha256":"` + hex.EncodeToString(sum[:]) + `"}`,
	} {
		r := f.do("POST", "/v1/keys/import", body)
		if r.status != 201 {
			t.Fatalf("import = %d %s", r.status, r.body)
		}
		var got keystore.Key
		r.decode(t, &got)
		stored, err := f.store.Key(t.Context(), got.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !stored.Imported {
			t.Errorf("key %s not marked imported", got.ID)
		}
	}
	// Importing the same raw key twice is a conflict, not a second record.
	r := f.do("POST", "/v1/keys/import", `{"tenant_id":"`+tn.ID+`","name":"again","key_sha256":"`+hex.EncodeToString(sum[:])+`"}`)
	if r.status != 409 {
		t.Errorf("second import = %d %s, want 409", r.status, r.body)
	}
}

func TestListPagination(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, err := f.store.CreateTenant(t.Context(), "Acme")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 0; i < 7; i++ {
		k, err := f.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, k.ID)
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		r := f.do("GET", "/v1/keys?tenant_id="+tn.ID+"&limit=2&cursor="+cursor, "")
		if r.status != 200 {
			t.Fatalf("list = %d %s", r.status, r.body)
		}
		var p keystore.Page
		r.decode(t, &p)
		if len(p.Keys) > 2 {
			t.Fatalf("page of %d keys with limit=2", len(p.Keys))
		}
		for _, k := range p.Keys {
			got = append(got, k.ID)
		}
		if !p.HasMore {
			if p.NextCursor != "" {
				t.Errorf("last page has next_cursor %q", p.NextCursor)
			}
			break
		}
		cursor = p.NextCursor
	}
	if d := cmp.Diff(got, want); d != "" {
		t.Errorf("ids walked (-got +want):\n%s", d)
	}
}

func TestClosedStore(t *testing.T) {
	f := newFixture(t, admin.Options{})
	f.store.Close()
	r := f.do("GET", "/v1/tenants", "")
	if got := r.errBody(t); r.status != 503 || got.Code != "unavailable" {
		t.Errorf("closed store = %d %s, want 503 unavailable", r.status, r.body)
	}
}

// TestLogsHoldNoSecrets runs a full scenario and checks that the Debug log
// names every request yet never a raw key, a key's hash or the token.
func TestLogsHoldNoSecrets(t *testing.T) {
	f := newFixture(t, admin.Options{})
	var secrets []string
	decode := func(r response, v any) {
		t.Helper()
		if r.status >= 300 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		r.decode(t, v)
	}
	var tn keystore.Tenant
	decode(f.do("POST", "/v1/tenants", `{"name":"Acme"}`), &tn)
	var o keystore.Org
	decode(f.do("POST", "/v1/orgs", `{"tenant_id":"`+tn.ID+`","name":"EU"}`), &o)
	var ids []string
	for i := 0; i < 5; i++ {
		var ck keystore.CreatedKey
		decode(f.do("POST", "/v1/keys", `{"tenant_id":"`+tn.ID+`","org_id":"`+o.ID+`","name":"k","slot":"s`+string(rune('a'+i))+`"}`), &ck)
		secrets = append(secrets, ck.Secret.Reveal())
		ids = append(ids, ck.ID)
	}
	// Failures: the org limit, a conflicting import of a created key, bad JSON
	// that quotes a key, and an unauthorized call.
	f.do("POST", "/v1/keys", `{"tenant_id":"`+tn.ID+`","org_id":"`+o.ID+`","name":"sixth"}`)
	f.do("POST", "/v1/keys/import", `{"tenant_id":"`+tn.ID+`","name":"dup","key":"`+secrets[0]+`"}`)
	f.do("POST", "/v1/keys/import", `{"tenant_id":"`+tn.ID+`","name":"bad","key":"`+secrets[1]+`",}`)
	f.doAuth("GET", "/v1/keys", "", "Bearer "+secrets[2])
	rawImport := "imported_legacy_secret_0001"
	var imported keystore.Key
	decode(f.do("POST", "/v1/keys/import", `{"tenant_id":"`+tn.ID+`","name":"legacy","key":"`+rawImport+`"}`), &imported)
	secrets = append(secrets, rawImport)
	// The revoke frees the place that a rotation with grace needs.
	f.do("POST", "/v1/keys/"+ids[2]+"/revoke", "")
	var rotated keystore.CreatedKey
	decode(f.do("POST", "/v1/keys/"+ids[0]+"/rotate", `{"grace_period":"1m"}`), &rotated)
	secrets = append(secrets, rotated.Secret.Reveal())
	f.do("PATCH", "/v1/keys/"+ids[1], `{"name":"renamed"}`)
	f.do("GET", "/v1/keys?limit=2", "")
	f.do("GET", "/v1/keys/"+ids[3], "")
	f.do("DELETE", "/v1/keys/"+ids[4], "")

	logs := f.logs.String()
	if n := strings.Count(logs, `"msg":"admin request"`); n < 15 {
		t.Errorf("%d request log lines, want one per request:\n%s", n, logs)
	}
	if !strings.Contains(logs, `"route":"POST /v1/keys/{id}/rotate"`) {
		t.Errorf("log does not name the route pattern:\n%s", logs)
	}
	forbidden := append([]string{token}, secrets...)
	for _, s := range secrets {
		h := sha256.Sum256([]byte(s))
		forbidden = append(forbidden, hex.EncodeToString(h[:]))
	}
	for _, s := range forbidden {
		if s == "" {
			t.Fatal("empty secret in scenario")
		}
		if strings.Contains(logs, s) {
			t.Errorf("log contains a secret (%.6s...)", s)
		}
	}
}

// TestMetricsBehindToken: /metrics is served only with the admin token.
func TestMetricsBehindToken(t *testing.T) {
	metricsHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "keygate_up 1\n")
	})
	f := newFixture(t, admin.Options{Metrics: metricsHandler})
	if r := f.doAuth("GET", "/metrics", "", ""); r.status != http.StatusUnauthorized {
		t.Fatalf("GET /metrics without token: %d", r.status)
	}
	if r := f.do("GET", "/metrics", ""); r.status != http.StatusOK || string(r.body) != "keygate_up 1\n" {
		t.Fatalf("GET /metrics: %d %q", r.status, r.body)
	}
	g := newFixture(t, admin.Options{})
	if r := g.do("GET", "/metrics", ""); r.status != http.StatusNotFound {
		t.Fatalf("GET /metrics with none configured: %d", r.status)
	}
}

func TestCreditsEndpoint(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, _ := f.store.CreateTenant(t.Context(), "Acme")
	k, err := f.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	path := "/v1/keys/" + k.ID + "/credits"
	if r := f.do("POST", path, `{"add": 5}`); r.status != http.StatusConflict || r.errBody(t).Code != "not_metered" {
		t.Fatalf("add to an unmetered key: %d %s", r.status, r.body)
	}
	var got keystore.Key
	r := f.do("POST", path, `{"set": 100}`)
	r.decode(t, &got)
	if r.status != http.StatusOK || got.CreditsRemaining == nil || *got.CreditsRemaining != 100 {
		t.Fatalf("set 100: %d %s", r.status, r.body)
	}
	r = f.do("POST", path, `{"add": -30}`)
	r.decode(t, &got)
	if *got.CreditsRemaining != 70 {
		t.Fatalf("add -30: %s", r.body)
	}
	for _, bad := range []string{`{}`, `{"add": 1, "set": 2}`, `{"set": -1}`, `{"add": "x"}`, `{"refill": 1}`} {
		if r := f.do("POST", path, bad); r.status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", bad, r.status, r.body)
		}
	}
	if r := f.do("POST", "/v1/keys/nope/credits", `{"set": 1}`); r.status != http.StatusNotFound {
		t.Fatalf("unknown key: %d", r.status)
	}
}
