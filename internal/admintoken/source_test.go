package admintoken

import (
	"os"
	"path/filepath"
	"testing"
)

// replace puts a new token file in place the way an operator should: a
// complete file renamed over the old one.
func replace(t *testing.T, path, token string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFileSourceRereads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	first, second := "first-token-0123456789", "second-token-012345678"
	replace(t, path, first)
	src, err := FileSource(path)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if v, err := src(); err != nil || v.Reveal() != first {
			t.Fatalf("first read: %v", err)
		}
	}
	// Same length as first, so only the file's identity or time tells
	// them apart.
	replace(t, path, second)
	if v, err := src(); err != nil || v.Reveal() != second {
		t.Fatalf("after replace: err %v, same token %v", err, v.Reveal() == first)
	}
	replace(t, path, "short")
	if _, err := src(); err == nil {
		t.Fatal("a too short token: want an error")
	}
	os.Remove(path)
	if _, err := src(); err == nil {
		t.Fatal("a removed file: want an error")
	}
	replace(t, path, first)
	if v, err := src(); err != nil || v.Reveal() != first {
		t.Fatalf("restored: %v", err)
	}
}

func TestSourceFollowsTheResolvedFile(t *testing.T) {
	dir := t.TempDir()
	cfg := defaults(t, dir)
	src, err := Source(cfg, noEnv, discard)
	if err != nil {
		t.Fatal(err)
	}
	generated, err := src()
	if err != nil || generated.IsZero() {
		t.Fatalf("generated: %v", err)
	}
	replace(t, File(cfg.Store.Path), "replaced-token-0123456789")
	if v, err := src(); err != nil || v.Reveal() != "replaced-token-0123456789" {
		t.Fatalf("after replace: %v", err)
	}

	env := func(k string) string {
		if k == EnvToken {
			return "from-the-environment-0123"
		}
		return ""
	}
	src, err = Source(cfg, env, discard)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := src(); err != nil || v.Reveal() != "from-the-environment-0123" {
		t.Fatalf("env token: %v", err)
	}
}
