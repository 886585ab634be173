package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testredis"
)

// adminHTTP calls the admin API of a running server with raw bodies, as an
// attacker would: no CLI to clean them up.
type adminHTTP struct {
	t           *testing.T
	base, token string
	client      *http.Client
}

func newAdminHTTP(t *testing.T, s *server) adminHTTP {
	return adminHTTP{t: t, base: s.admin, token: readToken(t, s.dir), client: &http.Client{Timeout: 10 * time.Second}}
}

// do sends body (none when empty) and returns the status, the decoded JSON
// answer and how long it took.
func (a adminHTTP) do(method, path, body string) (int, map[string]any, time.Duration) {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	start := time.Now()
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		a.t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		a.t.Fatalf("%s %s answered %d %q, not JSON", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out, took
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, "keygate.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAdminBodiesStrictE2E: the real server refuses a case-folded field
// name and a repeated key with 400, and bounds rotation grace by
// keys.max_rotation_grace and the org limit.
func TestAdminBodiesStrictE2E(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "keys:\n  max_org_keys: 1\n  max_rotation_grace: 36h\n")
	s := startServerWith(t, dir, "KEYGATE_CONFIG="+cfg)
	a := newAdminHTTP(t, s)

	for _, tc := range []struct{ body, want string }{
		{`{"NAME":"Acme"}`, `unknown field "NAME"`},
		{`{"name":"Acme","name":"Evil"}`, `duplicate field "name"`},
	} {
		status, got, _ := a.do("POST", "/v1/tenants", tc.body)
		if status != 400 || got["code"] != "invalid_request" || got["error"] != tc.want {
			t.Errorf("POST /v1/tenants %s = %d %v, want 400 invalid_request %q", tc.body, status, got, tc.want)
		}
	}
	if status, got, _ := a.do("GET", "/v1/tenants", ""); status != 200 || len(got["data"].([]any)) != 0 {
		t.Fatalf("refused bodies created tenants: %d %v", status, got)
	}

	_, tn, _ := a.do("POST", "/v1/tenants", `{"name":"Acme"}`)
	_, org, _ := a.do("POST", "/v1/orgs", `{"tenant_id":"`+tn["id"].(string)+`","name":"EU"}`)
	status, key, _ := a.do("POST", "/v1/keys", `{"tenant_id":"`+tn["id"].(string)+`","org_id":"`+org["id"].(string)+`","name":"k","metadata":{"team":"a","team":"b"}}`)
	if status != 400 || key["error"] != `duplicate field "metadata.team"` {
		t.Fatalf("duplicate metadata key = %d %v", status, key)
	}
	if status, key, _ = a.do("POST", "/v1/keys", `{"tenant_id":"`+tn["id"].(string)+`","org_id":"`+org["id"].(string)+`","name":"k"}`); status != 201 {
		t.Fatalf("create key = %d %v", status, key)
	}
	rotate := "/v1/keys/" + key["id"].(string) + "/rotate"
	status, got, _ := a.do("POST", rotate, `{"grace_period":"87600h"}`)
	if status != 400 || !strings.Contains(got["error"].(string), "maximum of 36h") {
		t.Errorf("grace 87600h = %d %v, want 400 naming the configured maximum of 36h", status, got)
	}
	// The org holds its limit of one key: a grace period would make two.
	status, got, _ = a.do("POST", rotate, `{"grace_period":"24h"}`)
	if status != 409 || got["code"] != "org_key_limit" {
		t.Errorf("grace in a full org = %d %v, want 409 org_key_limit", status, got)
	}
	if status, got, _ = a.do("POST", rotate, ""); status != 201 {
		t.Errorf("rotation without grace in a full org = %d %v", status, got)
	}
}

// TestReadinessFollowsRedisE2E: with a shared Redis and fail_open off,
// every Check needs Redis, so /readyz says unavailable (naming redis) when
// Redis hangs or is gone, within about its 1 s probe timeout, and ready
// again once it is back.
func TestReadinessFollowsRedisE2E(t *testing.T) {
	rs := testredis.Start(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "rate_limits:\n  redis: {addr: \""+rs.Addr+"\"}\n")
	s := startServerWith(t, dir, "KEYGATE_CONFIG="+cfg)
	a := newAdminHTTP(t, s)
	raw := s.cli(t, "keys", "create", "--tenant", s.cli(t, "tenants", "create", "--name", "Acme")["id"].(string), "--name", "k")["key"].(string)
	c := newChecker(t, s.grpcAddr)

	ready := func(wantStatus int, wantBody string) time.Duration {
		t.Helper()
		status, got, took := a.do("GET", "/readyz", "")
		b, _ := json.Marshal(got)
		if status != wantStatus || string(b) != wantBody {
			t.Fatalf("GET /readyz = %d %s, want %d %s", status, b, wantStatus, wantBody)
		}
		if strings.Contains(string(b), rs.Addr) {
			t.Errorf("/readyz shows Redis's address: %s", b)
		}
		return took
	}
	ready(200, `{"checks":{"redis":"ok","store":"ok"},"status":"ready"}`)
	if ok, status, _ := c.check(raw); !ok {
		t.Fatalf("Check with Redis up: %d", status)
	}

	// A Redis that holds its connections and answers nothing.
	rs.Pause(t)
	took := ready(503, `{"checks":{"redis":"timeout","store":"ok"},"status":"unavailable"}`)
	t.Logf("/readyz answered in %v with Redis hanging", took)
	if took > 3*time.Second {
		t.Errorf("/readyz took %v with Redis hanging; want at most about its 1 s probe timeout", took)
	}
	rs.Resume(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, _, _ := a.do("GET", "/readyz", "")
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not recover within 10s of Redis resuming")
		}
		time.Sleep(50 * time.Millisecond)
	}

	rs.Stop()
	ready(503, `{"checks":{"redis":"failed","store":"ok"},"status":"unavailable"}`)
	if ok, status, _ := c.check(raw); ok || status != 503 {
		t.Fatalf("Check with Redis gone: allowed=%v status=%d; /readyz must agree with it", ok, status)
	}
}

// TestReadinessFailOpenE2E: with fail_open, Checks go on without Redis, so
// its loss leaves the replica ready, reported as degraded.
func TestReadinessFailOpenE2E(t *testing.T) {
	rs := testredis.Start(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "rate_limits:\n  redis: {addr: \""+rs.Addr+"\", fail_open: true}\n")
	s := startServerWith(t, dir, "KEYGATE_CONFIG="+cfg)
	a := newAdminHTTP(t, s)
	raw := s.cli(t, "keys", "create", "--tenant", s.cli(t, "tenants", "create", "--name", "Acme")["id"].(string), "--name", "k")["key"].(string)

	rs.Stop()
	status, got, _ := a.do("GET", "/readyz", "")
	b, _ := json.Marshal(got)
	if want := `{"checks":{"redis":"failed","store":"ok"},"status":"degraded"}`; status != 200 || string(b) != want {
		t.Fatalf("GET /readyz with Redis gone and fail_open = %d %s, want 200 %s", status, b, want)
	}
	if ok, status, _ := newChecker(t, s.grpcAddr).check(raw); !ok {
		t.Fatalf("Check with Redis gone and fail_open: %d; /readyz must agree with it", status)
	}
}
