package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

	// serve's environment overrides the store and the listeners: that is
	// not a change of the file. A section outside the policy changed in
	// the file is, and is said to need a restart.
	const restart = "config changes outside routes and policy take effect on restart"
	if strings.Contains(s.logs.String(), restart) {
		t.Errorf("a reload of routes only warned of other changes:\n%s", s.logs)
	}
	replaceFile(t, cfg, "log:\n  format: json\n"+reloadConfig("-1s", adminPublic))
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s, restart, 1)
	s.stop(t)
}

// Rules of the half-written-file tests. The health rule comes first, so a
// file cut off after it is valid YAML without the admin rule: /admin/x is
// then unmatched, and a valid key without the admin scope gets through.
const (
	ruleHealth  = "  - name: health\n    path: /healthz\n    public: true\n"
	ruleAdmin   = "  - name: admin\n    path_pattern: /admin/**\n    scopes: [admin]\n"
	ruleReports = "  - name: reports\n    path_pattern: /reports/**\n    scopes: [reports]\n"
)

// rulesConfig logs at debug, where the watch says it saw a change it has
// not yet seen twice.
func rulesConfig(interval string, rules ...string) string {
	return "log:\n  level: debug\nreload_interval: " + interval + "\nroutes:\n" + strings.Join(rules, "")
}

// sawVersion is how the log names a version of the file: by the first 6
// bytes of its SHA-256, as the watch's lines do.
func sawVersion(body string) string {
	sum := sha256.Sum256([]byte(body))
	return "sha256=" + hex.EncodeToString(sum[:6])
}

// waitLogFast is waitLog polling every 2 ms, for a test that must act
// within a fraction of reload_interval after the watch has looked.
func waitLogFast(t *testing.T, s *server, text string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Count(s.logs.String(), text) >= n {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("the log does not say %q %d times after 10 s:\n%s", text, n, s.logs)
}

func appendFile(t *testing.T, path, body string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(body); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestReloadWaitsOutHalfWrittenFile writes the config non-atomically, as
// an editor saving in place, cp or scp do (same inode, truncated and
// written again), or as rm and a slow write do (a new inode: what a rename
// also shows), in two steps: first a prefix cut before the admin rule, left
// until the watch has looked at it once, then the rest. The watch must not
// apply the prefix (a background client checking /admin/x without the
// admin scope is never let through) and must apply the complete file.
func TestReloadWaitsOutHalfWrittenFile(t *testing.T) {
	const every = 200 * time.Millisecond
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	prefix := rulesConfig("200ms", ruleHealth)
	withReports := rulesConfig("200ms", ruleHealth, ruleAdmin, ruleReports)
	withoutReports := rulesConfig("200ms", ruleHealth, ruleAdmin)
	replaceFile(t, cfg, withoutReports)
	s := startWithConfig(t, dir, cfg)
	key, client := keyAndClient(t, s)
	mustAnswer(t, client, key, "/admin/x", scopeDenied)
	mustAnswer(t, client, key, "/reports/x", "allow")

	p := startProber(t, client, key)
	p.await(t, scopeDenied)
	const rounds = 6
	var longest time.Duration
	for i := range rounds {
		full, reports := withReports, "403 insufficient_scope"
		if i%2 == 1 {
			full, reports = withoutReports, "allow"
		}
		seen := strings.Count(s.logs.String(), sawVersion(prefix))
		start := time.Now()
		if i%4 >= 2 {
			// rm, then a slow write of a new file.
			if err := os.Remove(cfg); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(t, cfg, prefix)
		// The watch has looked at the prefix (once: it logs each version it
		// has not seen twice) ...
		waitLogFast(t, s, sawVersion(prefix), seen+1)
		// ... and the rest lands before its next look.
		appendFile(t, cfg, strings.TrimPrefix(full, prefix))
		if d := time.Since(start); d > longest {
			longest = d
		}
		waitAnswer(t, s, client, key, "/reports/x", reports)
		waitLog(t, s, "routes and policy reloaded", i+1)
	}
	p.finish(t, scopeDenied)
	if n := p.answers["allow"]; n > 0 {
		t.Errorf("a half-written config was applied: /admin/x allowed %d times without the admin scope\n%s", n, s.logs)
	}
	if strings.Contains(s.logs.String(), "removed=[admin]") {
		t.Errorf("a reload removed the admin rule:\n%s", s.logs)
	}
	if n := strings.Count(s.logs.String(), "routes and policy reloaded"); n != rounds {
		t.Errorf("%d reloads logged, want %d (one per complete file):\n%s", n, rounds, s.logs)
	}
	// The prefix stayed up to one look plus the log poll; only the watch's
	// second look is at least reload_interval after its first.
	t.Logf("longest time a prefix stayed in the file: %v (reload_interval %v)", longest, every)
	s.stop(t)
}

// TestReloadAppliesTruncatedFileOnlyOnceStable leaves a truncated file in
// place. The watch cannot know a file is incomplete if it stays so: it is
// applied, but only once two looks at least reload_interval apart found it
// the same, and the reload's log line names the rule it removed, so that
// the operator sees what happened.
func TestReloadAppliesTruncatedFileOnlyOnceStable(t *testing.T) {
	const every = 200 * time.Millisecond
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	prefix := rulesConfig("200ms", ruleHealth)
	replaceFile(t, cfg, rulesConfig("200ms", ruleHealth, ruleAdmin))
	s := startWithConfig(t, dir, cfg)
	key, client := keyAndClient(t, s)
	mustAnswer(t, client, key, "/admin/x", scopeDenied)

	start := time.Now()
	writeFile(t, cfg, prefix)
	waitAnswer(t, s, client, key, "/admin/x", "allow")
	if d := time.Since(start); d < every {
		t.Fatalf("the truncated file was applied %v after it was written, less than reload_interval (%v): once looked at, not twice\n%s", d, every, s.logs)
	}
	logs := s.logs.String()
	first, reload := strings.Index(logs, sawVersion(prefix)), strings.Index(logs, "routes and policy reloaded")
	if first < 0 || reload < first {
		t.Errorf("the reload is not preceded by the watch's first look at the file:\n%s", logs)
	}
	if !strings.Contains(logs, "added=[] removed=[admin] changed=[]") {
		t.Errorf("the reload does not say it removed the admin rule:\n%s", logs)
	}
	s.stop(t)
}

// TestReloadRefusesEmptyFile leaves the file in states that are valid YAML
// for a config with no routes, which would open every route: cut after its
// leading comment, empty, and gone. Each is refused once it has stayed, and
// the running policy stays; the complete file then applies.
func TestReloadRefusesEmptyFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	header := "# Keygate: the routes of api.example.com.\n---\n"
	replaceFile(t, cfg, header+rulesConfig("100ms", ruleHealth, ruleAdmin))
	s := startWithConfig(t, dir, cfg)
	key, client := keyAndClient(t, s)
	p := startProber(t, client, key)
	p.await(t, scopeDenied)

	writeFile(t, cfg, header)
	waitLog(t, s, "config reload refused: the file is empty", 1)
	writeFile(t, cfg, "")
	waitLog(t, s, "config reload refused: the file is empty", 2)
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s, "config reload refused", 3)
	if !slices.ContainsFunc(strings.Split(s.logs.String(), "\n"), func(l string) bool {
		return strings.Contains(l, "config reload refused") && strings.Contains(l, "no such file or directory")
	}) {
		t.Errorf("the refusal of a missing file does not say so:\n%s", s.logs)
	}
	mustAnswer(t, client, key, "/admin/x", scopeDenied)

	writeFile(t, cfg, header+rulesConfig("100ms", ruleAdmin, ruleReports))
	waitAnswer(t, s, client, key, "/reports/x", "403 insufficient_scope")
	p.finish(t, scopeDenied)
	if n := p.answers["allow"]; n > 0 {
		t.Errorf("/admin/x allowed %d times without the admin scope:\n%s", n, s.logs)
	}
	if n := strings.Count(s.logs.String(), "config reload refused"); n != 3 {
		t.Errorf("%d refusals logged, want 3 (each state once):\n%s", n, s.logs)
	}
	s.stop(t)
}

// configMap lays out dir the way the kubelet mounts a ConfigMap: the file
// is a symlink into ..data, itself a symlink to a timestamped directory;
// an update writes a new directory and renames a new ..data over the old
// one, so the file changes in one step.
type configMap struct {
	dir string
	n   int
}

func (c *configMap) file() string { return filepath.Join(c.dir, "keygate.yaml") }

func (c *configMap) update(t *testing.T, body string) {
	t.Helper()
	c.n++
	ts := fmt.Sprintf("..2026_01_01_00_00_%02d.000000001", c.n)
	if err := os.Mkdir(filepath.Join(c.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(c.dir, ts, "keygate.yaml"), body)
	old, _ := os.Readlink(filepath.Join(c.dir, "..data"))
	if err := os.Symlink(ts, filepath.Join(c.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(c.dir, "..data_tmp"), filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old == "" {
		if err := os.Symlink(filepath.Join("..data", "keygate.yaml"), c.file()); err != nil {
			t.Fatal(err)
		}
	} else if err := os.RemoveAll(filepath.Join(c.dir, old)); err != nil {
		t.Fatal(err)
	}
}

// TestReloadConfigMapSwapAndRename updates the config the two atomic
// ways: a ConfigMap's ..data symlink swap and a file renamed over the path.
// Both are applied, after the same two looks as any change (a rename cannot
// be told apart from a file removed and being written again), and each
// reload's log line names the rules it added, removed and changed, and the
// policy settings that differ. A swap to a new inode with the same bytes,
// as an update of another key of the ConfigMap brings, is no reload.
func TestReloadConfigMapSwapAndRename(t *testing.T) {
	const every = 200 * time.Millisecond
	dir := t.TempDir()
	cm := &configMap{dir: filepath.Join(dir, "config")}
	if err := os.Mkdir(cm.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cm.update(t, rulesConfig("200ms", ruleHealth, ruleAdmin))
	s := startWithConfig(t, dir, cm.file())
	key, client := keyAndClient(t, s)
	mustAnswer(t, client, key, "/admin/x", scopeDenied)
	mustAnswer(t, client, key, "/reports/x", "allow")
	p := startProber(t, client, key)
	p.await(t, scopeDenied)

	public := strings.Replace(ruleAdmin, "scopes: [admin]", "public: true", 1)
	swapped := rulesConfig("200ms", public, ruleReports)
	start := time.Now()
	cm.update(t, swapped)
	waitAnswer(t, s, client, key, "/admin/x", "allow")
	if d := time.Since(start); d < every {
		t.Errorf("the ConfigMap update was applied after %v, before a second look (reload_interval %v)", d, every)
	}
	mustAnswer(t, client, key, "/reports/x", scopeDenied)
	waitLog(t, s, "routes and policy reloaded", 1)
	if want := "added=[reports] removed=[health] changed=[admin(public,scopes)]"; !strings.Contains(s.logs.String(), want) {
		t.Errorf("the reload's log line does not say %q:\n%s", want, s.logs)
	}

	// The same bytes in a new directory: not a change. Nothing to await
	// but time: three looks.
	cm.update(t, swapped)
	time.Sleep(3 * every)
	if n := strings.Count(s.logs.String(), "routes and policy reloaded"); n != 1 {
		t.Errorf("%d reloads logged after a swap to the same content, want 1:\n%s", n, s.logs)
	}

	// A file renamed over the symlink, with a policy-wide change too.
	start = time.Now()
	replaceFile(t, cm.file(), "policy:\n  unmatched: deny\n"+rulesConfig("200ms", ruleHealth, ruleAdmin))
	waitAnswer(t, s, client, key, "/admin/x", scopeDenied)
	if d := time.Since(start); d < every {
		t.Errorf("the renamed file was applied after %v, before a second look (reload_interval %v)", d, every)
	}
	mustAnswer(t, client, key, "/reports/x", "403 route_not_allowed")
	waitLog(t, s, "routes and policy reloaded", 2)
	for _, want := range []string{
		"added=[health] removed=[reports] changed=[admin(public,scopes)]",
		`policy.unmatched="allow_with_key -> deny"`,
	} {
		if !strings.Contains(s.logs.String(), want) {
			t.Errorf("the reload's log line does not say %q:\n%s", want, s.logs)
		}
	}
	p.finish(t, "allow", scopeDenied)
	if strings.Contains(s.logs.String(), "take effect on restart") {
		t.Errorf("reloads of routes and policy only warned of other changes:\n%s", s.logs)
	}
	s.stop(t)
}

// TestReloadRefusesDroppingEveryRoute: a file cut off before its routes is
// valid YAML with none; the watch refuses it while rules run (any key would
// pass every route), and SIGHUP, the operator's explicit ask, applies it.
func TestReloadRefusesDroppingEveryRoute(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	replaceFile(t, cfg, reloadConfig("100ms", adminScoped))
	s := startWithConfig(t, dir, cfg)
	raw, client := keyAndClient(t, s)
	mustAnswer(t, client, raw, "/admin/x", scopeDenied)
	replaceFile(t, cfg, "reload_interval: 100ms\n")
	waitLog(t, s, "the file has no routes while some run", 1)
	mustAnswer(t, client, raw, "/admin/x", scopeDenied)
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, s, client, raw, "/admin/x", "allow")
}
