package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/keygate/keygate/internal/config"
)

// TestGeneratedTokenSharedDirectory: replicas starting together on one
// directory (a shared volume) all end up with the one token in the file,
// never an error or an empty file.
func TestGeneratedTokenSharedDirectory(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = filepath.Join(dir, "keygate.db")
	c := &cli{stdout: io.Discard, stderr: io.Discard, getenv: noEnv}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for round := range 20 {
		os.Remove(config.DefaultTokenFile(cfg.Store.Path))
		tokens := make([]string, 8)
		errs := make([]error, 8)
		var wg sync.WaitGroup
		for i := range tokens {
			wg.Go(func() { tokens[i], errs[i] = adminToken(cfg, c, log) })
		}
		wg.Wait()
		raw, err := os.ReadFile(config.DefaultTokenFile(cfg.Store.Path))
		if err != nil {
			t.Fatal(err)
		}
		for i := range tokens {
			if errs[i] != nil || tokens[i]+"\n" != string(raw) {
				t.Fatalf("round %d, replica %d: token %q, err %v; file holds %q", round, i, tokens[i], errs[i], raw)
			}
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".admin-token-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
