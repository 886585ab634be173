package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStoreBackupWhileServing: `keygate store backup FILE` copies the store
// of a running server, which goes on serving, and `keygate serve` on the
// copy decides as the original did.
func TestStoreBackupWhileServing(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	tenant := s.cli(t, "tenants", "create", "--name", "Acme")
	key := s.cli(t, "keys", "create", "--tenant", tenant["id"].(string), "--name", "kept", "--credits", "5")
	gone := s.cli(t, "keys", "create", "--tenant", tenant["id"].(string), "--name", "gone")
	s.cli(t, "keys", "revoke", gone["id"].(string))
	c := newChecker(t, s.grpcAddr)
	if ok, _, _ := c.check(key["key"].(string)); !ok {
		t.Fatal("Check before the backup refused")
	}

	backup := filepath.Join(t.TempDir(), "copy.db")
	out := s.cli(t, "store", "backup", backup)
	if out["file"] != backup || out["bytes"].(float64) <= 0 {
		t.Fatalf("store backup printed %v", out)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v", fi, err)
	}
	if left, _ := os.ReadDir(filepath.Dir(backup)); len(left) != 1 {
		t.Fatalf("the backup's directory holds %d files, want the backup alone", len(left))
	}
	// The original still serves, and writes.
	if ok, _, _ := c.check(key["key"].(string)); !ok {
		t.Fatal("Check after the backup refused")
	}
	later := s.cli(t, "keys", "create", "--tenant", tenant["id"].(string), "--name", "later")

	env := append(s.env, "KEYGATE_ADMIN_URL="+s.admin)
	tokenFile := filepath.Join(dir, "keygate.admin-token")
	if out, err := runKeygate(t, env, "store", "backup", backup, "--admin-token-file", tokenFile); err == nil || !strings.Contains(out, "--force") {
		t.Fatalf("backup onto an existing file: %v\n%s", err, out)
	}
	if out, err := runKeygate(t, env, "store", "backup", backup, "--force", "--admin-token-file", tokenFile); err != nil {
		t.Fatalf("backup --force: %v\n%s", err, out)
	}
	if out, err := runKeygate(t, env, "store", "backup", filepath.Join(t.TempDir(), "x.db"), "--admin-token-file", filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatalf("backup without a token succeeded\n%s", out)
	}

	// What the issue found: migrate from a live store fails, now at once
	// and pointing at backup, and leaves no empty file behind.
	cfg := filepath.Join(t.TempDir(), "keygate.yaml")
	if err := os.WriteFile(cfg, []byte("store:\n  path: "+filepath.Join(dir, "keygate.db")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	migrated := filepath.Join(t.TempDir(), "migrated.db")
	if out, err := runKeygate(t, env, "store", "migrate", "--to-bbolt", migrated, "--config", cfg); err == nil || !strings.Contains(out, "keygate store backup") {
		t.Fatalf("migrate from a live store: %v\n%s", err, out)
	}
	if _, err := os.Stat(migrated); !os.IsNotExist(err) {
		t.Fatalf("migrate from a live store left %s: %v", migrated, err)
	}

	restored := startServerWith(t, t.TempDir(), "KEYGATE_STORE="+backup)
	rc := newChecker(t, restored.grpcAddr)
	if ok, status, _ := rc.check(key["key"].(string)); !ok {
		t.Fatalf("Check on the copy with a key made before the backup: %d", status)
	}
	if ok, status, _ := rc.check(gone["key"].(string)); ok || status != 401 {
		t.Fatalf("Check on the copy with a key revoked before the backup: %v %d", ok, status)
	}
	// --force took a second copy, which holds the key made after the first.
	if ok, status, _ := rc.check(later["key"].(string)); !ok {
		t.Fatalf("Check on the second copy with a key made before it: %d", status)
	}
	restored.stop(t)
	s.stop(t)
}
