// Package admintoken owns the bootstrap admin token: where serve finds it
// and the rules it must meet.
//
// The token comes, in this order, from KEYGATE_ADMIN_TOKEN, from a token
// file (KEYGATE_ADMIN_TOKEN_FILE, else admin.token_file), or, when neither
// is configured and only while the admin API listens on loopback, from a
// file beside the store (File), generated on first start with mode 0600 so
// that the README's one run command works on a fresh machine; the CLI reads
// that same file when it is given no token. A token shorter than MinLen is
// refused wherever it comes from, and a listener that is not on loopback
// without a configured token makes serve refuse to start rather than
// expose the admin API with a made-up or empty secret.
package admintoken

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/internal/secret"
)

// The environment variables the token is read from; they win over the
// config file, as every KEYGATE_* setting does.
const (
	EnvToken = "KEYGATE_ADMIN_TOKEN"
	EnvFile  = "KEYGATE_ADMIN_TOKEN_FILE"
)

// MinLen keeps guessable admin tokens out.
const MinLen = 16

// File is where serve keeps a generated admin token for the store at
// storePath: beside it, with the store's extension replaced.
func File(storePath string) string {
	return strings.TrimSuffix(storePath, filepath.Ext(storePath)) + ".admin-token"
}

// DefaultFile is File for the default store, "./keygate.admin-token": where
// the CLI looks when it is given no token and no token file.
var DefaultFile = File(config.DefaultStorePath)

// Resolve finds serve's admin token for cfg, reading the environment
// through getenv. A generated token is logged (its file, not its value) on
// log. The token prints and logs redacted; Reveal it only to compare it.
func Resolve(cfg *config.Config, getenv func(string) string, log *slog.Logger) (secret.Value, error) {
	if t := strings.TrimSpace(getenv(EnvToken)); t != "" {
		return check(t, EnvToken)
	}
	file := getenv(EnvFile)
	if file == "" {
		file = cfg.Admin.TokenFile
	}
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return secret.Value{}, fmt.Errorf("admin token: %w", err)
		}
		return check(strings.TrimSpace(string(raw)), file)
	}
	if !config.IsLoopback(cfg.Listen.Admin) {
		return secret.Value{}, fmt.Errorf("admin listener %s is not loopback: set %s or admin.token_file", cfg.Listen.Admin, EnvToken)
	}
	path := File(cfg.Store.Path)
	if raw, err := os.ReadFile(path); err == nil {
		return check(strings.TrimSpace(string(raw)), path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return secret.Value{}, fmt.Errorf("admin token: %w", err)
	}
	token, err := generate(path)
	if err != nil {
		return secret.Value{}, err
	}
	if !token.IsZero() {
		log.Info("generated an admin token (admin API on loopback, none configured)", "file", path)
		return token, nil
	}
	// Another replica placed its token first.
	raw, err := os.ReadFile(path)
	if err != nil {
		return secret.Value{}, fmt.Errorf("admin token: %w", err)
	}
	return check(strings.TrimSpace(string(raw)), path)
}

// generate places a random token at path and returns it, or returns the
// zero Value when a file is already there.
func generate(path string) (secret.Value, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return secret.Value{}, fmt.Errorf("admin token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(b[:])
	// Written whole under another name, then linked into place: replicas
	// starting together on one directory either place their token or find
	// a complete one, never an empty or half-written file.
	fh, err := os.CreateTemp(filepath.Dir(path), ".admin-token-*")
	if err != nil {
		return secret.Value{}, fmt.Errorf("admin token: %w", err)
	}
	defer os.Remove(fh.Name())
	_, werr := fh.WriteString(token + "\n")
	if err := errors.Join(werr, fh.Sync(), fh.Chmod(0o600), fh.Close()); err != nil {
		return secret.Value{}, fmt.Errorf("admin token %s: %w", path, err)
	}
	if err := os.Link(fh.Name(), path); errors.Is(err, os.ErrExist) {
		return secret.Value{}, nil
	} else if err != nil {
		return secret.Value{}, fmt.Errorf("admin token %s: %w", path, err)
	}
	return secret.New(token), nil
}

func check(t, from string) (secret.Value, error) {
	if len(t) < MinLen {
		return secret.Value{}, fmt.Errorf("admin token from %s is shorter than %d characters", from, MinLen)
	}
	return secret.New(t), nil
}
