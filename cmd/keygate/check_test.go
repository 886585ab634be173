package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate/keystore"
)

// checkFixture is a store file, closed, with a tenant, an org and an
// org-level key holding vault:read, and a config whose routes use them.
type checkFixture struct {
	db, cfg     string
	tenant, org string
	key         keystore.CreatedKey
}

const checkConfig = `policy:
  introspection_path: /api/v2/me
routes:
  - name: health
    path: /healthz
    public: true
  - name: vault
    path_pattern: /api/v2/vault/**
    scopes: [vault:read]
    cost: 1
  - name: admin
    path_prefix: /api/v2/admin/
    scopes: [admin]
`

func newCheckFixture(t *testing.T) *checkFixture {
	t.Helper()
	dir := t.TempDir()
	f := &checkFixture{db: filepath.Join(dir, "keygate.db"), cfg: filepath.Join(dir, "keygate.yaml")}
	s, err := keystore.Open(f.db, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tn, err := s.CreateTenant(t.Context(), "Acme")
	if err != nil {
		t.Fatal(err)
	}
	og, err := s.CreateOrg(t.Context(), tn.ID, "Acme EU")
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, OrgID: og.ID, UserID: "user-1", Name: "Production Backend", Scopes: []string{"vault:read"}})
	if err != nil {
		t.Fatal(err)
	}
	// check opens the store read-only, which bbolt refuses while a writer
	// holds it: close it as a stopped server would have.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, f.cfg, checkConfig)
	f.tenant, f.org, f.key = tn.ID, og.ID, k
	return f
}

// checkOutput is the JSON contract of `keygate check --output json`,
// spelled out here rather than borrowed from check.go, so that renaming a
// field there is caught.
type checkOutput struct {
	Allow          bool              `json:"allow"`
	Status         int               `json:"status"`
	Reason         string            `json:"reason"`
	Route          string            `json:"route"`
	DecisionID     string            `json:"decision_id"`
	APIKeyID       string            `json:"api_key_id"`
	UpstreamSet    map[string]string `json:"upstream_set"`
	UpstreamRemove []string          `json:"upstream_remove"`
	Body           string            `json:"body"`
}

// check runs `keygate check` in-process against the fixture with args
// added, and decodes its one line of JSON.
func (f *checkFixture) check(t *testing.T, args ...string) (checkOutput, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args = append([]string{"check", "--config", f.cfg, "--store", f.db, "--output", "json"}, args...)
	err := run(context.Background(), args, &stdout, &stderr, noEnv)
	var out checkOutput
	if jerr := json.Unmarshal(stdout.Bytes(), &out); jerr != nil {
		t.Fatalf("keygate %v: %v, printed %q, not JSON: %v\nstderr: %s", args, err, stdout.String(), jerr, stderr.String())
	}
	if len(out.DecisionID) != 16 {
		t.Errorf("decision_id %q, want 16 hex digits", out.DecisionID)
	}
	return out, err
}

func TestCheckAllowsWithIdentityHeaders(t *testing.T) {
	f := newCheckFixture(t)
	out, err := f.check(t, "--path", "/api/v2/vault/x", "--header", "x-api-key: "+f.key.Secret.Reveal(), "--header", "x-tenant-id: spoofed")
	if err != nil {
		t.Fatalf("check = %v, want allowed (nil)", err)
	}
	if !out.Allow || out.Status != 200 || out.Reason != "ok" || out.Route != "vault" || out.APIKeyID != f.key.ID {
		t.Errorf("check = %+v", out)
	}
	for name, want := range map[string]string{
		"x-tenant-id":           f.tenant, // the key's, not the spoofed value
		"x-org-id":              f.org,
		"x-user-id":             "user-1",
		"x-api-key-id":          f.key.ID,
		"x-api-key-name":        "Production Backend",
		"x-api-key-environment": "live",
		"x-rate-limit-tier":     "standard",
		"x-scopes":              "vault:read",
	} {
		if got := out.UpstreamSet[name]; got != want {
			t.Errorf("upstream %s = %q, want %q", name, got, want)
		}
	}
	// The credential never reaches the backend.
	if !slices.Contains(out.UpstreamRemove, "x-api-key") {
		t.Errorf("upstream_remove %v lacks x-api-key", out.UpstreamRemove)
	}
}

func TestCheckMissingScopeIsDenied(t *testing.T) {
	f := newCheckFixture(t)
	out, err := f.check(t, "--path", "/api/v2/admin/users", "--header", "x-api-key: "+f.key.Secret.Reveal())
	// errDenied, so main exits 3 and a script can tell a refusal from a
	// broken command line (2) or a failure (1).
	if !errors.Is(err, errDenied) || exitCode(err) != 3 {
		t.Fatalf("check = %v (exit %d), want errDenied (exit 3)", err, exitCode(err))
	}
	if out.Allow || out.Status != 403 || out.Reason != "insufficient_scope" || out.Route != "admin" {
		t.Errorf("check = %+v", out)
	}
	if !strings.Contains(out.Body, "API key is missing required scope: admin") {
		t.Errorf("body %q", out.Body)
	}
	if len(out.UpstreamSet) != 0 {
		t.Errorf("a denial sets upstream headers: %v", out.UpstreamSet)
	}
}

func TestCheckKeyFromStdin(t *testing.T) {
	f := newCheckFixture(t)
	prev := checkStdin
	t.Cleanup(func() { checkStdin = prev })
	checkStdin = strings.NewReader(f.key.Secret.Reveal() + "\n")
	out, err := f.check(t, "--path", "/api/v2/vault/x", "--key-stdin")
	if err != nil || !out.Allow || out.APIKeyID != f.key.ID {
		t.Fatalf("check --key-stdin = %+v, %v", out, err)
	}
	// The key went in the first default source, Authorization: Bearer,
	// which is what is stripped before the backend.
	if !slices.Contains(out.UpstreamRemove, "authorization") || slices.Contains(out.UpstreamRemove, "x-api-key") {
		t.Errorf("upstream_remove %v: want authorization, the source the key was sent in", out.UpstreamRemove)
	}

	// Without a key on stdin there is none: the same route is refused.
	checkStdin = strings.NewReader("")
	out, err = f.check(t, "--path", "/api/v2/vault/x", "--key-stdin")
	if !errors.Is(err, errDenied) || out.Reason != "missing_api_key" || out.Status != 401 {
		t.Errorf("check --key-stdin with empty stdin = %+v, %v", out, err)
	}
}

// --setting passes Envoy context_extensions: keygate.public=true makes a
// route that requires a scope public.
func TestCheckSettingPublic(t *testing.T) {
	f := newCheckFixture(t)
	// Without the setting, the admin route needs a key (control).
	out, err := f.check(t, "--path", "/api/v2/admin/users")
	if !errors.Is(err, errDenied) || out.Reason != "missing_api_key" {
		t.Fatalf("check without the setting = %+v, %v", out, err)
	}
	out, err = f.check(t, "--path", "/api/v2/admin/users", "--setting", "keygate.public=true", "--header", "x-tenant-id: spoofed")
	if err != nil || !out.Allow || out.Route != "admin" {
		t.Fatalf("check with keygate.public=true = %+v, %v", out, err)
	}
	// A public route sets no identity, and strips what the client claimed.
	if len(out.UpstreamSet) != 0 || !slices.Contains(out.UpstreamRemove, "x-tenant-id") {
		t.Errorf("public route: set %v, remove %v", out.UpstreamSet, out.UpstreamRemove)
	}

	// A typo in a keygate.* setting fails closed, never open.
	out, err = f.check(t, "--path", "/api/v2/admin/users", "--setting", "keygate.publc=true")
	if !errors.Is(err, errDenied) || out.Status != 503 {
		t.Errorf("check with an unknown setting = %+v, %v", out, err)
	}
}

// The introspection path is answered by Keygate with the key's principal.
// It is not a request that goes upstream (allow false) but it is not a
// refusal either: check exits 0, with status 200 and the principal as body.
func TestCheckIntrospection(t *testing.T) {
	f := newCheckFixture(t)
	out, err := f.check(t, "--path", "/api/v2/me", "--header", "x-api-key: "+f.key.Secret.Reveal())
	if err != nil {
		t.Errorf("check = %v, want success: Keygate answers this path itself", err)
	}
	if out.Allow || out.Status != 200 || out.Reason != "introspection" {
		t.Fatalf("check = %+v", out)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(out.Body), &p); err != nil {
		t.Fatalf("body %q: %v", out.Body, err)
	}
	if p["api_key_id"] != f.key.ID || p["tenant_id"] != f.tenant || p["org_id"] != f.org || p["user_id"] != "user-1" {
		t.Errorf("principal %v", p)
	}
	if strings.Contains(out.Body, f.key.Secret.Reveal()) {
		t.Error("the introspection body contains the key")
	}
}

// check reads the store and never writes it: no last-used time, no change
// to the file at all, so it is safe on a copy of a live store.
func TestCheckLeavesStoreUntouched(t *testing.T) {
	f := newCheckFixture(t)
	before, err := os.ReadFile(f.db)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := f.check(t, "--path", "/api/v2/vault/x", "--header", "x-api-key: "+f.key.Secret.Reveal()); err != nil {
			t.Fatal(err)
		}
	}
	after, err := os.ReadFile(f.db)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("keygate check changed the store file")
	}
	s, err := keystore.Open(f.db, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, err := s.Key(t.Context(), f.key.ID)
	if err != nil {
		t.Fatal(err)
	}
	if k.LastUsedAt != nil {
		t.Errorf("last used %v after check, want none", k.LastUsedAt)
	}
}

// A store held by a running server (here, another Open in this process:
// bbolt's lock is per open file) is refused after the lock wait, with a
// message saying why and what to do.
func TestCheckStoreHeldByServer(t *testing.T) {
	f := newCheckFixture(t)
	held, err := keystore.Open(f.db, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"check", "--config", f.cfg, "--store", f.db, "--path", "/api/v2/vault/x", "--header", "x-api-key: " + f.key.Secret.Reveal()},
		&stdout, &stderr, noEnv)
	if err == nil || errors.Is(err, errDenied) {
		t.Fatalf("check on a held store = %v, want an error", err)
	}
	for _, want := range []string{"locked by another process", "a running keygate holds its store"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if stdout.Len() != 0 {
		t.Errorf("a decision was printed without a store: %q", stdout.String())
	}
}

// A missing store is an error of its own, not blamed on a running server.
func TestCheckMissingStore(t *testing.T) {
	f := newCheckFixture(t)
	missing := filepath.Join(t.TempDir(), "none.db")
	var stdout bytes.Buffer
	err := run(context.Background(), []string{"check", "--config", f.cfg, "--store", missing, "--path", "/healthz"}, &stdout, &bytes.Buffer{}, noEnv)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("check on a missing store = %v, want not-exist", err)
	}
	if strings.Contains(err.Error(), "running keygate") {
		t.Errorf("error %q blames a running keygate for a missing file", err)
	}
	if _, serr := os.Stat(missing); !errors.Is(serr, os.ErrNotExist) {
		t.Error("check created the store it was pointed at")
	}
}
