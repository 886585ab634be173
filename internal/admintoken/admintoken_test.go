package admintoken

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/internal/secret"
)

func noEnv(string) string { return "" }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func defaults(t *testing.T, dir string) *config.Config {
	t.Helper()
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = filepath.Join(dir, "keygate.db")
	return cfg
}

// TestGeneratedTokenSharedDirectory: replicas starting together on one
// directory (a shared volume) all end up with the one token in the file,
// never an error or an empty file.
func TestGeneratedTokenSharedDirectory(t *testing.T) {
	dir := t.TempDir()
	cfg := defaults(t, dir)
	for round := range 20 {
		os.Remove(File(cfg.Store.Path))
		tokens := make([]secret.Value, 8)
		errs := make([]error, 8)
		var wg sync.WaitGroup
		for i := range tokens {
			wg.Go(func() { tokens[i], errs[i] = Resolve(cfg, noEnv, discard) })
		}
		wg.Wait()
		raw, err := os.ReadFile(File(cfg.Store.Path))
		if err != nil {
			t.Fatal(err)
		}
		for i := range tokens {
			if errs[i] != nil || tokens[i].Reveal()+"\n" != string(raw) {
				t.Fatalf("round %d, replica %d: token %q, err %v; file holds %q", round, i, tokens[i].Reveal(), errs[i], raw)
			}
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".admin-token-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestTokenSources: the environment wins over a token file, which wins over
// the generated one; a short token is refused wherever it comes from; a
// listener off loopback is never given a generated token.
func TestTokenSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte(" from-file-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		name      string
		env       map[string]string
		tokenFile string // admin.token_file
		listen    string
		want      string // the token, or a part of the error
		wantErr   bool
	}{
		{name: "env", env: map[string]string{EnvToken: " from-env-0123456789 ", EnvFile: file}, want: "from-env-0123456789"},
		{name: "env file", env: map[string]string{EnvFile: file}, tokenFile: short, want: "from-file-0123456789"},
		{name: "config file", tokenFile: file, listen: "0.0.0.0:9003", want: "from-file-0123456789"},
		{name: "short env", env: map[string]string{EnvToken: "short"}, want: "from KEYGATE_ADMIN_TOKEN is shorter than 16", wantErr: true},
		{name: "short file", tokenFile: short, want: "from " + short + " is shorter than 16", wantErr: true},
		{name: "missing file", tokenFile: filepath.Join(dir, "missing"), want: "admin token: open", wantErr: true},
		{name: "not loopback", listen: "0.0.0.0:9003", want: "admin listener 0.0.0.0:9003 is not loopback: set KEYGATE_ADMIN_TOKEN or admin.token_file", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaults(t, t.TempDir())
			cfg.Admin.TokenFile = tc.tokenFile
			if tc.listen != "" {
				cfg.Listen.Admin = tc.listen
			}
			got, err := Resolve(cfg, env(tc.env), discard)
			switch {
			case tc.wantErr && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Resolve = %q, %v; want an error containing %q", got, err, tc.want)
			case !tc.wantErr && (err != nil || got.Reveal() != tc.want):
				t.Errorf("Resolve = %q, %v; want %q", got.Reveal(), err, tc.want)
			}
			if _, err := os.Stat(File(cfg.Store.Path)); !os.IsNotExist(err) {
				t.Errorf("a token was generated although none was needed (stat: %v)", err)
			}
		})
	}
}

// TestDefaultFile: the file the CLI reads by default is the one serve
// generates beside the default store.
func TestDefaultFile(t *testing.T) {
	if DefaultFile != "./keygate.admin-token" {
		t.Errorf("DefaultFile = %q, want ./keygate.admin-token", DefaultFile)
	}
	if got := File("/var/lib/keygate/k.db"); got != "/var/lib/keygate/k.admin-token" {
		t.Errorf("File = %q", got)
	}
}

// TestTokenPrintsRedacted: the token Resolve returns, generated or read,
// shows nothing of itself printed or logged; Reveal gives it.
func TestTokenPrintsRedacted(t *testing.T) {
	cfg := defaults(t, t.TempDir())
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	generated, err := Resolve(cfg, noEnv, log)
	if err != nil {
		t.Fatal(err)
	}
	fromEnv, err := Resolve(cfg, func(string) string { return "env-token-0123456789" }, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []secret.Value{generated, fromEnv} {
		log.Info("resolved", "token", tok, "cfg", struct{ Token secret.Value }{tok})
		out := fmt.Sprintf("%v %+v %#v %s %q %x %d", tok, tok, tok, tok, tok, tok, tok) + logs.String() + fmt.Errorf("token %v", tok).Error()
		if raw := tok.Reveal(); len(raw) < MinLen || strings.Contains(out, raw) || strings.Contains(out, raw[:8]) {
			t.Errorf("the token shows:\n%s", out)
		}
	}
}
