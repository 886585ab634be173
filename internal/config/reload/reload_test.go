package reload

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/config"
)

// policies is a PolicySetter that hands each policy set to the test.
type policies chan authz.Policy

func (p policies) SetPolicy(pol authz.Policy) error { p <- pol; return nil }

// TestWatchAppliesOnSIGHUP: the watch needs only the one method of the
// engine, and SIGHUP applies the file at once. The behaviour through the
// binary (file changes, half-written files, renames) is tested in
// cmd/keygate's reload tests.
func TestWatchAppliesOnSIGHUP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keygate.yaml")
	write := func(body string) {
		if err := os.WriteFile(path, []byte("reload_interval: 1h\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("routes:\n  - name: a\n    path_prefix: /a\n    scopes: [x]\n")
	stamp := Stamp(path)
	running, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	write("routes:\n  - name: a\n    path_prefix: /a\n    scopes: [x]\n  - name: b\n    path_prefix: /b\n    public: true\n")

	set := make(policies, 1)
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, running, stamp, set, hup, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() { cancel(); <-done }()

	hup <- syscall.SIGHUP
	select {
	case pol := <-set:
		if len(pol.Rules) != 2 || pol.Rules[1].Name != "b" {
			t.Fatalf("applied rules %+v, want a and b", pol.Rules)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SIGHUP did not apply the file within 10 s")
	}
}
