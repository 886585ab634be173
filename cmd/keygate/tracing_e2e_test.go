package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/internal/testotlp"
)

// The tracing tests run the real binary against an in-process OTLP
// receiver, configured once by the file (gRPC) and once by the standard
// OTEL_* environment (HTTP), and read what a collector would get.

// The caller's trace, as Envoy's client would send it in traceparent.
const (
	e2eTrace = "0af7651916cd43dd8448eb211c80319c"
	e2eSpan  = "b7ad6b7169203331"
	// The span of the request checked over HTTP (Envoy's http_service).
	e2eHTTPSpan = "53995c3f42cd8ad8"
)

// otelOff empties the OTEL_* variables the test process may have, so that
// only what a test sets reaches the server. The batch processor's delay is
// long, so that spans arrive only if serve flushes them when it stops.
var otelOff = []string{
	"OTEL_SDK_DISABLED=", "OTEL_TRACES_EXPORTER=", "OTEL_SERVICE_NAME=", "OTEL_RESOURCE_ATTRIBUTES=",
	"OTEL_TRACES_SAMPLER=", "OTEL_TRACES_SAMPLER_ARG=",
	"OTEL_EXPORTER_OTLP_ENDPOINT=", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=",
	"OTEL_EXPORTER_OTLP_PROTOCOL=", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=", "OTEL_EXPORTER_OTLP_HEADERS=",
	"OTEL_BSP_SCHEDULE_DELAY=600000",
}

const tracingRoutes = `reload_interval: -1s
routes:
  - {name: api, path_prefix: /api/}
`

// tracedRun is what one traced server did: the secrets it handed out, and
// the ids the spans must name.
type tracedRun struct {
	raw, token, tenant, keyID, unknown string
}

// exercise creates a tenant and a key through the CLI, an org through the
// admin API with a traceparent, and Checks a valid and an unknown key over
// gRPC with a traceparent; then stops the server, which must flush.
func exercise(t *testing.T, s *server) tracedRun {
	t.Helper()
	tenant := s.cli(t, "tenants", "create", "--name", "Acme")["id"].(string)
	key := s.cli(t, "keys", "create", "--tenant", tenant, "--name", "Backend")
	run := tracedRun{raw: key["key"].(string), token: readToken(t, s.dir), tenant: tenant, keyID: key["id"].(string),
		unknown: "ak_live_" + strings.Repeat("Q", 32)}
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)

	req, err := http.NewRequest("POST", s.admin+"/v1/orgs", strings.NewReader(`{"tenant_id":"`+tenant+`","name":"EU"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+run.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+e2eTrace+"-"+e2eSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/orgs: %d %s", resp.StatusCode, body)
	}

	for _, k := range []string{run.raw, run.unknown} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/api/v1/things?api_key=" + k, Host: "api.example.com", Headers: map[string]string{
				"x-api-key": k, "traceparent": "00-" + e2eTrace + "-" + e2eSpan + "-01",
			}},
		}}})
		cancel()
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
	}
	// The same over the HTTP listener, as Envoy's http_service asks.
	req, err = http.NewRequest("GET", s.httpAddr+"/envoy/api/v2/http", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-api-key", run.raw)
	req.Header.Set("traceparent", "00-"+e2eTrace+"-"+e2eHTTPSpan+"-01")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP check: %d", resp.StatusCode)
	}
	s.stop(t)
	return run
}

func spanWith(spans []testotlp.Span, name, key, value string) (testotlp.Span, bool) {
	for _, s := range spans {
		if v, ok := s.Attr(key); s.Name == name && ok && v == value {
			return s, true
		}
	}
	return testotlp.Span{}, false
}

// checkTraced asserts what the receiver got from one exercised server.
func checkTraced(t *testing.T, rcv *testotlp.Receiver, run tracedRun, service string) {
	t.Helper()
	spans := rcv.WaitFor(t, 10*time.Second, "check, lookup and admin spans", func(s []testotlp.Span) bool {
		_, deny := spanWith(s, "keygate.check", "keygate.reason", "invalid_api_key")
		return deny
	})

	allow, ok := spanWith(spans, "keygate.check", "keygate.reason", "ok")
	if !ok {
		t.Fatalf("no allowed Check span in %v", testotlp.Names(spans))
	}
	if hex.EncodeToString(allow.TraceId) != e2eTrace || hex.EncodeToString(allow.ParentSpanId) != e2eSpan {
		t.Errorf("Check span in trace %x under %x, want the traceparent's %s, %s", allow.TraceId, allow.ParentSpanId, e2eTrace, e2eSpan)
	}
	for k, want := range map[string]string{"keygate.route": "api", "keygate.tenant": run.tenant, "keygate.key_id": run.keyID, "url.path": "/api/v1/things"} {
		if v, _ := allow.Attr(k); v != want {
			t.Errorf("Check span %s = %q, want %q", k, v, want)
		}
	}
	var lookup bool
	for _, s := range spans {
		lookup = lookup || s.Name == "keystore.lookup" && bytes.Equal(s.ParentSpanId, allow.SpanId) && bytes.Equal(s.TraceId, allow.TraceId)
	}
	if !lookup {
		t.Errorf("no store lookup span under the Check span in %v", testotlp.Names(spans))
	}
	if deny, _ := spanWith(spans, "keygate.check", "keygate.reason", "invalid_api_key"); hex.EncodeToString(deny.TraceId) != e2eTrace {
		t.Errorf("the denied Check is not in the caller's trace")
	}
	if h, ok := spanWith(spans, "keygate.check", "url.path", "/api/v2/http"); !ok {
		t.Errorf("no span for the Check over HTTP in %v", testotlp.Names(spans))
	} else if hex.EncodeToString(h.ParentSpanId) != e2eHTTPSpan {
		t.Errorf("the Check over HTTP is under %x, want its traceparent's %s", h.ParentSpanId, e2eHTTPSpan)
	}

	for _, route := range []string{"POST /v1/tenants", "POST /v1/keys"} {
		if _, ok := spanWith(spans, "keygate.admin "+route, "http.route", route); !ok {
			t.Errorf("no admin span for %s in %v", route, testotlp.Names(spans))
		}
	}
	org, ok := spanWith(spans, "keygate.admin POST /v1/orgs", "http.response.status_code", "201")
	if !ok {
		t.Fatalf("no admin span for POST /v1/orgs in %v", testotlp.Names(spans))
	}
	if hex.EncodeToString(org.TraceId) != e2eTrace || hex.EncodeToString(org.ParentSpanId) != e2eSpan {
		t.Errorf("admin span not joined to the request's traceparent")
	}
	for _, s := range spans {
		if strings.HasPrefix(s.Name, "keygate.admin GET") {
			t.Errorf("a read was traced: %s", s.Name)
		}
	}

	var service0 string
	for _, kv := range allow.Resource.GetAttributes() {
		if kv.Key == "service.name" {
			service0 = kv.Value.GetStringValue()
		}
	}
	if service0 != service {
		t.Errorf("service.name %q, want %q", service0, service)
	}

	sum := sha256.Sum256([]byte(run.raw))
	tokenSum := sha256.Sum256([]byte(run.token))
	secrets := []string{run.raw, hex.EncodeToString(sum[:]), run.token, hex.EncodeToString(tokenSum[:]), run.unknown}
	for _, s := range spans {
		for _, str := range s.Strings() {
			for _, sec := range secrets {
				if strings.Contains(str, sec) {
					t.Errorf("span %q carries a secret in %q", s.Name, str)
				}
			}
		}
	}
}

func TestTracingFromConfigGRPCE2E(t *testing.T) {
	rcv := testotlp.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	writeFile(t, cfg, tracingRoutes+`tracing:
  enabled: true
  protocol: grpc
  endpoint: http://`+rcv.GRPCAddr+`
  service_name: keygate-e2e
`)
	s := startServerWith(t, dir, append(otelOff, "KEYGATE_CONFIG="+cfg)...)
	checkTraced(t, rcv, exercise(t, s), "keygate-e2e")
}

func TestTracingFromEnvHTTPE2E(t *testing.T) {
	rcv := testotlp.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	writeFile(t, cfg, tracingRoutes)
	s := startServerWith(t, dir, append(otelOff, "KEYGATE_CONFIG="+cfg,
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.HTTPURL,
		"OTEL_SERVICE_NAME=keygate-env")...)
	checkTraced(t, rcv, exercise(t, s), "keygate-env")
}

// Off by default: with an OTLP endpoint in the environment but tracing
// not asked for, the receiver gets nothing, not even at shutdown.
func TestTracingOffByDefaultE2E(t *testing.T) {
	rcv := testotlp.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	writeFile(t, cfg, tracingRoutes)
	s := startServerWith(t, dir, append(otelOff, "KEYGATE_CONFIG="+cfg,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.HTTPURL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")...)
	exercise(t, s)
	if got := rcv.Spans(); len(got) != 0 {
		t.Errorf("tracing off, yet the receiver got %v", testotlp.Names(got))
	}
	if strings.Contains(s.logs.String(), "tracing on") {
		t.Errorf("tracing reported on:\n%s", s.logs)
	}
}
