package admintoken

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/internal/secret"
)

// Source resolves the bootstrap token as Resolve does and returns a
// function that gives the current one: a token from the environment never
// changes, while a token file is read again whenever its size, time or
// identity changes, so an operator replaces the token without a restart.
// Replace the file by renaming a complete one into place: a file caught
// half-written is refused until it is whole, never accepted in part.
func Source(cfg *config.Config, getenv func(string) string, log *slog.Logger) (func() (secret.Value, error), error) {
	token, err := Resolve(cfg, getenv, log)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(getenv(EnvToken)) != "" {
		return func() (secret.Value, error) { return token, nil }, nil
	}
	path := getenv(EnvFile)
	if path == "" {
		path = cfg.Admin.TokenFile
	}
	if path == "" {
		path = File(cfg.Store.Path)
	}
	return FileSource(path)
}

// FileSource returns the token in the file at path, read again whenever
// the file changes. An unreadable or too short file is an error, so a
// token file that was removed stops admitting its old token.
func FileSource(path string) (func() (secret.Value, error), error) {
	w := &watched{path: path}
	if _, err := w.get(); err != nil {
		return nil, err
	}
	return w.get, nil
}

type watched struct {
	path string

	mu    sync.Mutex
	size  int64
	mtime time.Time
	info  os.FileInfo
	token secret.Value
	err   error
}

func (w *watched) get() (secret.Value, error) {
	fi, err := os.Stat(w.path)
	if err != nil {
		return secret.Value{}, fmt.Errorf("admin token: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// Rename into place gives a new file (os.SameFile fails) even when size
	// and time match to the clock's resolution.
	if w.info != nil && os.SameFile(w.info, fi) && fi.Size() == w.size && fi.ModTime().Equal(w.mtime) {
		return w.token, w.err
	}
	raw, err := os.ReadFile(w.path)
	if err != nil {
		return secret.Value{}, fmt.Errorf("admin token: %w", err)
	}
	w.info, w.size, w.mtime = fi, fi.Size(), fi.ModTime()
	w.token, w.err = check(strings.TrimSpace(string(raw)), w.path)
	return w.token, w.err
}
