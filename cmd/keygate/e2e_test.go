package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/syncbuf"
)

// The end-to-end tests run the real binary as a user would: `keygate serve`
// on loopback ports, the CLI against its admin API, and grpcurl (installed
// by `make test`) calling Check through server reflection.

var keygateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keygate-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	keygateBin = filepath.Join(dir, "keygate")
	if out, err := exec.Command("go", "build", "-o", keygateBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build keygate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a running `keygate serve` child process.
type server struct {
	cmd                       *exec.Cmd
	grpcAddr, admin, httpAddr string
	dir                       string
	env                       []string
	logs                      *syncbuf.Buffer
	exited                    chan error
}

// servingLine finds the listen addresses in the text or the JSON log.
var servingLine = regexp.MustCompile(`msg="keygate serving" grpc=(\S+) admin=(\S+) http=(\S+)|"msg":"keygate serving","grpc":"([^"]+)","admin":"([^"]+)","http":"([^"]+)"`)

// startServer runs `keygate serve` with its store in dir, on ports chosen
// by the kernel, and waits for the line that names them.
func startServer(t *testing.T, dir string) *server {
	t.Helper()
	return startServerWith(t, dir)
}

// startServerWith is startServer with more environment; later entries
// override the defaults.
func startServerWith(t *testing.T, dir string, env ...string) *server {
	t.Helper()
	return startServerCmd(t, dir, exec.Command(keygateBin, "serve"), env...)
}

// startServerCmd is startServerWith running cmd, which must exec keygate
// serve (under a lower open-file limit, for example).
func startServerCmd(t *testing.T, dir string, cmd *exec.Cmd, env ...string) *server {
	t.Helper()
	s := &server{dir: dir, logs: &syncbuf.Buffer{}, exited: make(chan error, 1)}
	s.env = append(os.Environ(),
		"KEYGATE_STORE="+filepath.Join(dir, "keygate.db"),
		"KEYGATE_GRPC_LISTEN=127.0.0.1:0",
		"KEYGATE_ADMIN_LISTEN=127.0.0.1:0",
		"KEYGATE_HTTP_LISTEN=127.0.0.1:0",
		"KEYGATE_METRICS_LISTEN=127.0.0.1:0",
		"KEYGATE_ADMIN_TOKEN=",
		"KEYGATE_ADMIN_TOKEN_FILE=",
	)
	s.env = append(s.env, env...)
	s.cmd = cmd
	s.cmd.Env = s.env
	s.cmd.Dir = dir
	pr, pw := io.Pipe()
	s.cmd.Stderr = io.MultiWriter(pw, s.logs)
	s.cmd.Stdout = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.exited <- s.cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			<-s.exited
		}
	})
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
				break
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case m := <-found:
		if m[1] == "" {
			m = m[3:]
		}
		s.grpcAddr, s.admin, s.httpAddr = m[1], "http://"+m[2], "http://"+m[3]
	case err := <-s.exited:
		t.Fatalf("keygate serve exited: %v\n%s", err, s.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("keygate serve did not start\n%s", s.logs)
	}
	return s
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.exited:
		if err != nil {
			t.Fatalf("keygate serve exited with %v after SIGTERM\n%s", err, s.logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("keygate serve did not stop on SIGTERM\n%s", s.logs)
	}
}

// cli runs the keygate CLI against s and decodes its JSON output.
func (s *server) cli(t *testing.T, args ...string) map[string]any {
	t.Helper()
	cmd := exec.Command(keygateBin, append(args, "--output", "json")...)
	// Clipped: callers run at once, and must not append into one array.
	cmd.Env = append(slices.Clip(s.env), "KEYGATE_ADMIN_URL="+s.admin)
	cmd.Dir = s.dir // the CLI finds ./keygate.admin-token there, as in the README
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("keygate %v: %v\n%s", args, err, stderr.String())
	}
	var out map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("keygate %v printed %q, not one JSON object: %v", args, stdout.String(), err)
	}
	return out
}

// grpcurlCheck calls Check exactly as the README walk-through does.
func grpcurlCheck(t *testing.T, addr string, headers map[string]string) map[string]any {
	t.Helper()
	bin, err := exec.LookPath("grpcurl")
	if err != nil {
		t.Fatalf("grpcurl is not on PATH: run the tests with `make test`, which installs it (%v)", err)
	}
	req, _ := json.Marshal(map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
		"method": "GET", "path": "/api/v1/assessments", "host": "api.example.com", "headers": headers,
	}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-plaintext", "-d", string(req), addr, "envoy.service.auth.v3.Authorization/Check")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl: %v\n%s", err, out)
	}
	var resp map[string]any
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("grpcurl printed %q: %v", out, err)
	}
	return resp
}

// TestReadmeWalkthrough is the README's five-minute walk-through: start,
// create a tenant, an org and a key, see Check allow with identity headers,
// revoke, see the next Check refused; then restart on the same file.
func TestReadmeWalkthrough(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	if fi, err := os.Stat(filepath.Join(dir, "keygate.admin-token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated admin token file: %v, %v", fi, err)
	}

	tenant := s.cli(t, "tenants", "create", "--name", "Acme")
	org := s.cli(t, "orgs", "create", "--tenant", tenant["id"].(string), "--name", "Acme EU")
	key := s.cli(t, "keys", "create", "--tenant", tenant["id"].(string), "--org", org["id"].(string),
		"--user", "user-1", "--name", "Production Backend", "--scopes", "vault:read,vault:write", "--tier", "enterprise")
	raw, _ := key["key"].(string)
	if !strings.HasPrefix(raw, "ak_live_") || key["id"] == nil {
		t.Fatalf("keys create printed %v", key)
	}

	resp := grpcurlCheck(t, s.grpcAddr, map[string]string{"x-api-key": raw, "x-tenant-id": "spoofed"})
	ok, _ := resp["okResponse"].(map[string]any)
	if ok == nil {
		t.Fatalf("Check with a fresh key: %v", resp)
	}
	got := map[string]string{}
	for _, h := range ok["headers"].([]any) {
		hv := h.(map[string]any)["header"].(map[string]any)
		got[hv["key"].(string)] = hv["value"].(string)
	}
	if got["x-tenant-id"] != tenant["id"] || got["x-org-id"] != org["id"] || got["x-api-key-id"] != key["id"] || got["x-scopes"] != "vault:read,vault:write" {
		t.Fatalf("identity headers %v", got)
	}

	revoked := s.cli(t, "keys", "revoke", key["id"].(string))
	if revoked["status"] != "revoked" {
		t.Fatalf("keys revoke printed %v", revoked)
	}
	resp = grpcurlCheck(t, s.grpcAddr, map[string]string{"x-api-key": raw})
	den, _ := resp["deniedResponse"].(map[string]any)
	if den == nil || den["status"].(map[string]any)["code"] != "Unauthorized" || !strings.Contains(den["body"].(string), "API key has been revoked") {
		t.Fatalf("Check after revoke: %v", resp)
	}

	s.stop(t)
	if !strings.Contains(s.logs.String(), "stopped") {
		t.Fatalf("no clean shutdown in the log:\n%s", s.logs)
	}
	for _, secret := range []string{raw, readToken(t, dir)} {
		if strings.Contains(s.logs.String(), secret) {
			t.Fatal("the server log contains a secret")
		}
	}

	// Same file, new process: the key is still revoked, the token the same.
	s2 := startServer(t, dir)
	resp = grpcurlCheck(t, s2.grpcAddr, map[string]string{"x-api-key": raw})
	if !strings.Contains(fmt.Sprint(resp), "API key has been revoked") {
		t.Fatalf("Check after restart: %v", resp)
	}
	if k := s2.cli(t, "keys", "get", key["id"].(string)); k["status"] != "revoked" || k["last_used_at"] == nil {
		t.Fatalf("key after restart: %v (last use must survive a clean shutdown)", k)
	}
	s2.stop(t)
}

func readToken(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "keygate.admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestServeRefusesExposedAdminWithoutToken: an admin API on every interface
// with no configured token must not start.
func TestServeRefusesExposedAdminWithoutToken(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"serve", "--store", filepath.Join(dir, "k.db"), "--grpc-listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0"},
		io.Discard, &stderr, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "not loopback") {
		t.Fatalf("serve with an exposed admin and no token = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "k.admin-token")); !os.IsNotExist(err) {
		t.Fatal("a token file was generated for a non-loopback admin listener")
	}
}

func TestServeConfigErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	for name, body := range map[string]string{
		"unknown field": "store:\n  pth: x.db\n",
		"bad duration":  "store:\n  last_used_flush: soon\n",
		"bad prefix":    "keys:\n  prefix: A_B\n",
		"bad format":    "errors:\n  format: xml\n",
	} {
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		env := map[string]string{"KEYGATE_ADMIN_TOKEN": "0123456789abcdef0123"}
		err := run(context.Background(), []string{"serve", "--config", cfg, "--store", filepath.Join(dir, "k.db"), "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"},
			io.Discard, io.Discard, func(k string) string { return env[k] })
		if err == nil {
			t.Errorf("%s: serve accepted the config", name)
		}
	}
}
