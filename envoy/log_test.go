package envoy_test

import (
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/internal/syncbuf"
	"github.com/keygate/keygate/keystore"
)

// TestAccessLog: with the access log on, every decision is one JSON line
// with its id, reason and key id — and never the key.
func TestAccessLog(t *testing.T) {
	s, e, tn := newEngine(t, authz.Config{})
	k, _ := s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	g, _ := envoy.NewGRPCServer(envoy.NewServer(e, log, envoy.WithAccessLog(true)))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go g.Serve(ln)
	defer g.Stop()
	conn, _ := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	for _, h := range []map[string]string{{"x-api-key": k.Secret.Reveal()}, {"x-api-key": k.Secret.Reveal()[:len(k.Secret.Reveal())-1] + "x"}, {}} {
		if _, err := client.Check(t.Context(), checkRequest(h)); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d log lines, want one per decision:\n%s", len(lines), logs)
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["msg"] != "allowed" || first["api_key_id"] != k.ID || first["reason"] != "ok" || len(first["decision_id"].(string)) != 16 {
		t.Fatalf("access log line %v", first)
	}
	if strings.Contains(logs.String(), k.Secret.Reveal()) || strings.Contains(logs.String(), k.Secret.Reveal()[:20]) {
		t.Fatal("the log contains the key")
	}
}
