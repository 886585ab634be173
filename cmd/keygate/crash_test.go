package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashAdmin is a bare admin API client for tests that must not pay for a
// process per call.
type crashAdmin struct {
	base, token string
	http        *http.Client
}

func (a crashAdmin) call(method, path string, body any, out any) (int, error) {
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

// TestCrashSafety kills Keygate with SIGKILL at random points while keys
// are created and revoked through the admin API, restarts it on the same
// file, and checks that every create or revoke that returned success is
// there, in the right state. bbolt's fsync on commit is the promise; a call
// cut off mid-flight may land either way.
func TestCrashSafety(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	var (
		tenant  string
		created = map[string]bool{} // id -> revoked (confirmed)
	)
	const rounds = 6
	for round := 0; round < rounds; round++ {
		s := startServer(t, dir)
		token, err := os.ReadFile(filepath.Join(dir, "keygate.admin-token"))
		if err != nil {
			t.Fatal(err)
		}
		a := crashAdmin{base: s.admin, token: strings.TrimSpace(string(token)), http: &http.Client{Timeout: 5 * time.Second}}

		// Everything confirmed before this crash must have survived the
		// previous one.
		for id, revoked := range created {
			var k map[string]any
			status, err := a.call("GET", "/v1/keys/"+id, nil, &k)
			if err != nil || status != 200 {
				t.Fatalf("round %d: key %s confirmed created is gone: %d %v", round, id, status, err)
			}
			if revoked && k["status"] != "revoked" {
				t.Fatalf("round %d: key %s confirmed revoked is %v", round, id, k["status"])
			}
		}
		if tenant == "" {
			var tn map[string]any
			if status, err := a.call("POST", "/v1/tenants", map[string]string{"name": "Acme"}, &tn); err != nil || status != 201 {
				t.Fatalf("create tenant: %d %v", status, err)
			}
			tenant = tn["id"].(string)
		}

		var mu sync.Mutex
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var k map[string]any
				status, err := a.call("POST", "/v1/keys", map[string]any{"tenant_id": tenant, "name": fmt.Sprint("k", round, "-", i)}, &k)
				if err != nil || status != 201 {
					return // the server is gone
				}
				id := k["id"].(string)
				mu.Lock()
				created[id] = false
				mu.Unlock()
				if i%2 == 0 {
					if status, err := a.call("POST", "/v1/keys/"+id+"/revoke", nil, nil); err != nil || status != 200 {
						return
					}
					mu.Lock()
					created[id] = true
					mu.Unlock()
				}
			}
		}()
		time.Sleep(time.Duration(30+rng.IntN(250)) * time.Millisecond) // a random point to crash at
		if err := s.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-s.exited
		close(stop)
		<-done
	}
	if len(created) < rounds {
		t.Fatalf("only %d keys created across %d rounds: the test did not exercise the store", len(created), rounds)
	}
	// A final start checks the last crash.
	s := startServer(t, dir)
	token, _ := os.ReadFile(filepath.Join(dir, "keygate.admin-token"))
	a := crashAdmin{base: s.admin, token: strings.TrimSpace(string(token)), http: &http.Client{Timeout: 5 * time.Second}}
	for id, revoked := range created {
		var k map[string]any
		if status, err := a.call("GET", "/v1/keys/"+id, nil, &k); err != nil || status != 200 || revoked && k["status"] != "revoked" {
			t.Fatalf("after the last crash: key %s (revoked=%v): %d %v %v", id, revoked, status, err, k["status"])
		}
	}
	t.Logf("%d keys confirmed across %d crashes", len(created), rounds)
}
