package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The reload tests run the real binary with a config file, change the file
// (or send SIGHUP) and watch the policy change through real gRPC Checks,
// while another client keeps checking to prove no request is dropped or
// failed during a swap.

// replaceFile writes body to path as a new file renamed over the old one,
// the way a Kubernetes ConfigMap update lands, so the watcher never reads a
// half-written file (an empty file would be a valid config with no routes).
func replaceFile(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, body)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func reloadConfig(interval string, admin string) string {
	return fmt.Sprintf("reload_interval: %s\nroutes:\n  - name: admin\n    path_pattern: /admin/**\n%s", interval, admin)
}

const (
	adminScoped = "    scopes: [admin]\n"
	adminPublic = "    public: true\n"
)

// startWithConfig starts `keygate serve` on the config file cfg, given as
// KEYGATE_CONFIG, which serve reads exactly like --config (startServer
// passes the test's environment on and takes no arguments).
func startWithConfig(t *testing.T, dir, cfg string) *server {
	t.Helper()
	t.Setenv("KEYGATE_CONFIG", cfg)
	return startServer(t, dir)
}

// keyAndClient creates, through the CLI, a key without the admin scope,
// and returns it with a Check client built from go-control-plane's types.
func keyAndClient(t *testing.T, s *server) (string, authv3.AuthorizationClient) {
	t.Helper()
	tenant := s.cli(t, "tenants", "create", "--name", "Acme")
	key := s.cli(t, "keys", "create", "--tenant", tenant["id"].(string), "--name", "Backend", "--scopes", "vault:read")
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return key["key"].(string), authv3.NewAuthorizationClient(conn)
}

func check(client authv3.AuthorizationClient, key, path string) (*authv3.CheckResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Host: "api.example.com", Headers: map[string]string{"x-api-key": key}},
	}}})
}

// answer summarises a CheckResponse: "allow", or the HTTP status and the
// reason code Keygate puts in the gRPC status message.
func answer(resp *authv3.CheckResponse) string {
	if resp.GetStatus().GetCode() == 0 && resp.GetOkResponse() != nil {
		return "allow"
	}
	return fmt.Sprintf("%d %s", resp.GetDeniedResponse().GetStatus().GetCode(), resp.GetStatus().GetMessage())
}

const scopeDenied = "403 insufficient_scope"

func mustAnswer(t *testing.T, client authv3.AuthorizationClient, key, path, want string) {
	t.Helper()
	resp, err := check(client, key, path)
	if err != nil {
		t.Fatalf("Check %s: %v", path, err)
	}
	if got := answer(resp); got != want {
		t.Fatalf("Check %s = %s, want %s", path, got, want)
	}
}

// waitAnswer polls Check every 50 ms until it answers want, for at most
// 10 s: the watcher reloads asynchronously, so there is no event to wait on.
func waitAnswer(t *testing.T, s *server, client authv3.AuthorizationClient, key, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		resp, err := check(client, key, path)
		if err != nil {
			t.Fatalf("Check %s: %v", path, err)
		}
		if last = answer(resp); last == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("Check %s still answers %s after 10 s, want %s\n%s", path, last, want, s.logs)
}

// waitLog waits (50 ms polls, 10 s at most) for the n-th occurrence of
// text in the server's log, and fails at once if the server exits.
func waitLog(t *testing.T, s *server, text string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Count(s.logs.String(), text) >= n {
			return
		}
		select {
		case err := <-s.exited:
			t.Fatalf("keygate serve exited (%v) before its log said %q:\n%s", err, text, s.logs)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("the log does not say %q %d times after 10 s:\n%s", text, n, s.logs)
}

// prober keeps checking /admin/x in the background. Each answer must be one
// of the two policies' (scope denied, or allowed): a gRPC error, a 503 or
// anything else means a reload dropped or broke a request.
type prober struct {
	stop    chan struct{}
	stopped sync.Once
	done    chan struct{}
	mu      sync.Mutex
	answers map[string]int
	bad     []string
}

func startProber(t *testing.T, client authv3.AuthorizationClient, key string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{}), answers: map[string]int{}}
	t.Cleanup(p.halt) // also when the test fails before finish
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			resp, err := check(client, key, "/admin/x")
			got := ""
			if err != nil {
				got = "gRPC error: " + err.Error()
			} else {
				got = answer(resp)
			}
			p.mu.Lock()
			p.answers[got]++
			if got != "allow" && got != scopeDenied && len(p.bad) < 10 {
				p.bad = append(p.bad, got)
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// await waits (10 s at most) until the prober gets want once more than it
// had so far, so that it is known to have checked under a new policy.
func (p *prober) await(t *testing.T, want string) {
	t.Helper()
	p.mu.Lock()
	n := p.answers[want]
	p.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		m := p.answers[want]
		p.mu.Unlock()
		if m > n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the background Checks did not get %q within 10 s", want)
}

func (p *prober) halt() {
	p.stopped.Do(func() { close(p.stop) })
	<-p.done
}

// finish stops the prober and fails t on any bad answer. want lists the
// answers it must have seen, so that it is known to have run across the
// reloads rather than before or after them.
func (p *prober) finish(t *testing.T, want ...string) {
	t.Helper()
	p.halt()
	if len(p.bad) > 0 {
		t.Errorf("requests failed during reloads: %q (all answers: %v)", p.bad, p.answers)
	}
	for _, w := range want {
		if p.answers[w] == 0 {
			t.Errorf("the background Checks never saw %q (answers: %v)", w, p.answers)
		}
	}
	t.Logf("background Checks: %v", p.answers)
}

func TestReloadOnFileChange(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	replaceFile(t, cfg, reloadConfig("200ms", adminScoped))
	s := startWithConfig(t, dir, cfg)
	key, client := keyAndClient(t, s)

	// The key is valid (an unmatched route lets it through) but lacks the
	// admin scope the admin route requires.
	mustAnswer(t, client, key, "/other", "allow")
	mustAnswer(t, client, key, "/admin/x", scopeDenied)

	p := startProber(t, client, key)
	p.await(t, scopeDenied) // answers under the first policy

	replaceFile(t, cfg, reloadConfig("200ms", adminPublic))
	waitAnswer(t, s, client, key, "/admin/x", "allow")
	p.await(t, "allow")
	waitLog(t, s, "routes and policy reloaded", 1)

	// An invalid file is refused and the running (public) policy stays.
	// Its first route would make /admin scoped again: had any of it been
	// applied, /admin/x would be denied.
	replaceFile(t, cfg, reloadConfig("200ms", adminScoped)+"  - name: broken\n    path_pattern: /a/{x}/{x}\n")
	waitLog(t, s, "config reload refused", 1)
	if !strings.Contains(s.logs.String(), "parameter {x} twice") {
		t.Errorf("the refusal does not say what is wrong:\n%s", s.logs)
	}
	mustAnswer(t, client, key, "/admin/x", "allow")

	// The watcher survives a refusal: the next valid file applies.
	replaceFile(t, cfg, reloadConfig("200ms", adminScoped))
	waitAnswer(t, s, client, key, "/admin/x", scopeDenied)
	p.await(t, scopeDenied)

	p.finish(t, "allow", scopeDenied)
	if n := strings.Count(s.logs.String(), "routes and policy reloaded"); n != 2 {
		t.Errorf("%d reloads logged, want 2 (the refused file is not one):\n%s", n, s.logs)
	}
	s.stop(t)
}

func TestReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	replaceFile(t, cfg, reloadConfig("-1s", adminScoped))
	s := startWithConfig(t, dir, cfg)
	// SIGHUP at once: the handler is in place before the server says it is
	// serving, so the signal's default action (exit) never applies.
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s, "SIGHUP: reloading config", 1)
	select {
	case err := <-s.exited:
		t.Fatalf("keygate serve exited on SIGHUP: %v\n%s", err, s.logs)
	default:
	}

	raw, client := keyAndClient(t, s)
	mustAnswer(t, client, raw, "/admin/x", scopeDenied)

	p := startProber(t, client, raw)
	p.await(t, scopeDenied)
	replaceFile(t, cfg, reloadConfig("-1s", adminPublic))
	// With -1s the file is not watched: longer than the 2 s default
	// interval later, the change is still not applied.
	time.Sleep(2500 * time.Millisecond)
	mustAnswer(t, client, raw, "/admin/x", scopeDenied)
	if strings.Contains(s.logs.String(), "config file changed") {
		t.Fatalf("the file was polled with reload_interval -1s:\n%s", s.logs)
	}

	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, s, client, raw, "/admin/x", "allow")
	waitLog(t, s, "SIGHUP: reloading config", 2)
	p.await(t, "allow")
	p.finish(t, "allow", scopeDenied)
	s.stop(t)
}
