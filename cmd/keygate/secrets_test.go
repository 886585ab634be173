package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestNoSecretsInLogs runs a full scenario at debug level with the access
// log on — keys created, rotated, imported, used, misused and revoked over
// gRPC, HTTP and the admin API — and then greps the server's log and its
// metrics for every secret in every encoding a careless line might use.
func TestNoSecretsInLogs(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	if err := os.WriteFile(cfg, []byte("log: {level: debug, format: json, access: true}\nroutes:\n  - {name: admin, path_prefix: /admin, scopes: [admin]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServerWith(t, dir, "KEYGATE_CONFIG="+cfg)
	token, _ := os.ReadFile(filepath.Join(dir, "keygate.admin-token"))
	a := crashAdmin{base: s.admin, token: strings.TrimSpace(string(token)), http: &http.Client{Timeout: 5 * time.Second}}

	var secrets []string
	var tn, k1, k2, rot map[string]any
	a.call("POST", "/v1/tenants", map[string]string{"name": "Acme"}, &tn)
	a.call("POST", "/v1/keys", map[string]any{"tenant_id": tn["id"], "name": "one", "credits_remaining": 3}, &k1)
	a.call("POST", "/v1/keys", map[string]any{"tenant_id": tn["id"], "name": "two", "allowed_cidrs": []string{"10.0.0.0/8"}}, &k2)
	a.call("POST", "/v1/keys/"+k1["id"].(string)+"/rotate", map[string]string{"grace_period": "1h"}, &rot)
	imported := "legacy_secret_key_0123456789abcdef"
	a.call("POST", "/v1/keys/import", map[string]any{"tenant_id": tn["id"], "name": "imp", "key": imported}, nil)
	a.call("POST", "/v1/keys/import", map[string]any{"tenant_id": tn["id"], "name": "dup", "key": imported}, nil) // 409
	for _, k := range []map[string]any{k1, k2, rot} {
		raw, _ := k["key"].(string)
		if raw == "" {
			t.Fatalf("no key in %v", k)
		}
		secrets = append(secrets, raw)
	}
	secrets = append(secrets, imported, strings.TrimSpace(string(token)))

	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	check := func(path string, headers map[string]string) {
		t.Helper()
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source:  &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "192.0.2.1"}}}},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Headers: headers}},
		}}
		if _, err := client.Check(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	for _, raw := range secrets[:4] {
		check("/x?api_key="+raw, map[string]string{"x-api-key": raw})
		check("/admin/x", map[string]string{"authorization": "Bearer " + raw})
		check("/x", map[string]string{"x-api-key": raw + "," + raw})
		check("/x", map[string]string{"x-api-key": raw[:len(raw)-1]})
		req, _ := http.NewRequest("GET", s.httpAddr+"/envoy/x?key="+raw, nil)
		req.Header.Set("X-Api-Token", raw)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	a.call("POST", "/v1/keys/"+k2["id"].(string)+"/revoke", nil, nil)
	check("/x", map[string]string{"x-api-key": secrets[1]})
	req, _ := http.NewRequest("GET", s.admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s.stop(t)

	logs := s.logs.String()
	if !strings.Contains(logs, `"msg":"allowed"`) || !strings.Contains(logs, `"msg":"denied"`) || !strings.Contains(logs, "admin request") {
		t.Fatalf("the scenario did not log what it should (access log, admin debug lines):\n%.2000s", logs)
	}
	for _, secret := range secrets {
		sum := sha256.Sum256([]byte(secret))
		for _, form := range []string{
			secret, secret[len(secret)-16:],
			hex.EncodeToString(sum[:]), strings.ToUpper(hex.EncodeToString(sum[:])),
			base64.StdEncoding.EncodeToString(sum[:]), base64.RawURLEncoding.EncodeToString(sum[:]),
			base64.StdEncoding.EncodeToString([]byte(secret)),
		} {
			if strings.Contains(logs, form) {
				t.Errorf("the server log contains a secret or its hash (%.6s...)", form)
			}
			if strings.Contains(string(metrics), form) {
				t.Errorf("the metrics contain a secret or its hash (%.6s...)", form)
			}
		}
	}
}
