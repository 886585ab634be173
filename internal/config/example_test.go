package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const exampleConfig = "../../examples/keygate.yaml"

// uncommentedExample is the example config with its commented signing
// (and a secret for it) and etcd sections turned on, in a temp dir.
func uncommentedExample(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	on := regexp.MustCompile(`(?m)^# (signing:|  secret_file:|  header:)`).ReplaceAllString(string(raw), "$1")
	if strings.Count(on, "\nsigning:\n") != 1 {
		t.Fatalf("the example has no commented signing section to turn on:\n%s", raw)
	}
	on = regexp.MustCompile(`(?m)^  #(etcd:|  \w+:)`).ReplaceAllString(on, "  $1")
	if strings.Count(on, "\n  etcd:\n") != 1 {
		t.Fatalf("the example has no commented store.etcd section to turn on:\n%s", raw)
	}
	if err := os.WriteFile("signing.key", []byte(strings.Repeat("k", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "keygate.yaml")
	if err := os.WriteFile(path, []byte(on), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The example promises every field with its default or an example: each
// yaml field of config (and of a route) appears in it, signing once turned
// on, so a field added to the code without a line in the example fails.
func TestExampleConfigListsEveryField(t *testing.T) {
	raw, err := os.ReadFile(uncommentedExample(t))
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		t.Fatal(err)
	}
	lines := map[string]int{}
	indexLines(&root, "", lines) // the index loadConfig reports lines with
	present := map[string]bool{}
	index := regexp.MustCompile(`\[\d+\]`)
	for f := range lines {
		present[index.ReplaceAllString(f, "[]")] = true
	}
	var missing []string
	for _, f := range yamlFields(reflect.TypeFor[Config](), "") {
		if !present[f] {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s lacks %v", exampleConfig, missing)
	}
}

// yamlFields lists the dotted yaml paths of t's fields, "routes[].name" for
// the fields of a list of structs.
func yamlFields(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" {
			out = append(out, yamlFields(f.Type, prefix)...)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		if prefix != "" {
			name = prefix + "." + name
		}
		out = append(out, name)
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct:
			out = append(out, yamlFields(ft, name)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, yamlFields(ft.Elem(), name+"[]")...)
		}
	}
	return out
}

// The commented signing and etcd examples work once uncommented.
func TestExampleConfigSigningValidates(t *testing.T) {
	cfg, err := Load(uncommentedExample(t))
	if err != nil {
		t.Fatalf("the example with signing and etcd on: %v", err)
	}
	if !cfg.UsesEtcd() || cfg.Store.Etcd.Prefix != "/keygate/" {
		t.Errorf("etcd section: %+v", cfg.Store.Etcd)
	}
	if len(cfg.signingSecret) != 32 || cfg.Signing.Header != "x-keygate-signature" {
		t.Errorf("signing secret %d bytes, header %q", len(cfg.signingSecret), cfg.Signing.Header)
	}
}
