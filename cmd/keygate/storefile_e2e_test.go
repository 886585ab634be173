package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

const storeFileGoneLog = "store file was deleted or replaced under the running server: writes refused, restart Keygate once the file is restored"

// TestStoreFileDeletedUnderServer is the attack that found the flaw: `rm
// keygate.db` under a running server, which went on answering 201 to writes
// that the next start could not read. Now no write is acknowledged after
// the delete (503), /readyz says not ready, the log says why once, and
// Checks keep answering from the file the server holds. That file is then
// copied back from where the log line says it is still readable and the
// server restarted: every write acknowledged is there, and none of the
// refused ones.
func TestStoreFileDeletedUnderServer(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keygate.db")
	s := startServer(t, dir)
	token, err := os.ReadFile(filepath.Join(dir, "keygate.admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	a := crashAdmin{base: s.admin, token: strings.TrimSpace(string(token)), http: &http.Client{Timeout: 10 * time.Second}}

	var tn map[string]any
	if status, err := a.call("POST", "/v1/tenants", map[string]string{"name": "Acme"}, &tn); err != nil || status != 201 {
		t.Fatalf("create tenant: %d %v", status, err)
	}
	tenant := tn["id"].(string)
	acked := map[string]string{} // key id -> secret, for every 201
	var secrets []string
	for i := range 5 {
		var k map[string]any
		if status, err := a.call("POST", "/v1/keys", map[string]any{"tenant_id": tenant, "name": fmt.Sprint("before-", i)}, &k); err != nil || status != 201 {
			t.Fatalf("create key: %d %v", status, err)
		}
		acked[k["id"].(string)] = k["key"].(string)
		secrets = append(secrets, k["key"].(string))
	}
	if status := ready(t, s); status != 200 {
		t.Fatalf("/readyz before the delete: %d", status)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	ackedAfter := 0
	for i := range 5 {
		var e map[string]any
		status, err := a.call("POST", "/v1/keys", map[string]any{"tenant_id": tenant, "name": fmt.Sprint("after-", i)}, &e)
		if err != nil {
			t.Fatal(err)
		}
		if status == 201 {
			ackedAfter++
			if sec, ok := e["key"].(string); ok {
				secrets = append(secrets, sec)
			}
			continue
		}
		if status != 503 || e["code"] != "unavailable" {
			t.Fatalf("create key after the delete: %d %v, want 503 unavailable", status, e)
		}
	}
	if ackedAfter > 0 {
		t.Fatalf("%d writes acknowledged after the store file was deleted: a restart cannot read them", ackedAfter)
	}
	for id := range acked {
		if status, err := a.call("POST", "/v1/keys/"+id+"/revoke", nil, nil); err != nil || status != 503 {
			t.Fatalf("revoke after the delete: %d %v, want 503", status, err)
		}
		break
	}
	if status := ready(t, s); status == 200 {
		t.Fatal("/readyz says ready on a deleted store file")
	}
	// Reads lose nothing: the admin API and Checks answer from the held file.
	for id, secret := range acked {
		if status, err := a.call("GET", "/v1/keys/"+id, nil, nil); err != nil || status != 200 {
			t.Fatalf("get key after the delete: %d %v", status, err)
		}
		req, _ := http.NewRequest("GET", s.httpAddr+"/envoy/x", nil)
		req.Header.Set("X-Api-Key", secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("Check of a key acknowledged before the delete: %d, want 200", resp.StatusCode)
		}
	}
	ready(t, s)

	logs := s.logs.String()
	if n := strings.Count(logs, storeFileGoneLog); n != 1 {
		t.Fatalf("%d log lines saying the store file went, want 1 (after many refused writes and probes):\n%s", n, logs)
	}
	if !regexp.MustCompile(`path_missing"?[=:]true`).MatchString(logs) || !regexp.MustCompile(`held_inode"?[=:]\d+`).MatchString(logs) {
		t.Errorf("the log line does not say what happened:\n%s", logs)
	}

	// The log names where the held file can still be read: put a copy at
	// the path. It is another inode, so the server still refuses writes
	// until it is restarted on it.
	restored := false
	if runtime.GOOS == "linux" {
		m := regexp.MustCompile(`held_copy"?[=:]"?(/proc/\d+/fd/\d+)`).FindStringSubmatch(logs)
		if m == nil {
			t.Fatalf("the log line does not name the held file:\n%s", logs)
		}
		raw, err := os.ReadFile(m[1])
		if err != nil {
			t.Fatalf("read the held file at %s: %v", m[1], err)
		}
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		restored = true
		var e map[string]any
		if status, err := a.call("POST", "/v1/keys", map[string]any{"tenant_id": tenant, "name": "after-restore"}, &e); err != nil || status != 503 {
			t.Fatalf("write onto a file restored under the server: %d %v, want 503", status, err)
		}
	}
	s.stop(t)
	logs = s.logs.String()
	for _, secret := range secrets {
		sum := sha256.Sum256([]byte(secret))
		if strings.Contains(logs, secret) || strings.Contains(logs, hex.EncodeToString(sum[:])) {
			t.Fatal("the server log carries a key or its hash")
		}
	}

	s = startServer(t, dir)
	a.base = s.admin
	var page struct {
		Data []map[string]any `json:"data"`
	}
	status, err := a.call("GET", "/v1/keys?tenant_id="+tenant+"&limit=1000", nil, &page)
	if !restored {
		// The deleted file is gone with the keys it held; a new, empty one
		// was created. Nothing acknowledged after the delete is missing,
		// because nothing was acknowledged.
		t.Logf("restart on a new file: tenant lookup %d %v; 0 writes acknowledged after the delete", status, err)
		return
	}
	if err != nil || status != 200 {
		t.Fatalf("list keys after the restart: %d %v", status, err)
	}
	found := map[string]bool{}
	for _, k := range page.Data {
		found[k["id"].(string)] = true
		if name, _ := k["name"].(string); !strings.HasPrefix(name, "before-") {
			t.Errorf("a refused write is in the store after the restart: %v", k)
		}
	}
	lost := 0
	for id := range acked {
		if !found[id] {
			lost++
		}
	}
	t.Logf("%d writes acknowledged before the delete, %d after; after the restart %d keys read, %d acknowledged writes lost", len(acked)+1, ackedAfter, len(page.Data), lost)
	if lost > 0 || len(page.Data) != len(acked) {
		t.Fatalf("after the restart: %d of %d acknowledged keys lost, %d keys read", lost, len(acked), len(page.Data))
	}
	if status := ready(t, s); status != 200 {
		t.Fatalf("/readyz after the restart: %d", status)
	}
	if status, err := a.call("POST", "/v1/keys", map[string]any{"tenant_id": tenant, "name": "before-restart-done"}, nil); err != nil || status != 201 {
		t.Fatalf("write after the restart: %d %v", status, err)
	}
}

// ready returns /readyz's status.
func ready(t *testing.T, s *server) int {
	t.Helper()
	resp, err := http.Get(s.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
