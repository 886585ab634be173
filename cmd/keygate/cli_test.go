package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/keygate/keygate/internal/secret"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

const cliTestToken = "cli-test-admin-token-0123456789"

// cliFixture is an admin API over a real store, and the environment the CLI
// runs in.
type cliFixture struct {
	t     *testing.T
	store *keystore.Store
	url   string
	env   map[string]string
}

func newCLIFixture(t *testing.T) *cliFixture {
	t.Helper()
	s, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	h, err := admin.New(s, admin.Options{Token: secret.New(cliTestToken)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &cliFixture{t: t, store: s, url: srv.URL, env: map[string]string{"KEYGATE_ADMIN_TOKEN": cliTestToken}}
}

// run runs the keygate command line args against the fixture's server,
// which KEYGATE_ADMIN_URL names unless f.env or args say otherwise.
func (f *cliFixture) run(args ...string) (stdout, stderr string, err error) {
	f.t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		if v, ok := f.env[k]; ok || k != "KEYGATE_ADMIN_URL" {
			return v
		}
		return f.url
	}
	err = run(context.Background(), args, &out, &errOut, getenv)
	return out.String(), errOut.String(), err
}

// json runs args with --output json, requires success and one JSON object
// on stdout, and decodes it into v.
func (f *cliFixture) json(v any, args ...string) {
	f.t.Helper()
	stdout, stderr, err := f.run(append(args, "--output", "json")...)
	if err != nil {
		f.t.Fatalf("keygate %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr)
	}
	if strings.Count(strings.TrimSpace(stdout), "\n") != 0 {
		f.t.Errorf("keygate %s printed more than one line: %q", strings.Join(args, " "), stdout)
	}
	if err := json.Unmarshal([]byte(stdout), v); err != nil {
		f.t.Fatalf("keygate %s printed %q: %v", strings.Join(args, " "), stdout, err)
	}
}

func (f *cliFixture) tenant() keystore.Tenant {
	f.t.Helper()
	var tn keystore.Tenant
	f.json(&tn, "tenants", "create", "--name", "Acme")
	return tn
}

func TestCLITenantsAndOrgs(t *testing.T) {
	f := newCLIFixture(t)
	var tn keystore.Tenant
	f.json(&tn, "tenants", "create", "--name", "Acme", "--admin-url", f.url, "--output", "json")
	if tn.ID == "" || tn.Name != "Acme" {
		t.Fatalf("tenant = %+v", tn)
	}
	f.json(new(keystore.Tenant), "tenants", "create", "--name", "Globex")

	var tl struct{ Data []keystore.Tenant }
	f.json(&tl, "tenants", "list")
	var names []string
	for _, x := range tl.Data {
		names = append(names, x.Name)
	}
	if d := cmp.Diff(names, []string{"Acme", "Globex"}); d != "" {
		t.Errorf("tenant names (-got +want):\n%s", d)
	}

	var got keystore.Tenant
	f.json(&got, "tenants", "get", tn.ID)
	if d := cmp.Diff(got, tn); d != "" {
		t.Errorf("tenants get (-got +want):\n%s", d)
	}

	var o keystore.Org
	f.json(&o, "orgs", "create", "--tenant", tn.ID, "--name", "EU")
	if o.ID == "" || o.TenantID != tn.ID || o.Name != "EU" {
		t.Fatalf("org = %+v", o)
	}
	var ol struct{ Data []keystore.Org }
	f.json(&ol, "orgs", "list", "--tenant", tn.ID)
	if len(ol.Data) != 1 || ol.Data[0].ID != o.ID {
		t.Errorf("orgs list = %+v", ol.Data)
	}
	var og keystore.Org
	f.json(&og, "orgs", "get", o.ID)
	if d := cmp.Diff(og, o); d != "" {
		t.Errorf("orgs get (-got +want):\n%s", d)
	}

	// Table output names what was created.
	stdout, _, err := f.run("tenants", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ID", "NAME", tn.ID, "Acme", "Globex"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("tenants list table lacks %q:\n%s", want, stdout)
		}
	}
}

func TestCLIKeyLifecycle(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	var o keystore.Org
	f.json(&o, "orgs", "create", "--tenant", tn.ID, "--name", "EU")

	var ck keystore.CreatedKey
	f.json(&ck, "keys", "create", "--tenant", tn.ID, "--org", o.ID, "--user", "u1", "--name", "ci",
		"--scopes", "vault:read,vault:write", "--env", "test", "--tier", "enterprise", "--expires-in", "720h",
		"--slot", "main", "--metadata", "team=ops,cost=42")
	if ck.ID == "" || !strings.HasPrefix(ck.Secret.Reveal(), "ak_test_") {
		t.Fatalf("created key id %q, secret prefix %q", ck.ID, ck.DisplayPrefix)
	}
	want := keystore.Key{ID: ck.ID, Name: "ci", DisplayPrefix: ck.DisplayPrefix, TenantID: tn.ID, OrgID: o.ID, UserID: "u1",
		Environment: "test", Tier: "enterprise", Scopes: []string{"vault:read", "vault:write"}, Status: "active",
		Slot: "main", CreatedAt: ck.CreatedAt, ExpiresAt: ck.ExpiresAt, Metadata: map[string]string{"team": "ops", "cost": "42"}}
	if d := cmp.Diff(ck.Key, want); d != "" {
		t.Errorf("created key (-got +want):\n%s", d)
	}
	if ck.ExpiresAt == nil {
		t.Error("--expires-in did not set an expiry")
	}

	// Flags may follow the id.
	var got keystore.Key
	f.json(&got, "keys", "get", ck.ID)
	if d := cmp.Diff(got, ck.Key); d != "" {
		t.Errorf("keys get (-got +want):\n%s", d)
	}

	var upd keystore.Key
	f.json(&upd, "keys", "update", ck.ID, "--name", "ci-2", "--scopes", "x:y", "--tier", "standard", "--status", "inactive", "--no-expiry")
	if upd.Name != "ci-2" || upd.Tier != "standard" || upd.Status != "inactive" || upd.ExpiresAt != nil {
		t.Errorf("updated key = %+v", upd)
	}
	if d := cmp.Diff(upd.Scopes, []string{"x:y"}); d != "" {
		t.Errorf("updated scopes (-got +want):\n%s", d)
	}
	f.json(&upd, "keys", "update", ck.ID, "--status", "active", "--expires-at", "2099-01-02T03:04:05Z")
	if upd.Status != "active" || upd.ExpiresAt == nil || upd.ExpiresAt.Year() != 2099 {
		t.Errorf("updated key = %+v", upd)
	}

	var rot keystore.CreatedKey
	f.json(&rot, "keys", "rotate", ck.ID, "--grace", "1h")
	if rot.ID == "" || rot.ID == ck.ID || rot.Secret.Reveal() == "" || rot.Secret.Reveal() == ck.Secret.Reveal() {
		t.Errorf("rotate gave id %q, want a new id and key", rot.ID)
	}
	old, err := f.store.Key(t.Context(), ck.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old.RotatedTo != rot.ID || old.RevokedAt == nil {
		t.Errorf("old key after rotate = %+v", old)
	}

	var rev keystore.Key
	f.json(&rev, "keys", "revoke", rot.ID)
	if rev.Status != "revoked" {
		t.Errorf("revoked key status = %q", rev.Status)
	}
	f.json(&got, "keys", "get", rot.ID)
	if got.Status != "revoked" {
		t.Errorf("key after revoke has status %q", got.Status)
	}

	var del struct {
		ID      string `json:"id"`
		Deleted bool   `json:"deleted"`
	}
	f.json(&del, "keys", "delete", ck.ID)
	if del.ID != ck.ID || !del.Deleted {
		t.Errorf("delete printed %+v", del)
	}
	if _, err := f.store.Key(t.Context(), ck.ID); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("key after delete: %v", err)
	}
}

func TestCLITableOutput(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	stdout, _, err := f.run("keys", "create", "--tenant", tn.ID, "--name", "ci")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := f.store.ListKeys(t.Context(), keystore.ListFilter{})
	if err != nil || len(keys.Keys) != 1 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	if !strings.Contains(stdout, "will not be shown again") || !strings.Contains(stdout, keys.Keys[0].ID) {
		t.Errorf("create table:\n%s", stdout)
	}
	// The secret is on a line of its own, so it can be copied whole.
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if secret := lines[len(lines)-1]; !strings.HasPrefix(secret, "ak_live_") || strings.Contains(secret, " ") {
		t.Errorf("last line %q is not the key", secret)
	}

	stdout, _, err = f.run("keys", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PREFIX", "STATUS", keys.Keys[0].DisplayPrefix, "active"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("keys list table lacks %q:\n%s", want, stdout)
		}
	}
}

func TestCLIListAll(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	var want []string
	for i := 0; i < 5; i++ {
		var ck keystore.CreatedKey
		f.json(&ck, "keys", "create", "--tenant", tn.ID, "--name", "k")
		want = append(want, ck.ID)
	}
	ids := func(p keystore.Page) []string {
		var out []string
		for _, k := range p.Keys {
			out = append(out, k.ID)
		}
		return out
	}

	var first keystore.Page
	f.json(&first, "keys", "list", "--tenant", tn.ID, "--limit", "2")
	if !first.HasMore || first.NextCursor == "" || len(first.Keys) != 2 {
		t.Fatalf("first page = %+v", first)
	}
	var second keystore.Page
	f.json(&second, "keys", "list", "--tenant", tn.ID, "--limit", "2", "--cursor", first.NextCursor)
	if d := cmp.Diff(ids(second), want[2:4]); d != "" {
		t.Errorf("second page (-got +want):\n%s", d)
	}

	var all keystore.Page
	f.json(&all, "keys", "list", "--tenant", tn.ID, "--limit", "2", "--all")
	if d := cmp.Diff(ids(all), want); d != "" {
		t.Errorf("--all (-got +want):\n%s", d)
	}
	if all.HasMore || all.NextCursor != "" {
		t.Errorf("--all ends with has_more %v, next_cursor %q", all.HasMore, all.NextCursor)
	}

	if _, err := f.store.RevokeKey(t.Context(), want[0]); err != nil {
		t.Fatal(err)
	}
	var revoked keystore.Page
	f.json(&revoked, "keys", "list", "--status", "revoked", "--all")
	if d := cmp.Diff(ids(revoked), want[:1]); d != "" {
		t.Errorf("--status revoked (-got +want):\n%s", d)
	}
}

func TestCLIImport(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	sum := sha256.Sum256([]byte("legacy-key-known-by-hash-only"))
	var k keystore.Key
	f.json(&k, "keys", "import", "--tenant", tn.ID, "--name", "legacy", "--key-sha256", hex.EncodeToString(sum[:]), "--display-prefix", "lg_")
	if k.ID == "" || !k.Imported || k.DisplayPrefix != "lg_" {
		t.Errorf("imported key = %+v", k)
	}

	keyStdin = strings.NewReader("sk_from_stdin_0123456789\n")
	t.Cleanup(func() { keyStdin = os.Stdin })
	var ks keystore.Key
	f.json(&ks, "keys", "import", "--tenant", tn.ID, "--name", "piped", "--key-stdin", "--scopes", "a,b")
	if !ks.Imported || ks.DisplayPrefix != "sk_from" {
		t.Errorf("imported from stdin = %+v", ks)
	}

	var kr keystore.Key
	f.json(&kr, "keys", "import", "--tenant", tn.ID, "--name", "raw", "--key", "sk_raw_flag_0123456789")
	if !kr.Imported {
		t.Errorf("imported raw = %+v", kr)
	}

	// The same key again is a conflict, reported with its status.
	_, _, err := f.run("keys", "import", "--tenant", tn.ID, "--name", "again", "--key", "sk_raw_flag_0123456789")
	if err == nil || !strings.Contains(err.Error(), "409 conflict") {
		t.Errorf("second import: %v, want 409 conflict", err)
	}
}

func TestCLITokenSources(t *testing.T) {
	f := newCLIFixture(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte(cliTestToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.env = map[string]string{}
	var tn keystore.Tenant
	f.json(&tn, "tenants", "create", "--name", "FromFile", "--admin-token-file", file)
	if tn.Name != "FromFile" {
		t.Errorf("tenant = %+v", tn)
	}

	f.env = map[string]string{"KEYGATE_ADMIN_TOKEN_FILE": file}
	f.json(new(struct{ Data []keystore.Tenant }), "tenants", "list")

	// A token file named on the command line wins over the environment.
	f.env = map[string]string{"KEYGATE_ADMIN_TOKEN": "wrong-token-wrong-token"}
	f.json(new(struct{ Data []keystore.Tenant }), "tenants", "list", "--admin-token-file", file)

	f.env = map[string]string{}
	_, _, err := f.run("tenants", "list", "--admin-token-file", filepath.Join(dir, "missing"))
	if err == nil || !strings.Contains(err.Error(), "KEYGATE_ADMIN_TOKEN") || !strings.Contains(err.Error(), "--admin-token-file") {
		t.Errorf("missing token: %v, want an error naming KEYGATE_ADMIN_TOKEN and --admin-token-file", err)
	}
	if errors.Is(err, errUsage) {
		t.Errorf("missing token is not a usage error: %v", err)
	}

	f.env = map[string]string{"KEYGATE_ADMIN_TOKEN": "wrong-token-wrong-token"}
	_, _, err = f.run("tenants", "list")
	if err == nil || !strings.Contains(err.Error(), "401 unauthorized") {
		t.Errorf("wrong token: %v, want 401 unauthorized", err)
	}
}

func TestCLIAPIErrors(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	var o keystore.Org
	f.json(&o, "orgs", "create", "--tenant", tn.ID, "--name", "EU")
	for i := 0; i < 5; i++ {
		f.json(new(keystore.CreatedKey), "keys", "create", "--tenant", tn.ID, "--org", o.ID, "--name", "k")
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"org key limit", []string{"keys", "create", "--tenant", tn.ID, "--org", o.ID, "--name", "sixth"}, "admin API: 409 org_key_limit: "},
		{"unknown key", []string{"keys", "get", "nope"}, "admin API: 404 not_found: "},
		{"unknown tenant", []string{"tenants", "get", "nope"}, "admin API: 404 not_found: "},
		{"invalid tier", []string{"keys", "create", "--tenant", tn.ID, "--name", "k", "--tier", "gold"}, "admin API: 400 invalid_request: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := f.run(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
			var ae *apiError
			if !errors.As(err, &ae) || errors.Is(err, errUsage) {
				t.Errorf("error %v: want an *apiError, not a usage error", err)
			}
		})
	}

	// Nothing answers at this URL.
	srv := httptest.NewServer(nil)
	srv.Close()
	f.url = srv.URL
	if _, _, err := f.run("tenants", "list"); err == nil || !strings.Contains(err.Error(), "admin API") {
		t.Errorf("unreachable server: %v", err)
	}
}

// TestCLIAllowedIPs: --allowed-ips on create, import and update reaches the
// store in canonical form; --clear-allowed-ips removes the list.
func TestCLIAllowedIPs(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	stored := func(id string) []string {
		t.Helper()
		k, err := f.store.Key(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return k.AllowedCIDRs
	}

	var ck keystore.CreatedKey
	f.json(&ck, "keys", "create", "--tenant", tn.ID, "--name", "ci", "--allowed-ips", "192.0.2.7, 10.1.2.3/8")
	want := []string{"192.0.2.7/32", "10.0.0.0/8"}
	if d := cmp.Diff(ck.AllowedCIDRs, want); d != "" {
		t.Errorf("created allowed_cidrs (-got +want):\n%s", d)
	}
	if d := cmp.Diff(stored(ck.ID), want); d != "" {
		t.Errorf("stored allowed_cidrs (-got +want):\n%s", d)
	}

	stdout, _, err := f.run("keys", "get", ck.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "Allowed IPs") || !strings.Contains(stdout, "192.0.2.7/32,10.0.0.0/8") {
		t.Errorf("keys get table lacks the allowlist:\n%s", stdout)
	}

	var upd keystore.Key
	f.json(&upd, "keys", "update", ck.ID, "--allowed-ips", "2001:db8::/32")
	if d := cmp.Diff(stored(ck.ID), []string{"2001:db8::/32"}); d != "" {
		t.Errorf("allowed_cidrs after update (-got +want):\n%s", d)
	}
	f.json(&upd, "keys", "update", ck.ID, "--clear-allowed-ips")
	if got := stored(ck.ID); got != nil {
		t.Errorf("allowed_cidrs after --clear-allowed-ips = %q", got)
	}
	stdout, _, err = f.run("keys", "get", ck.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "any") {
		t.Errorf("keys get of an unrestricted key does not say so:\n%s", stdout)
	}

	keyStdin = strings.NewReader("sk_from_stdin_0123456789\n")
	t.Cleanup(func() { keyStdin = os.Stdin })
	var im keystore.Key
	f.json(&im, "keys", "import", "--tenant", tn.ID, "--name", "piped", "--key-stdin", "--allowed-ips", "::ffff:198.51.100.9")
	if d := cmp.Diff(stored(im.ID), []string{"198.51.100.9/32"}); d != "" {
		t.Errorf("imported allowed_cidrs (-got +want):\n%s", d)
	}

	// The server names the entry it refuses.
	_, _, err = f.run("keys", "update", ck.ID, "--allowed-ips", "10.0.0.0/8,example.com")
	var ae *apiError
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "400 invalid_request") || !strings.Contains(err.Error(), "example.com") {
		t.Errorf("bad --allowed-ips: %v, want a 400 naming example.com", err)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	f := newCLIFixture(t)
	tests := []struct {
		name string
		args []string
	}{
		{"no subcommand", []string{"keys"}},
		{"unknown subcommand", []string{"keys", "frobnicate"}},
		{"unknown tenants subcommand", []string{"tenants", "delete"}},
		{"tenants create without name", []string{"tenants", "create"}},
		{"orgs create without tenant", []string{"orgs", "create", "--name", "x"}},
		{"keys create without name", []string{"keys", "create", "--tenant", "t"}},
		{"keys create bad metadata", []string{"keys", "create", "--tenant", "t", "--name", "n", "--metadata", "novalue"}},
		{"keys create bad duration", []string{"keys", "create", "--tenant", "t", "--name", "n", "--expires-in", "soon"}},
		{"unknown flag", []string{"tenants", "list", "--nope"}},
		{"get without id", []string{"keys", "get"}},
		{"get with two ids", []string{"keys", "get", "a", "b"}},
		{"bad output", []string{"tenants", "list", "--output", "xml"}},
		{"bad url", []string{"tenants", "list", "--admin-url", "ftp://x"}},
		{"update nothing", []string{"keys", "update", "id"}},
		{"update two expiries", []string{"keys", "update", "id", "--no-expiry", "--expires-in", "1h"}},
		{"update bad expires-at", []string{"keys", "update", "id", "--expires-at", "tomorrow"}},
		{"update empty allowed-ips", []string{"keys", "update", "id", "--allowed-ips", ""}},
		{"update allowed-ips and clear", []string{"keys", "update", "id", "--allowed-ips", "10.0.0.1", "--clear-allowed-ips"}},
		{"create empty allowed-ips", []string{"keys", "create", "--tenant", "t", "--name", "n", "--allowed-ips", " , "}},
		{"import empty allowed-ips", []string{"keys", "import", "--tenant", "t", "--name", "n", "--key", "abcdefghijklmnopqr", "--allowed-ips", ""}},
		{"import without key", []string{"keys", "import", "--tenant", "t", "--name", "n"}},
		{"import two keys", []string{"keys", "import", "--tenant", "t", "--name", "n", "--key", "abc", "--key-sha256", "00"}},
		{"rotate negative grace", []string{"keys", "rotate", "id", "--grace", "-1h"}},
		{"list bad limit", []string{"keys", "list", "--limit", "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := f.run(tt.args...)
			if !errors.Is(err, errUsage) {
				t.Errorf("keygate %s: %v, want a usage error", strings.Join(tt.args, " "), err)
			}
		})
	}
	if _, _, err := f.run("frobnicate"); !errors.Is(err, errUsage) {
		t.Errorf("unknown command: %v, want a usage error", err)
	}
	stdout, _, err := f.run("keys", "help")
	if err != nil || !strings.Contains(stdout, "keygate keys create") {
		t.Errorf("keys help: %v\n%s", err, stdout)
	}
}

func TestCLICredits(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	var k keystore.CreatedKey
	f.json(&k, "keys", "create", "--tenant", tn.ID, "--name", "metered", "--credits", "10")
	var got keystore.Key
	f.json(&got, "keys", "credits", k.ID, "--add", "5")
	if got.CreditsRemaining == nil || *got.CreditsRemaining != 15 {
		t.Fatalf("after --add 5: %+v", got.CreditsRemaining)
	}
	f.json(&got, "keys", "credits", k.ID, "--set", "3")
	if *got.CreditsRemaining != 3 {
		t.Fatalf("after --set 3: %d", *got.CreditsRemaining)
	}
	for _, args := range [][]string{{"keys", "credits", k.ID}, {"keys", "credits", k.ID, "--add", "1", "--set", "2"}} {
		if _, _, err := f.run(args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

// TestCLIHelpEverywhere: every command and group answers --help and -h on
// standard output and succeeds, rather than taking it for an argument.
func TestCLIHelpEverywhere(t *testing.T) {
	f := newCLIFixture(t)
	var paths [][]string
	var walk func(cmd *cobra.Command, path []string)
	walk = func(cmd *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, sub := range cmd.Commands() {
			walk(sub, append(slices.Clone(path), sub.Name()))
		}
	}
	walk(newRootCmd(&cli{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}), nil)
	if len(paths) < 20 {
		t.Fatalf("only %d commands found: %q", len(paths), paths)
	}
	for _, path := range paths {
		for _, h := range []string{"--help", "-h"} {
			args := append(slices.Clone(path), h)
			stdout, _, err := f.run(args...)
			if err != nil || !strings.Contains(stdout, "Usage:") {
				t.Errorf("keygate %s: %v, stdout:\n%s", strings.Join(args, " "), err, stdout)
			}
		}
	}
	for _, arg := range []string{"--version", "version"} {
		stdout, _, err := f.run(arg)
		if err != nil || stdout != "keygate "+build().String()+"\n" {
			t.Errorf("%s: %v, %q", arg, err, stdout)
		}
	}
	stdout, _, err := f.run("completion", "bash")
	if err != nil || !strings.Contains(stdout, "keygate") {
		t.Errorf("completion bash: %v", err)
	}
}

// TestCLIExitCodes: the admin API's not found, conflict and unauthorized
// answers, usage errors and denials have exit codes of their own.
func TestCLIExitCodes(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	f.json(new(keystore.Key), "keys", "import", "--tenant", tn.ID, "--name", "k", "--key", "sk_exit_code_0123456789")
	code := func(args ...string) int {
		t.Helper()
		_, _, err := f.run(args...)
		return exitCode(err)
	}
	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{"tenants", "list"}, 0},
		{[]string{"keys", "get", "nope"}, 4},
		{[]string{"keys", "import", "--tenant", tn.ID, "--name", "k", "--key", "sk_exit_code_0123456789"}, 5},
		{[]string{"tenants", "list", "--nope"}, 2},
		{[]string{"config", "validate"}, 2},
		{[]string{"keys", "get", "a", "b"}, 2},
		{[]string{}, 2},
	} {
		if got := code(tt.args...); got != tt.want {
			t.Errorf("keygate %s: exit %d, want %d", strings.Join(tt.args, " "), got, tt.want)
		}
	}
	f.env["KEYGATE_ADMIN_TOKEN"] = "wrong-token-wrong-token"
	if got := code("tenants", "list"); got != 6 {
		t.Errorf("wrong token: exit %d, want 6", got)
	}
	if got := exitCode(errDenied); got != 3 {
		t.Errorf("denied: exit %d, want 3", got)
	}
	if got := exitCode(errors.New("x")); got != 1 {
		t.Errorf("failure: exit %d, want 1", got)
	}
}

// TestCLIOutputFormats: -o is --output, and yaml prints the answer's
// fields in YAML.
func TestCLIOutputFormats(t *testing.T) {
	f := newCLIFixture(t)
	var tn keystore.Tenant
	stdout, _, err := f.run("tenants", "create", "--name", "Acme", "-o", "json")
	if err != nil || json.Unmarshal([]byte(stdout), &tn) != nil || tn.Name != "Acme" {
		t.Fatalf("-o json: %v, %q", err, stdout)
	}
	stdout, _, err = f.run("tenants", "get", tn.ID, "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		ID   string `yaml:"id"`
		Name string `yaml:"name"`
	}
	if err := yaml.Unmarshal([]byte(stdout), &got); err != nil || got.ID != tn.ID || got.Name != "Acme" || strings.Contains(stdout, "{") {
		t.Errorf("-o yaml: %v, %+v:\n%s", err, got, stdout)
	}
	stdout, _, err = f.run("tenants", "list", "--output", "yaml")
	if err != nil || !strings.Contains(stdout, "data:\n  - id: "+tn.ID) {
		t.Errorf("list --output yaml: %v:\n%s", err, stdout)
	}
}

// TestRequestFieldNames: the request bodies use the admin API's names; the
// API refuses any other, which the tests above would show, but a field
// the tests leave unset would pass unseen.
func TestRequestFieldNames(t *testing.T) {
	l := []string{}
	when := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s, n := "s", int64(1)
	for _, tt := range []struct {
		v    any
		want string
	}{
		{createTenantRequest{Name: "n"}, `{"name":"n"}`},
		{createOrgRequest{TenantID: "t", Name: "n"}, `{"tenant_id":"t","name":"n"}`},
		{createKeyRequest{keySpecRequest: keySpecRequest{TenantID: "t", OrgID: "o", UserID: "u", Name: "n", Environment: "test", Tier: "x",
			Scopes: &l, ExpiresIn: "1h", Metadata: map[string]string{"a": "b"}, AllowedCIDRs: []string{"10.0.0.0/8"}}, Slot: "s", CreditsRemaining: &n},
			`{"tenant_id":"t","org_id":"o","user_id":"u","name":"n","environment":"test","tier":"x","scopes":[],"expires_in":"1h","metadata":{"a":"b"},"allowed_cidrs":["10.0.0.0/8"],"slot":"s","credits_remaining":1}`},
		{importKeyRequest{keySpecRequest: keySpecRequest{TenantID: "t", Name: "n"}, Key: "k", KeySHA256: "h", DisplayPrefix: "p"},
			`{"tenant_id":"t","name":"n","key":"k","key_sha256":"h","display_prefix":"p"}`},
		{updateKeyRequest{Name: &s, Scopes: &l, Tier: &s, Status: &s, ExpiresIn: "1h", ExpiresAt: &when, ClearExpiry: true, AllowedCIDRs: &l},
			`{"name":"s","scopes":[],"tier":"s","status":"s","expires_in":"1h","expires_at":"2030-01-02T03:04:05Z","clear_expiry":true,"allowed_cidrs":[]}`},
		{updateKeyRequest{}, `{}`},
		{creditsRequest{Add: &n}, `{"add":1}`},
		{creditsRequest{Set: new(int64)}, `{"set":0}`},
		{rotateRequest{GracePeriod: "1h0m0s"}, `{"grace_period":"1h0m0s"}`},
	} {
		b, err := json.Marshal(tt.v)
		if err != nil || string(b) != tt.want {
			t.Errorf("%T: %s, %v; want %s", tt.v, b, err, tt.want)
		}
	}
}
