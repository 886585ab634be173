package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/syncbuf"
)

// The proxy end-to-end tests put Keygate behind the proxies people run
// instead of Envoy: nginx (auth_request, Keygate's /nginx dialect) and Caddy
// (forward_auth, /forward). Each proxy is the real binary from its Debian
// package (installed by `make deps`), run on the shipped example config
// with only its addresses and paths changed, in front of a backend that
// records what it receives. What a client gets and what the backend sees
// are checked for good, revoked, missing, out-of-scope and rate-limited
// keys.

// proxyKeygateConfig gives the tests a scoped route, tiers small enough to
// run out of, a public health route the readiness poll goes through,
// another public route and a shadow one (requests Keygate lets through
// without deciding on the key), and the introspection path.
const proxyKeygateConfig = `
policy:
  introspection_path: ` + proxyIntrospectionPath + `
rate_limits:
  tiers:
    standard: {requests: 1000, window: 1m}
    tiny: {requests: 2, window: 1m}
    me: {requests: 3, window: 1m}
routes:
  - name: health
    path: /healthz
    public: true
  - name: docs
    path_prefix: /public/
    public: true
  - name: admin
    path_prefix: /admin/
    scopes: [admin]
  - name: shadow-admin
    path_prefix: /shadow/
    scopes: [admin]
    shadow: true
`

const proxyIntrospectionPath = "/api/v2/me"

// proxyKeys are the credentials a proxy test presents, created through the
// CLI: good is tenant-level (no org) and has no user, so Keygate sets no
// X-Org-Id or X-User-Id and the proxy must drop a client's.
type proxyKeys struct {
	tenant, good, goodID, revoked, tiny string
	// me is in the me tier (3 requests a minute), for the introspection
	// path.
	me, meID string
}

// keygateForProxy starts `keygate serve` on proxyKeygateConfig and creates
// the keys.
func keygateForProxy(t *testing.T) (*server, proxyKeys) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	if err := os.WriteFile(cfg, []byte(proxyKeygateConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KEYGATE_CONFIG", cfg) // serve reads it like --config
	s := startServer(t, dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("keygate log:\n%s", s.logs)
		}
	})

	var k proxyKeys
	k.tenant = s.cli(t, "tenants", "create", "--name", "Acme")["id"].(string)
	create := func(name, tier string) map[string]any {
		key := s.cli(t, "keys", "create", "--tenant", k.tenant, "--name", name, "--scopes", "read,write", "--tier", tier)
		if raw, _ := key["key"].(string); !strings.HasPrefix(raw, "ak_live_") {
			t.Fatalf("keys create printed %v", key)
		}
		return key
	}
	good := create("good", "standard")
	k.good, k.goodID = good["key"].(string), good["id"].(string)
	revoked := create("revoked", "standard")
	if r := s.cli(t, "keys", "revoke", revoked["id"].(string)); r["status"] != "revoked" {
		t.Fatalf("keys revoke printed %v", r)
	}
	k.revoked = revoked["key"].(string)
	k.tiny = create("tiny", "tiny")["key"].(string)
	me := create("me", "me")
	k.me, k.meID = me["key"].(string), me["id"].(string)
	return s, k
}

// recordingBackend is the service behind the proxy: it answers 200 and
// keeps the URI and headers of every request it receives.
type recordingBackend struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	uri    string
	header http.Header
}

func newRecordingBackend(t *testing.T) *recordingBackend {
	b := &recordingBackend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.seen = append(b.seen, seenRequest{uri: r.RequestURI, header: r.Header.Clone()})
		b.mu.Unlock()
		io.WriteString(w, "backend ok")
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *recordingBackend) addr() string { return strings.TrimPrefix(b.srv.URL, "http://") }

func (b *recordingBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.seen)
}

func (b *recordingBackend) last() seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen[len(b.seen)-1]
}

// lookPathOrFail finds a proxy binary. Missing is a failure, not a skip:
// these tests are the only proof that the examples work.
func lookPathOrFail(t *testing.T, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not on PATH: run the tests with `make test`, which installs it (`make deps`: apt-get install nginx caddy): %v", name, err)
	}
	return bin
}

// freeLoopbackAddr asks the kernel for a free port on 127.0.0.1 for a
// proxy, which (unlike Keygate) cannot report a port it chose itself.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// fromExample returns the example config at path (relative to the
// repository root) with each old string replaced by its new one. Every old
// string must be in the file, so that an edit to the example that these
// tests do not follow fails here instead of testing something else.
func fromExample(t *testing.T, path string, oldnew ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for i := 0; i < len(oldnew); i += 2 {
		if !strings.Contains(conf, oldnew[i]) {
			t.Fatalf("%s no longer contains %q, which the test replaces", path, oldnew[i])
		}
		conf = strings.ReplaceAll(conf, oldnew[i], oldnew[i+1])
	}
	return conf
}

// startProxy runs cmd, waits until a request to base/healthz (a public
// route) comes back 200 through the proxy, Keygate and the backend, and
// stops it by pid (SIGTERM, then a bounded wait) when the test ends.
func startProxy(t *testing.T, name string, cmd *exec.Cmd, base string) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, logs)
		}
		select {
		case err := <-exited:
			t.Errorf("%s exited before the test ended: %v", name, err)
			return
		default:
		}
		if err := syscall.Kill(cmd.Process.Pid, syscall.SIGTERM); err != nil {
			t.Errorf("SIGTERM %s (pid %d): %v", name, cmd.Process.Pid, err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("%s (pid %d) exited with %v on SIGTERM", name, cmd.Process.Pid, err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("%s (pid %d) did not stop on SIGTERM within 10s\n%s", name, cmd.Process.Pid, logs)
		}
	})

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for {
		select {
		case err := <-exited:
			t.Fatalf("%s exited at start: %v\n%s", name, err, logs)
		default:
		}
		resp, err := client.Get(base + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(body) == "backend ok" {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 10s (last: %s)\n%s", name, last, logs)
		}
		time.Sleep(50 * time.Millisecond) // bounded readiness poll
	}
}

func TestNginxAuthRequest(t *testing.T) {
	bin := lookPathOrFail(t, "nginx")
	s, keys := keygateForProxy(t)
	backend := newRecordingBackend(t)

	// nginx writes its pid, logs and temp files only under tmp, and
	// listens on a loopback port of its own: never the system nginx's
	// port 80, /run/nginx.pid or /var/lib/nginx.
	tmp := t.TempDir()
	listen := freeLoopbackAddr(t)
	conf := fromExample(t, "examples/nginx/nginx.conf",
		"listen 8000;", "listen "+listen+";",
		"server 127.0.0.1:8080;", "server "+backend.addr()+";",
		"server 127.0.0.1:9002;", "server "+strings.TrimPrefix(s.httpAddr, "http://")+";",
		"/var/lib/nginx/", tmp+"/",
		"/var/log/nginx/", tmp+"/",
	)
	if strings.Contains(conf, "/var/") || strings.Contains(conf, "/run/") {
		t.Fatalf("the generated nginx.conf still names a system path:\n%s", conf)
	}
	confFile := filepath.Join(tmp, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(tmp, "nginx.pid")
	global := "daemon off; pid " + pidFile + "; error_log stderr;"
	if os.Geteuid() == 0 {
		// Started as root, nginx's workers would switch to nobody, who
		// cannot enter the test's 0700 temp directories.
		global += " user root;"
	}
	// -e: the error log before the config is read (Debian's default is
	// already stderr; this keeps it so with any build).
	cmd := exec.Command(bin, "-e", "stderr", "-p", tmp+"/", "-c", confFile, "-g", global)
	base := "http://" + listen
	startProxy(t, "nginx", cmd, base)
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(cmd.Process.Pid) {
		t.Fatalf("nginx pid file %s: %q, %v; want the master's pid %d", pidFile, b, err, cmd.Process.Pid)
	}

	checkBehindProxy(t, base, backend, keys, true)
	checkProxyHardening(t, base, backend, keys)
	// The example maps auth_request's 500 to Keygate's 503 answer.
	checkKeygateDown(t, s, base, backend, keys, http.StatusServiceUnavailable, `{"error":"Authorization temporarily unavailable"}`)
}

func TestCaddyForwardAuth(t *testing.T) {
	bin := lookPathOrFail(t, "caddy")
	s, keys := keygateForProxy(t)
	backend := newRecordingBackend(t)

	tmp := t.TempDir()
	listen := freeLoopbackAddr(t)
	conf := fromExample(t, "examples/caddy/Caddyfile",
		"http://:8000", "http://"+listen,
		"127.0.0.1:8080", backend.addr(),
		"127.0.0.1:9002", strings.TrimPrefix(s.httpAddr, "http://"),
		// No admin listener: it would be a second fixed port, and the
		// test stops Caddy by pid, not through the API.
		"admin localhost:2019", "admin off",
	)
	confFile := filepath.Join(tmp, "Caddyfile")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", confFile, "--adapter", "caddyfile")
	// Caddy keeps its autosaved config and certificates state under HOME
	// and the XDG directories: all in tmp.
	cmd.Env = append(os.Environ(),
		"HOME="+tmp,
		"XDG_CONFIG_HOME="+filepath.Join(tmp, "config"),
		"XDG_DATA_HOME="+filepath.Join(tmp, "data"),
	)
	cmd.Dir = tmp
	base := "http://" + listen
	startProxy(t, "caddy", cmd, base)

	checkBehindProxy(t, base, backend, keys, false)
	checkProxyHardening(t, base, backend, keys)
	// forward_auth answers a failed auth request with reverse_proxy's
	// 502 and no body.
	checkKeygateDown(t, s, base, backend, keys, http.StatusBadGateway, "")
}

// proxyResponse is what the client got.
type proxyResponse struct {
	status int
	header http.Header
	body   string
}

func (r proxyResponse) String() string {
	return fmt.Sprintf("%d %v %s", r.status, r.header, r.body)
}

func proxyGet(t *testing.T, url string, header map[string]string) proxyResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		// As written, not canonicalized: the spelling is what some
		// tests are about (x_tenant_id, X-Tenant_Id).
		req.Header[k] = []string{v}
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return proxyResponse{resp.StatusCode, resp.Header, string(body)}
}

// spoofed are identity headers a client sends hoping the backend takes them
// for Keygate's: a tenant and an org not its own, a user, more scopes.
var spoofed = map[string]string{
	"X-Tenant-Id": "evil",
	"X-Org-Id":    "evil",
	"X-User-Id":   "evil",
	"X-Scopes":    "admin",
}

func withSpoofed(h map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range spoofed {
		out[k] = v
	}
	for k, v := range h {
		out[k] = v
	}
	return out
}

// checkBehindProxy runs the cases through the proxy at base. nginx says
// whether the proxy is nginx, whose example adds the rate-limit headers of
// allowed requests (Caddy's forward_auth cannot pass them on).
func checkBehindProxy(t *testing.T, base string, backend *recordingBackend, k proxyKeys, nginx bool) {
	const basic = "Basic dXNlcjpwYXNz" // the backend's own credential, not Keygate's
	for _, c := range []struct {
		name   string
		header map[string]string
		// authorization is what the backend must see in Authorization.
		authorization []string
	}{
		{"x-api-key", map[string]string{"X-Api-Key": k.good, "Authorization": basic}, []string{basic}},
		{"x-api-token", map[string]string{"X-Api-Token": k.good}, nil},
		{"bearer", map[string]string{"Authorization": "Bearer " + k.good}, nil},
	} {
		t.Run("good key in "+c.name, func(t *testing.T) {
			before := backend.count()
			resp := proxyGet(t, base+"/api/v1/things?page=2", withSpoofed(c.header))
			if resp.status != http.StatusOK || resp.body != "backend ok" {
				t.Fatalf("client got %v, want the backend's 200", resp)
			}
			if n := backend.count() - before; n != 1 {
				t.Fatalf("the backend got %d requests, want 1", n)
			}
			seen := backend.last()
			if seen.uri != "/api/v1/things?page=2" {
				t.Errorf("the backend got %q, not the client's URI", seen.uri)
			}
			for name, want := range map[string]string{
				"X-Tenant-Id":           k.tenant,
				"X-Api-Key-Id":          k.goodID,
				"X-Api-Key-Name":        "good",
				"X-Api-Key-Environment": "live",
				"X-Rate-Limit-Tier":     "standard",
				"X-Scopes":              "read,write",
			} {
				if got := seen.header.Values(name); len(got) != 1 || got[0] != want {
					t.Errorf("the backend saw %s: %q, want exactly [%q]", name, got, want)
				}
			}
			// Keygate set no org or user for this key: the client's must
			// not arrive in their place.
			for _, name := range []string{"X-Org-Id", "X-User-Id", "X-Api-Key", "X-Api-Token", "X-Keygate-Signature"} {
				if got := seen.header.Values(name); len(got) != 0 {
					t.Errorf("the backend saw %s: %q, want none", name, got)
				}
			}
			if got := seen.header.Values("Authorization"); !slices.Equal(got, c.authorization) {
				t.Errorf("the backend saw Authorization %q, want %q", got, c.authorization)
			}
			for name, vs := range seen.header {
				for _, v := range vs {
					if strings.Contains(v, k.good) {
						t.Errorf("the backend saw the raw key in %s", name)
					}
					if v == "evil" {
						t.Errorf("the backend saw the client's spoofed %s: %s", name, v)
					}
				}
			}
			if nginx {
				// The example passes the key's budget back on allows.
				if got := resp.header.Get("X-RateLimit-Limit"); got != "1000" {
					t.Errorf("client got X-RateLimit-Limit %q, want 1000", got)
				}
				if got := resp.header.Get("X-RateLimit-Remaining"); got == "" {
					t.Error("client got no X-RateLimit-Remaining on an allowed request")
				}
			}
		})
	}

	denied := func(t *testing.T, path string, header map[string]string, status int, message string) proxyResponse {
		t.Helper()
		before := backend.count()
		resp := proxyGet(t, base+path, withSpoofed(header))
		if n := backend.count() - before; n != 0 {
			t.Errorf("the backend was called %d times for a refused request", n)
		}
		if resp.status != status {
			t.Fatalf("client got %v, want %d", resp, status)
		}
		var body map[string]any
		if err := json.Unmarshal([]byte(resp.body), &body); err != nil || len(body) != 1 || body["error"] != message {
			t.Errorf("client got body %q (%v), want {\"error\": %q}", resp.body, err, message)
		}
		if ct := resp.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("client got Content-Type %q, want application/json", ct)
		}
		if id := resp.header.Values("X-Keygate-Decision-Id"); len(id) != 1 || id[0] == "" {
			t.Errorf("client got X-Keygate-Decision-Id %q, want one id to quote to support", id)
		}
		return resp
	}
	challenge := func(t *testing.T, resp proxyResponse) {
		t.Helper()
		if got := resp.header.Values("WWW-Authenticate"); len(got) != 1 || !strings.HasPrefix(got[0], "Bearer") {
			t.Errorf("client got WWW-Authenticate %q, want one Bearer challenge", got)
		}
	}

	t.Run("revoked key", func(t *testing.T) {
		challenge(t, denied(t, "/api/v1/things", map[string]string{"X-Api-Key": k.revoked}, http.StatusUnauthorized, "API key has been revoked"))
	})
	t.Run("no key", func(t *testing.T) {
		challenge(t, denied(t, "/api/v1/things", nil, http.StatusUnauthorized, "API key is required"))
	})
	t.Run("missing scope", func(t *testing.T) {
		denied(t, "/admin/users", map[string]string{"X-Api-Key": k.good}, http.StatusForbidden, "API key is missing required scope: admin")
	})
	t.Run("rate limited", func(t *testing.T) {
		// The tiny tier allows 2 requests a minute: the third is a 429
		// (which nginx's auth_request can only carry as a 403, mapped back
		// by the example's error_page).
		for i := range 2 {
			if resp := proxyGet(t, base+"/api/v1/things", map[string]string{"X-Api-Key": k.tiny}); resp.status != http.StatusOK {
				t.Fatalf("request %d of the tiny key: %v, want 200", i+1, resp)
			}
		}
		resp := denied(t, "/api/v1/things", map[string]string{"X-Api-Key": k.tiny}, http.StatusTooManyRequests, "Rate limit exceeded. Please try again later.")
		if ra := resp.header.Values("Retry-After"); len(ra) != 1 {
			t.Errorf("client got Retry-After %q, want one", ra)
		} else if n, err := strconv.Atoi(ra[0]); err != nil || n < 1 || n > 64 {
			// The first requests leave the sliding minute 60 to 63.75 s
			// (a slot) after they came.
			t.Errorf("client got Retry-After %q, want 1 to 64 seconds", ra[0])
		}
		if got := resp.header.Get("X-RateLimit-Remaining"); got != "0" {
			t.Errorf("client got X-RateLimit-Remaining %q, want 0", got)
		}
	})
}

// checkKeygateDown stops Keygate and checks that the proxy fails closed: a
// good key is refused with status and body, and the backend is not called.
func checkKeygateDown(t *testing.T, s *server, base string, backend *recordingBackend, k proxyKeys, status int, body string) {
	t.Run("keygate down", func(t *testing.T) {
		s.stop(t)
		before := backend.count()
		resp := proxyGet(t, base+"/api/v1/things", map[string]string{"X-Api-Key": k.good})
		if resp.status != status || resp.body != body {
			t.Errorf("with Keygate down the client got %v, want %d %s", resp, status, body)
		}
		if ct := resp.header.Get("Content-Type"); body != "" && ct != "application/json" {
			t.Errorf("with Keygate down the client got Content-Type %q, want application/json", ct)
		}
		if n := backend.count() - before; n != 0 {
			t.Errorf("with Keygate down the backend was called %d times", n)
		}
	})
}

// guardedHeaders are the identity headers Keygate sets and the credential
// headers it reads (DESIGN.md): no other spelling of them may reach the
// backend.
var (
	identityHeaderNames   = []string{"x-tenant-id", "x-org-id", "x-user-id", "x-api-key-id", "x-api-key-name", "x-api-key-environment", "x-rate-limit-tier", "x-scopes", "x-keygate-signature"}
	credentialHeaderNames = []string{"x-api-key", "x-api-token"}
)

// twinSpellings returns every spelling of name with at least one of its
// "-" written "_" (x_tenant_id, x-tenant_id, x_tenant-id), alternately in
// lower and upper case. CGI, WSGI and Rack read each as name itself.
func twinSpellings(name string) []string {
	parts := strings.Split(name, "-")
	var out []string
	for mask := 1; mask < 1<<(len(parts)-1); mask++ {
		var b strings.Builder
		b.WriteString(parts[0])
		for i, p := range parts[1:] {
			if mask&(1<<i) != 0 {
				b.WriteByte('_')
			} else {
				b.WriteByte('-')
			}
			b.WriteString(p)
		}
		twin := b.String()
		if mask%2 == 0 {
			twin = strings.ToUpper(twin)
		}
		out = append(out, twin)
	}
	return out
}

// twinHeaders are the underscore twins of every identity header (spoofed
// values) and credential header (a valid key), as a client sends them.
func twinHeaders(key string) map[string]string {
	out := map[string]string{}
	for _, name := range identityHeaderNames {
		for _, twin := range twinSpellings(name) {
			out[twin] = "evil"
		}
	}
	for _, name := range credentialHeaderNames {
		for _, twin := range twinSpellings(name) {
			out[twin] = key
		}
	}
	return out
}

func merged(hs ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, h := range hs {
		for k, v := range h {
			out[k] = v
		}
	}
	return out
}

// noTwinNorSecret reports a header the backend got that is another
// spelling of an identity or credential header, a spoofed value, or any of
// the raw keys.
func noTwinNorSecret(t *testing.T, seen seenRequest, k proxyKeys) {
	t.Helper()
	guarded := slices.Concat(identityHeaderNames, credentialHeaderNames)
	for name, vs := range seen.header {
		low := strings.ToLower(name)
		if strings.Contains(low, "_") && slices.Contains(guarded, strings.ReplaceAll(low, "_", "-")) {
			t.Errorf("the backend saw %s, which it reads as %s", name, strings.ReplaceAll(low, "_", "-"))
			continue
		}
		for _, v := range vs {
			if v == "evil" {
				t.Errorf("the backend saw the client's spoofed %s: %s", name, v)
			}
			for _, key := range []string{k.good, k.revoked, k.tiny, k.me} {
				if strings.Contains(v, key) {
					t.Errorf("the backend saw a raw key in %s", name)
				}
			}
		}
	}
}

// checkProxyHardening runs, through the proxy at base, what an attacker
// tried: keys passed to the backend on requests Keygate does not decide on
// the key (public, shadow), underscore twins of identity and credential
// headers, and the introspection path answered by the backend.
func checkProxyHardening(t *testing.T, base string, backend *recordingBackend, k proxyKeys) {
	const basic = "Basic dXNlcjpwYXNz" // the backend's own credential, not Keygate's

	// allowed asks for path and returns what the backend got; the client
	// must get the backend's answer.
	allowed := func(t *testing.T, path string, header map[string]string) seenRequest {
		t.Helper()
		before := backend.count()
		resp := proxyGet(t, base+path, header)
		if resp.status != http.StatusOK || resp.body != "backend ok" {
			t.Fatalf("client got %v, want the backend's 200", resp)
		}
		if n := backend.count() - before; n != 1 {
			t.Fatalf("the backend got %d requests, want 1", n)
		}
		seen := backend.last()
		if seen.uri != path {
			t.Errorf("the backend got %q, not the client's %q", seen.uri, path)
		}
		return seen
	}

	t.Run("credentials never reach the backend", func(t *testing.T) {
		for _, c := range []struct {
			name, path string
			header     map[string]string
			// authorization is what the backend must see in
			// Authorization.
			authorization []string
		}{
			{"public route, key in x-api-key", "/public/docs", map[string]string{"X-Api-Key": k.good}, nil},
			{"public route, key in x-api-token", "/public/docs", map[string]string{"X-Api-Token": k.good}, nil},
			{"public route, bearer key", "/public/docs", map[string]string{"Authorization": "Bearer " + k.good}, nil},
			{"public route, lower-case bearer", "/public/docs", map[string]string{"Authorization": "bearer " + k.good}, nil},
			{"public route, key and Basic", "/public/docs", map[string]string{"X-Api-Key": k.good, "Authorization": basic}, []string{basic}},
			{"public route, revoked key", "/public/docs", map[string]string{"X-Api-Key": k.revoked}, nil},
			{"exact public route, bearer key", "/healthz", map[string]string{"Authorization": "Bearer " + k.good}, nil},
			{"shadow route, key in x-api-key", "/shadow/users", map[string]string{"X-Api-Key": k.good}, nil},
			{"shadow route, bearer key", "/shadow/users", map[string]string{"Authorization": "Bearer " + k.good}, nil},
			{"allowed request, key and Basic", "/api/v1/things", map[string]string{"X-Api-Key": k.good, "Authorization": basic}, []string{basic}},
		} {
			t.Run(c.name, func(t *testing.T) {
				seen := allowed(t, c.path, withSpoofed(c.header))
				for _, name := range []string{"X-Api-Key", "X-Api-Token"} {
					if got := seen.header.Values(name); len(got) != 0 {
						t.Errorf("the backend saw %s: %q, want none", name, got)
					}
				}
				if got := seen.header.Values("Authorization"); !slices.Equal(got, c.authorization) {
					t.Errorf("the backend saw Authorization %q, want %q", got, c.authorization)
				}
				noTwinNorSecret(t, seen, k)
			})
		}
	})

	t.Run("underscore twins never reach the backend", func(t *testing.T) {
		twins := twinHeaders(k.good)
		if len(twins) != 47 {
			t.Fatalf("%d twin spellings, want 47 (identity and credential headers changed?)", len(twins))
		}
		t.Run("allowed request", func(t *testing.T) {
			seen := allowed(t, "/api/v1/things", merged(twins, map[string]string{"X-Api-Key": k.good}))
			noTwinNorSecret(t, seen, k)
			// Keygate's identity is there, once, and nothing else
			// under those names.
			for name, want := range map[string]string{
				"X-Tenant-Id":       k.tenant,
				"X-Api-Key-Id":      k.goodID,
				"X-Rate-Limit-Tier": "standard",
				"X-Scopes":          "read,write",
			} {
				if got := seen.header.Values(name); len(got) != 1 || got[0] != want {
					t.Errorf("the backend saw %s: %q, want exactly [%q]", name, got, want)
				}
			}
		})
		t.Run("public route", func(t *testing.T) {
			seen := allowed(t, "/public/docs", twins)
			noTwinNorSecret(t, seen, k)
		})
		t.Run("denied request", func(t *testing.T) {
			// A key under a twin name is not a key: the request has
			// none.
			before := backend.count()
			resp := proxyGet(t, base+"/api/v1/things", twins)
			if resp.status != http.StatusUnauthorized || !strings.Contains(resp.body, "API key is required") {
				t.Errorf("client got %v, want 401 API key is required", resp)
			}
			if n := backend.count() - before; n != 0 {
				t.Errorf("the backend was called %d times for a refused request", n)
			}
		})
	})

	t.Run("introspection answered by Keygate", func(t *testing.T) {
		before := backend.count()
		// The me tier allows 3 requests a minute: introspection pays
		// like any request, so the 4th is refused.
		for i := range 3 {
			resp := proxyGet(t, base+proxyIntrospectionPath, withSpoofed(map[string]string{"X-Api-Key": k.me}))
			if resp.status != http.StatusOK {
				t.Fatalf("introspection %d: client got %v, want 200 with the principal", i+1, resp)
			}
			var p map[string]any
			if err := json.Unmarshal([]byte(resp.body), &p); err != nil {
				t.Fatalf("introspection %d: body %q is not the principal JSON: %v", i+1, resp.body, err)
			}
			for field, want := range map[string]string{"tenant_id": k.tenant, "api_key_id": k.meID, "api_key_name": "me", "rate_limit_tier": "me"} {
				if p[field] != want {
					t.Errorf("introspection %d: %s is %v, want %q (body %s)", i+1, field, p[field], want, resp.body)
				}
			}
			if ct := resp.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("introspection %d: Content-Type %q, want application/json", i+1, ct)
			}
			if cc := resp.header.Values("Cache-Control"); len(cc) != 1 || cc[0] != "no-store" {
				t.Errorf("introspection %d: Cache-Control %q, want exactly [no-store]", i+1, cc)
			}
			if strings.Contains(resp.body, k.me) {
				t.Errorf("introspection %d: the answer carries the raw key", i+1)
			}
		}
		resp := proxyGet(t, base+proxyIntrospectionPath, map[string]string{"X-Api-Key": k.me})
		if resp.status != http.StatusTooManyRequests || !strings.Contains(resp.body, "Rate limit exceeded") {
			t.Errorf("introspection 4 of a 3-a-minute key: client got %v, want 429", resp)
		}
		if n := backend.count() - before; n != 0 {
			t.Errorf("the backend was called %d times for the introspection path", n)
		}
	})

	t.Run("ambiguous path refused with 400", func(t *testing.T) {
		// Public by its prefix, /admin/users to a backend that decodes
		// the slashes.
		before := backend.count()
		resp := proxyGet(t, base+"/public/..%2Fadmin%2Fusers", map[string]string{"X-Api-Key": k.good})
		if resp.status != http.StatusBadRequest {
			t.Errorf("client got %v, want 400", resp)
		}
		var body map[string]any
		if err := json.Unmarshal([]byte(resp.body), &body); err != nil || body["error"] == nil {
			t.Errorf("client got body %q (%v), want Keygate's JSON error", resp.body, err)
		}
		if n := backend.count() - before; n != 0 {
			t.Errorf("the backend was called %d times for a refused request", n)
		}
	})
}
