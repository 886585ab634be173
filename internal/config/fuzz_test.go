package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/keygate/keygate/authz"
)

// FuzzParseConfig: no config file panics the loader, and whatever it
// accepts is usable by serve: the policy compiles and an engine builds.
func FuzzParseConfig(f *testing.F) {
	if ex, err := os.ReadFile(filepath.Join("..", "..", "examples", "keygate.yaml")); err == nil {
		f.Add(ex)
	}
	for _, s := range []string{
		"", "{}", "routes:\n  - path_pattern: /a/{x}/**\n    org_param: x\n",
		"routes: [{path: /a, path_prefix: /b}]", "store: {last_used_flush: 1h}",
		"rate_limits: {tiers: {gold: {requests: 5, window: 1s}}}", "keys: {prefix: \"\"}",
		"policy: {unmatched: deny, environments: [live]}", "- a\n- b",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		cfg, err := Parse("fuzz.yaml", raw)
		if err != nil {
			return
		}
		format, err := cfg.Format()
		if err != nil {
			t.Fatalf("accepted config has a bad format: %v", err)
		}
		acfg := cfg.AuthzConfig(format)
		if acfg.Policy, err = cfg.AuthzPolicy(); err != nil {
			t.Fatalf("accepted config has a bad policy: %v", err)
		}
		if _, err := authz.New(acfg, noLookup{}); err != nil {
			t.Fatalf("accepted config does not build an engine: %v\n%s", err, raw)
		}
	})
}
