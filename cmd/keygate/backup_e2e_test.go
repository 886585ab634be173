package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/testetcd"
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

// TestStoreBackupEtcdWhileServing: on etcd, `keygate store backup FILE`
// asks a serving replica for a copy of the store at one etcd revision,
// while Checks and writes go on; the copy serves as a bbolt file, and
// restores into an empty etcd with `store migrate --from-bbolt`, every key
// with its state: revoked keys stay refused, balances are what they were.
func TestStoreBackupEtcdWhileServing(t *testing.T) {
	node := testetcd.Start(t)
	rs, cs := startReplicas(t, node.Endpoints(), 2)
	tenant := rs[0].cli(t, "tenants", "create", "--name", "Acme")["id"].(string)
	kept := rs[0].cli(t, "keys", "create", "--tenant", tenant, "--name", "kept", "--credits", "5")
	gone := rs[0].cli(t, "keys", "create", "--tenant", tenant, "--name", "gone")
	rs[1].cli(t, "keys", "revoke", gone["id"].(string))
	if ok, status, _ := cs[1].check(kept["key"].(string)); !ok {
		t.Fatalf("Check before the backup: %d", status)
	}
	// Every replica spends through etcd; the balance the copy holds is
	// what etcd holds once the replicas' slices went back.
	rs[0].cli(t, "keys", "credits", kept["id"].(string), "--set", "3")

	// Under load: both replicas answer Checks and r1 takes writes while r0
	// streams the copy.
	h := startHammer(cs, gone["key"].(string))
	stopWrites := make(chan struct{})
	wrote := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stopWrites:
				wrote <- n
				return
			default:
			}
			if _, err := tryCLI(rs[1], "tenants", "create", "--name", "busy"); err == nil {
				n++
			}
		}
	}()
	backup := filepath.Join(t.TempDir(), "copy.db")
	out := rs[0].cli(t, "store", "backup", backup)
	close(stopWrites)
	n := <-wrote
	h.stop()
	if out["file"] != backup || out["bytes"].(float64) <= 0 {
		t.Fatalf("store backup printed %v", out)
	}
	if h.checks.Load() == 0 || h.errs.Load() != 0 {
		t.Fatalf("Checks during the backup: %d, %d failed (%v)", h.checks.Load(), h.errs.Load(), h.firstErr.Load())
	}
	t.Logf("during the backup: %d Checks, %d tenants created", h.checks.Load(), n)

	assertRestored := func(c checker) {
		t.Helper()
		if ok, status, got := c.check(kept["key"].(string)); !ok || got != tenant {
			t.Fatalf("the kept key on the copy: allowed %v, status %d, tenant %q", ok, status, got)
		}
		if ok, status, _ := c.check(gone["key"].(string)); ok || status != 401 {
			t.Fatalf("the revoked key on the copy: allowed %v, status %d", ok, status)
		}
	}

	// The copy is a bbolt store a single server serves as it is (a copy of
	// it: serving spends, and the copy is restored into etcd below).
	served := filepath.Join(t.TempDir(), "served.db")
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, served, string(b))
	single := startServerWith(t, t.TempDir(), "KEYGATE_STORE="+served)
	assertRestored(newChecker(t, single.grpcAddr))
	got := single.cli(t, "keys", "get", kept["id"].(string))
	// One Check above spent one credit of the three.
	if got["credits_remaining"] != float64(2) {
		t.Fatalf("credits on the copy after one Check: %v, want 2 (3 at the backup)", got["credits_remaining"])
	}
	single.stop(t)

	// Restored into an empty etcd, replicas serve it.
	fresh := testetcd.Start(t)
	env := []string{"KEYGATE_ETCD_ENDPOINTS=" + fresh.Endpoint(), "KEYGATE_CONFIG="}
	if out, err := runKeygate(t, env, "store", "migrate", "--from-bbolt", backup); err != nil || !strings.Contains(out, "2 keys") {
		t.Fatalf("restore the copy into etcd: %v\n%s", err, out)
	}
	restored, rcs := startReplicas(t, fresh.Endpoints(), 1)
	assertRestored(rcs[0])
	if got := restored[0].cli(t, "keys", "get", kept["id"].(string)); got["credits_remaining"] != float64(2) {
		t.Fatalf("credits restored into etcd after one Check: %v, want 2", got["credits_remaining"])
	}
}
