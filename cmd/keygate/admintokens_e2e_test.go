package main

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestServeRereadsBootstrapToken: keygate serve takes a replaced token file
// on the next request, without a restart.
func TestServeRereadsBootstrapToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "admin-token")
	put := func(tok string) {
		t.Helper()
		if err := os.WriteFile(file+".new", []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".new", file); err != nil {
			t.Fatal(err)
		}
	}
	first, second := "first-bootstrap-token-0123", "second-bootstrap-token-0123"
	put(first)
	s := startServerWith(t, dir, "KEYGATE_ADMIN_TOKEN_FILE="+file)
	status := func(tok string) int {
		t.Helper()
		req, err := http.NewRequest("GET", s.admin+"/v1/tenants", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(first); got != http.StatusOK {
		t.Fatalf("first token: %d", got)
	}
	put(second)
	if got := status(first); got != http.StatusUnauthorized {
		t.Fatalf("replaced token: %d", got)
	}
	if got := status(second); got != http.StatusOK {
		t.Fatalf("new token: %d", got)
	}
}
