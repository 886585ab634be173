package config

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore/apikey"
)

// noLookup builds an engine without a store, for tests that only need one
// to exist (FuzzParseConfig: an accepted file builds one).
type noLookup struct{}

func (noLookup) LookupKey(context.Context, apikey.Hash) (*authz.Credential, bool, error) {
	return nil, false, nil
}

// place is one problem as Parse reports it: "file:line: field: ...msg...".
type place struct {
	line  int
	field string
	msg   string
}

// checkPlaces requires err to hold exactly the wanted problems, in order.
func checkPlaces(t *testing.T, file string, err error, want []place) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want %v", want)
	}
	got := Unjoin(err)
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d:\n%v", len(got), len(want), err)
	}
	for i, w := range want {
		prefix := fmt.Sprintf("%s:%d: %s: ", file, w.line, w.field)
		if i >= len(got) || !strings.HasPrefix(got[i].Error(), prefix) || !strings.Contains(got[i].Error(), w.msg) {
			t.Errorf("problem %d: want %q...%q in:\n%v", i+1, prefix, w.msg, err)
		}
	}
}

// A type error names the field whose value did not decode, even with other
// fields on its line, and is not followed by the problem its zero value
// would make (a window of 0s, when the file says "nope").
func TestTypeErrorsNameTheirField(t *testing.T) {
	for _, tt := range []struct {
		name string
		yaml string
		want []place
	}{
		{"window", "rate_limits: {tiers: {standard: {requests: 100, window: nope}}}\n",
			[]place{{1, "rate_limits.tiers.standard.window", `invalid duration "nope"`}}},
		{"burst", "rate_limits:\n  tiers:\n    standard: {requests: 100, window: 1m, burst: lots}\n",
			[]place{{3, "rate_limits.tiers.standard.burst", "`lots` into int"}}},
		{"cost", "routes:\n  - {name: a, path: /a, cost: many}\n",
			[]place{{2, "routes[0].cost", "`many` into int"}}},
		{"list as a scalar", "routes:\n  - name: a\n    path: /a\n    scopes: admin\n",
			[]place{{4, "routes[0].scopes", "`admin` into []string"}}},
		{"duration as a number", "store:\n  last_used_flush: 10\n",
			[]place{{2, "store.last_used_flush", `missing unit in duration "10"`}}},
		{"duration as a list", "shutdown_timeout: [1s]\n",
			[]place{{1, "shutdown_timeout", "want a duration"}}},
		{"a section as a scalar", "client_ip: 5\n",
			[]place{{1, "client_ip", "cannot unmarshal !!int `5`"}}},
		{"the problem its zero would make is not reported",
			"client_ip: {header: x-forwarded-for, trusted_hops: many}\n",
			[]place{{1, "client_ip.trusted_hops", "`many` into int"}}},
		{"several on one line, left to right",
			"rate_limits: {tiers: {standard: {requests: lots, window: nope, burst: many}}}\n",
			[]place{
				{1, "rate_limits.tiers.standard.requests", "`lots` into int"},
				{1, "rate_limits.tiers.standard.window", `"nope"`},
				{1, "rate_limits.tiers.standard.burst", "`many` into int"},
			}},
		{"unknown and repeated keys", "store: {pth: x}\nrate_limits:\n  tiers:\n    gold: {requests: 1, window: 1s}\n    gold: {requests: 2, window: 1s}\n",
			[]place{
				{1, "store.pth", "unknown field"},
				{5, "rate_limits.tiers.gold", `mapping key "gold" already defined at line 4`},
			}},
		{"through an alias, at each use", "rate_limits:\n  org: &o {requests: x, window: 1s}\n  tenant: *o\n",
			[]place{
				{2, "rate_limits.org.requests", "`x` into int"},
				{2, "rate_limits.tenant.requests", "`x` into int"},
			}},
		{"merged in, where it is merged", "rate_limits:\n  tiers:\n    base: &b {requests: 1, window: 1s}\n    gold:\n      <<: [*b, {burst: q}]\n",
			[]place{{5, "rate_limits.tiers.gold.burst", "`q` into int"}}},
		{"beside a problem of meaning, in the order of the file", "policy:\n  environments: [prod]\nstore:\n  pth: x\n",
			[]place{
				{2, "policy.environments", `environment "prod"`},
				{4, "store.pth", "unknown field"},
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			checkPlaces(t, "t.yaml", err, tt.want)
		})
	}
}

// Each setting authz.Config.Validate can name has its field in the file,
// at its line: a problem of the engine is reported where the operator
// wrote it, not at the section or the file.
func TestEngineProblemsAtTheirFields(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := `keys:
  sources: [authorization, X-Key]
headers:
  tenant: Tenant
errors:
  realm: 'a"b'
client_ip:
  trusted_hops: 1
signing:
  secret_file: ` + short + `
  header: x-org-id
rate_limits:
  tiers:
    gold: {requests: 0, window: 1m}
  default_tier: silver
  org: {requests: 1}
  tenant: {requests: 1, window: -1s}
  failed_auth: {requests: 1, window: 1s, burst: -1}
policy:
  org_header: authorization
  environments: [prod]
  introspection_path: me
routes:
  - path: nope
`
	_, err := Parse("t.yaml", []byte(file))
	checkPlaces(t, "t.yaml", err, []place{
		{2, "keys.sources", `credential source "X-Key"`},
		{3, "headers", `header name "Tenant"`},
		{5, "errors", `realm "a\"b"`},
		{7, "client_ip", "trusted_hops needs a header"},
		{10, "signing.secret_file", "signing secret is 5 bytes"},
		{11, "signing.header", `signing header "x-org-id" is also an identity header`},
		{14, "rate_limits.tiers.gold", "requests 0"},
		{15, "rate_limits.default_tier", `default tier "silver"`},
		{16, "rate_limits.org", "window 0s"},
		{17, "rate_limits.tenant", "window -1s"},
		{18, "rate_limits.failed_auth", "burst -1"},
		{20, "policy.org_header", `org header "authorization" is also a credential source`},
		{21, "policy.environments", `environment "prod"`},
		{22, "policy.introspection_path", `introspection path "me"`},
		{24, "routes[0]", `path "nope" must start with /`},
	})
}

// authzFields knows every setting authz.Config.Validate names, so that no
// problem is reported in Go's spelling ("RateLimits.Org") or at the top of
// the file; and nothing else, so that it does not outlive a rename.
func TestAuthzFieldsComplete(t *testing.T) {
	bad := ratelimit.Limit{Requests: 1}
	err := authz.Config{
		Sources:  []string{"X"},
		Headers:  authz.IdentityHeaders{Tenant: "X"},
		Errors:   authz.ErrorStyle{Format: "xml"},
		ClientIP: authz.ClientIP{TrustedHops: 1},
		Signing:  authz.Signing{Secret: []byte("short"), Header: "X"},
		RateLimits: authz.RateLimits{
			Tiers: map[string]authz.LimitSet{"gold": authz.One("gold", bad)}, DefaultTier: "silver",
			Org: authz.One("org", bad), Tenant: authz.One("tenant", bad), User: authz.One("user", bad), FailedAuth: ratelimit.Limit{Requests: 1, Window: time.Second, Burst: -1},
		},
		Policy: authz.Policy{OrgHeader: "X", Environments: []string{"prod"}, IntrospectionPath: "me"},
	}.Validate()
	noTiers := authz.Config{RateLimits: authz.RateLimits{Tiers: map[string]authz.LimitSet{}}}.Validate()
	seen := map[string]bool{}
	for _, e := range append(Unjoin(err), Unjoin(noTiers)...) {
		var fe *authz.FieldError
		if !errors.As(e, &fe) {
			t.Errorf("%v: not a FieldError", e)
			continue
		}
		seen[fe.Field] = true
		if _, ok := authzFields[fe.Field]; !ok {
			t.Errorf("authz setting %s (%v) has no field in authzFields", fe.Field, e)
		}
	}
	for f := range authzFields {
		if !seen[f] {
			t.Errorf("authzFields maps %s, which authz never names", f)
		}
	}
}

// Validation only looks: it changes nothing in the config it checks and
// writes no file (the signing secret is read while loading, once).
func TestValidateHasNoSideEffects(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("signing.key", []byte(strings.Repeat("k", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw := []byte("signing:\n  secret_file: signing.key\nrate_limits:\n  tiers:\n    gold: {requests: 5, window: 1s}\n")
	cfg, err := Parse("keygate.yaml", raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.signingSecret) != 32 {
		t.Fatalf("signing secret %q not loaded", cfg.signingSecret)
	}
	// Validation must check the secret loaded, not load it again.
	cfg.signingSecret = nil
	before := *cfg
	before.Keys.Tiers = slices.Clone(cfg.Keys.Tiers)
	p := &problems{file: "keygate.yaml", lines: map[string]int{}}
	cfg.validate(p)
	if err := p.err(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, *cfg) {
		t.Errorf("validate changed the config:\n%+v\nwas\n%+v", *cfg, before)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("files after loading: %v, want signing.key alone", entries)
	}
}

// serve builds the engine with the configured identity headers: a signing
// header that is one of them is refused by validate too, at its line.
func TestSigningHeaderClashesWithRenamedIdentityHeader(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("k", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Parse("t.yaml", []byte("headers:\n  tenant: x-sig\nsigning:\n  secret_file: "+key+"\n  header: x-sig\n"))
	checkPlaces(t, "t.yaml", err, []place{{5, "signing.header", `signing header "x-sig" is also an identity header`}})
}

// TestEmptySigningSecretRefused: an empty secret file would mean "no
// signing" to the engine; a file meant to turn signing on must not turn it
// off unseen.
func TestEmptySigningSecretRefused(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Parse("t.yaml", []byte("signing:\n  secret_file: "+empty+"\n"))
	checkPlaces(t, "t.yaml", err, []place{{2, "signing.secret_file", "is empty"}})
}
