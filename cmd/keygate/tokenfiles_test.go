package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTokenFiles: told of no token, the CLI finds the one serve generated
// beside the store KEYGATE_STORE or the config names, then in the user's
// config directory; an explicit file or KEYGATE_ADMIN_TOKEN wins.
func TestTokenFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	write := func(path, token string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	token := func(env map[string]string, args ...string) (string, error) {
		c := &cli{getenv: func(k string) string { return env[k] }}
		m := newMgmtCommand(c, "list", "")
		if err := m.cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		v, err := m.token()
		return v.Reveal(), err
	}

	if _, err := token(nil); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "xdg", "keygate", "admin-token")) {
		t.Fatalf("no token anywhere: %v, want the files tried named", err)
	}
	write(filepath.Join(dir, "xdg", "keygate", "admin-token"), "from-user-config")
	if got, err := token(nil); err != nil || got != "from-user-config" {
		t.Fatalf("user config dir: %q %v", got, err)
	}
	store := filepath.Join(dir, "data", "prod.db")
	write(filepath.Join(dir, "data", "prod.admin-token"), "beside-the-store")
	if got, err := token(map[string]string{"KEYGATE_STORE": store}); err != nil || got != "beside-the-store" {
		t.Fatalf("KEYGATE_STORE: %q %v", got, err)
	}
	cfg := filepath.Join(dir, "keygate.yaml")
	if err := os.WriteFile(cfg, []byte("store:\n  path: "+store+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := token(map[string]string{"KEYGATE_CONFIG": cfg}); err != nil || got != "beside-the-store" {
		t.Fatalf("KEYGATE_CONFIG's store: %q %v", got, err)
	}
	explicit := filepath.Join(dir, "explicit")
	write(explicit, "explicit")
	if got, err := token(map[string]string{"KEYGATE_STORE": store}, "--admin-token-file", explicit); err != nil || got != "explicit" {
		t.Fatalf("--admin-token-file: %q %v", got, err)
	}
	if got, err := token(map[string]string{"KEYGATE_STORE": store, "KEYGATE_ADMIN_TOKEN_FILE": explicit}); err != nil || got != "explicit" {
		t.Fatalf("KEYGATE_ADMIN_TOKEN_FILE: %q %v", got, err)
	}
	if got, err := token(map[string]string{"KEYGATE_STORE": store, "KEYGATE_ADMIN_TOKEN": "from-env"}); err != nil || got != "from-env" {
		t.Fatalf("KEYGATE_ADMIN_TOKEN: %q %v", got, err)
	}
}
