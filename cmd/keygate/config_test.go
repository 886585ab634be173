package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// noEnv is an empty environment, so the host's KEYGATE_* variables cannot
// change what a test sees.
func noEnv(string) string { return "" }

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// validate runs `keygate config validate path` in-process.
func validate(t *testing.T, path string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"config", "validate", path}, &out, &errOut, noEnv)
	return out.String(), errOut.String(), err
}

// wantProblem is one problem a bad file must be reported with: its line,
// the dotted field and a fragment of the message.
type wantProblem struct {
	line  int
	field string
	msg   string
}

// checkProblems requires stderr to hold exactly the wanted problems, one a
// line, in the order of the file, each as "file:line: field: ...msg...".
func checkProblems(t *testing.T, file, stderr string, want []wantProblem) {
	t.Helper()
	got := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(got) != len(want) {
		t.Errorf("%d problems reported, want %d:\n%s", len(got), len(want), stderr)
	}
	for i, w := range want {
		prefix := fmt.Sprintf("%s:%d: %s: ", file, w.line, w.field)
		j := slices.IndexFunc(got, func(l string) bool { return strings.HasPrefix(l, prefix) && strings.Contains(l, w.msg) })
		if j < 0 {
			t.Errorf("no problem %q...%q in:\n%s", prefix, w.msg, stderr)
			continue
		}
		// The order of want is the order of the file: an operator reads
		// the report top to bottom beside the file.
		if j != i {
			t.Errorf("problem %q is line %d of the report, want %d:\n%s", prefix, j+1, i+1, stderr)
		}
	}
}

func TestConfigValidateOK(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keygate.yaml")
	writeFile(t, path, `policy:
  unmatched: deny
  org_header: x-org-id
  environments: [live]
  introspection_path: /api/v2/me
routes:
  - name: health
    path: /healthz
    public: true
  - name: vault
    methods: [GET]
    path_pattern: /api/v2/vault/**
    scopes: [vault:read]
    cost: 2
  - name: orgs
    path_pattern: /api/v2/orgs/{org}/**
    org_param: org
reload_interval: 500ms
`)
	stdout, stderr, err := validate(t, path)
	if err != nil {
		t.Fatalf("validate = %v\nstderr: %s", err, stderr)
	}
	if want := path + ": ok (3 routes)\n"; stdout != want || stderr != "" {
		t.Fatalf("stdout %q, stderr %q; want stdout %q and no stderr", stdout, stderr, want)
	}
}

// semanticProblems is a file that decodes but is wrong in eleven places,
// across sections and routes; the line numbers below are the ones written
// here. Every problem must be reported, not only the first: a bad
// policy.unmatched in particular must not hide the routes' problems.
const semanticProblems = `keys:
  prefix: A_B
errors:
  format: xml
policy:
  unmatched: maybe
  environments: [prod]
client_ip:
  header: x-forwarded-for
signing:
  secret_file: SECRET
routes:
  - name: dup-param
    path_pattern: /a/{x}/{x}
  - name: org-missing
    path_pattern: /b/{y}/**
    org_param: org
  - name: both
    path: /c
    path_prefix: /c/
  - name: public-scoped
    path: /d
    public: true
    scopes: [admin]
  - name: bad-env
    path: /e
    environments: [prod]
`

var semanticWant = []wantProblem{
	{2, "keys.prefix", `invalid key prefix "A_B"`},
	// errors and client_ip are checked as whole sections (their fields
	// depend on each other), so they are reported at the section's line.
	{3, "errors", `error format "xml"`},
	{6, "policy.unmatched", `"maybe": want allow_with_key or deny`},
	{7, "policy.environments", `environment "prod"`},
	{8, "client_ip", `header "x-forwarded-for" needs trusted_hops`},
	{11, "signing.secret_file", "signing secret is 5 bytes, want at least 32"},
	{13, "routes[0]", "parameter {x} twice"},
	{15, "routes[1]", `org_param "org" is not a {parameter} of path_pattern`},
	{18, "routes[2]", "set only one of path, path_prefix and path_pattern"},
	{21, "routes[3]", "a public route cannot require scopes"},
	{25, "routes[4]", `environment "prod"`},
}

// writeSemanticProblems writes semanticProblems with its 5-byte secret.
func writeSemanticProblems(t *testing.T, dir string) string {
	t.Helper()
	secret := filepath.Join(dir, "short.key")
	writeFile(t, secret, "short")
	path := filepath.Join(dir, "bad.yaml")
	writeFile(t, path, strings.Replace(semanticProblems, "SECRET", secret, 1))
	return path
}

func TestConfigValidateReportsEverySemanticProblem(t *testing.T) {
	path := writeSemanticProblems(t, t.TempDir())
	stdout, stderr, err := validate(t, path)
	if err == nil || !strings.Contains(err.Error(), "is not valid") {
		t.Fatalf("validate = %v, want 'is not valid'", err)
	}
	if stdout != "" {
		t.Errorf("stdout %q for an invalid file", stdout)
	}
	checkProblems(t, path, stderr, semanticWant)
}

const typeErrors = `store:
  pth: x.db
  last_used_flush: soon
routes:
  - name: a
    path: /a
    scope: [admin]
shutdown_timeout: 5 minutes
reload_interval: 1s
`

// YAML type errors (unknown fields, values that do not decode) are found by
// the decoder, before any semantic check, so they have a file of their own.
// Each is reported, a bad duration does not hide an unknown field, and each
// names its line and field like the semantic problems do.
func TestConfigValidateReportsEveryTypeError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "typos.yaml")
	writeFile(t, path, typeErrors)
	_, stderr, err := validate(t, path)
	if err == nil {
		t.Fatal("validate accepted a file with typos")
	}
	checkProblems(t, path, stderr, []wantProblem{
		{2, "store.pth", "unknown field"},
		{3, "store.last_used_flush", `invalid duration "soon"`},
		// A typo in a route must not quietly drop its requirement.
		{7, "routes[0].scope", "unknown field"},
		{8, "shutdown_timeout", `"5 minutes"`},
	})
}

// serve loads its file with the same code: a bad file (either kind) is
// refused with the same messages, before the store is created or a port is
// opened.
func TestServeRefusesBadConfigWithValidateMessages(t *testing.T) {
	dir := t.TempDir()
	typos := filepath.Join(dir, "typos.yaml")
	writeFile(t, typos, typeErrors)
	for _, path := range []string{writeSemanticProblems(t, dir), typos} {
		_, stderr, err := validate(t, path)
		if err == nil {
			t.Fatalf("validate accepted %s", path)
		}
		store := filepath.Join(dir, "k.db")
		env := map[string]string{"KEYGATE_ADMIN_TOKEN": "0123456789abcdef0123"}
		err = run(context.Background(), []string{"serve", "--config", path, "--store", store, "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"},
			&bytes.Buffer{}, &bytes.Buffer{}, func(k string) string { return env[k] })
		if err == nil {
			t.Fatalf("serve accepted %s", path)
		}
		if got, want := err.Error()+"\n", stderr; got != want {
			t.Errorf("serve refused %s with\n%s\nvalidate reported\n%s", path, got, want)
		}
		if _, err := os.Stat(store); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("serve created its store before refusing %s: %v", path, err)
		}
	}
}

// An org header that is also a credential source is refused by the engine
// when serve builds it; validate must refuse it too, at its line, or a file
// that validates would not start.
func TestConfigValidateOrgHeaderClashesWithSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keygate.yaml")
	writeFile(t, path, "keys:\n  sources: [authorization, x-api-key]\npolicy:\n  org_header: x-api-key\n")
	_, stderr, err := validate(t, path)
	if err == nil {
		t.Fatal("validate accepted an org header that is a credential source")
	}
	checkProblems(t, path, stderr, []wantProblem{{4, "policy.org_header", `org header "x-api-key" is also a credential source`}})

	// The same header is fine when it is not a source.
	writeFile(t, path, "keys:\n  sources: [authorization]\npolicy:\n  org_header: x-api-key\n")
	if _, stderr, err := validate(t, path); err != nil {
		t.Fatalf("validate = %v\n%s", err, stderr)
	}
}

const exampleConfig = "../../examples/keygate.yaml"

func TestExampleConfigValidates(t *testing.T) {
	stdout, stderr, err := validate(t, exampleConfig)
	if err != nil {
		t.Fatalf("%s: %v\n%s", exampleConfig, err, stderr)
	}
	if want := exampleConfig + ": ok (5 routes)\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
}

// TestValidateReportsTypeAndMeaningTogether: one pass shows a type error
// (unknown field) and a problem of meaning (a bad environment) at once.
func TestValidateReportsTypeAndMeaningTogether(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mixed.yaml")
	body := "store:\n  pth: x.db\npolicy:\n  environments: [prod]\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"config", "validate", path}, io.Discard, &stderr, func(string) string { return "" })
	if err == nil {
		t.Fatal("validate accepted the file")
	}
	for _, want := range []string{path + ":2:", "pth", path + ":4:", "prod"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("validate output lacks %q:\n%s", want, stderr.String())
		}
	}
}

// valueTypeErrors are values of the wrong type, several sharing a line
// with other fields; the line numbers below are the ones written here.
const valueTypeErrors = `rate_limits:
  tiers:
    standard: {requests: 100, window: nope}
    gold: {requests: 1000, window: 1m, burst: lots}
routes:
  - {name: a, path: /a, cost: many}
  - name: b
    path: /b
    scopes: admin
store:
  last_used_flush: 10
`

// A value that does not decode is reported at its own field and line, not
// at another field of its line, and not again as the zero it was left at
// (the bad window is not also "window 0s").
func TestConfigValidateNamesTheFieldOfAValueTypeError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "types.yaml")
	writeFile(t, path, valueTypeErrors)
	_, stderr, err := validate(t, path)
	if err == nil {
		t.Fatal("validate accepted values of the wrong type")
	}
	checkProblems(t, path, stderr, []wantProblem{
		{3, "rate_limits.tiers.standard.window", `invalid duration "nope"`},
		{4, "rate_limits.tiers.gold.burst", "`lots` into int"},
		{6, "routes[0].cost", "`many` into int"},
		{9, "routes[1].scopes", "`admin` into []string"},
		{11, "store.last_used_flush", `missing unit in duration "10"`},
	})
}
