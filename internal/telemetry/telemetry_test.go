package telemetry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/internal/secret"
	"github.com/keygate/keygate/internal/testotlp"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// The trace a caller (Envoy's client) started, as its traceparent says.
const (
	callerTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan   = "00f067aa0ba902b7"
	callerParent = "00-" + callerTrace + "-" + callerSpan + "-01"
)

var otelEnv = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
	"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
	"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_INSECURE",
}

// cleanEnv empties the OTEL_* environment for the test, then sets kv
// (name, value, name, value...).
func cleanEnv(t *testing.T, kv ...string) {
	t.Helper()
	for _, k := range otelEnv {
		t.Setenv(k, "")
	}
	for i := 0; i+1 < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
}

// fixture is a real store with one tenant and one key, and the engine
// serve would build over it.
type fixture struct {
	store         *keystore.Store
	tenant, keyID string
	raw           string
	engine        *authz.Engine
	adminToken    string
	adminHandler  http.Handler
}

func newFixture(t testing.TB, tr *Tracing) *fixture {
	t.Helper()
	s, err := keystore.Open(filepath.Join(t.TempDir(), "keygate.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	tn, err := s.CreateTenant(ctx, "Acme")
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateKey(ctx, keystore.KeySpec{TenantID: tn.ID, Name: "traced"})
	if err != nil {
		t.Fatal(err)
	}
	// As serve builds it, with a budget the benchmarks cannot exhaust.
	cfg := authz.Config{Orgs: s, Recorder: s, Policy: authz.Policy{Rules: []authz.Rule{{Name: "api", PathPrefix: "/v1/"}}},
		RateLimits: authz.RateLimits{Tiers: map[string]authz.LimitSet{
			"standard": authz.One("standard", ratelimit.Limit{Requests: 1 << 29, Window: time.Second}),
		}}}
	e, err := authz.New(cfg, tr.Lookup(s))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: s, tenant: tn.ID, keyID: k.ID, raw: k.Secret.Reveal(), engine: e, adminToken: strings.Repeat("t", 40)}
	f.adminHandler, err = admin.New(s, admin.Options{
		Token:          secret.New(f.adminToken),
		RequestMetrics: tr.AdminObserved,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func (f *fixture) check(t *testing.T, d Decider, key, traceparent string) authz.Decision {
	t.Helper()
	h := map[string]string{"x-api-key": key}
	if traceparent != "" {
		h["traceparent"] = traceparent
	}
	dec, err := d.Decide(context.Background(), &authz.Request{Method: "GET", Path: "/v1/things?api_key=" + key, Host: "api.example.com", Peer: "10.0.0.1", Headers: h})
	if err != nil {
		t.Fatal(err)
	}
	return dec
}

// secrets are the strings no span may carry.
func (f *fixture) secrets() []string {
	sum := sha256.Sum256([]byte(f.raw))
	return []string{f.raw, hex.EncodeToString(sum[:]), f.adminToken}
}

func assertNoSecrets(t *testing.T, spans []testotlp.Span, secrets []string) {
	t.Helper()
	for _, s := range spans {
		for _, str := range s.Strings() {
			for _, sec := range secrets {
				if sec != "" && strings.Contains(str, sec) {
					t.Errorf("span %q carries a secret in %q", s.Name, str)
				}
			}
		}
	}
}

func find(spans []testotlp.Span, name string, match func(testotlp.Span) bool) (testotlp.Span, bool) {
	for _, s := range spans {
		if s.Name == name && (match == nil || match(s)) {
			return s, true
		}
	}
	return testotlp.Span{}, false
}

func withAttr(key, value string) func(testotlp.Span) bool {
	return func(s testotlp.Span) bool { v, ok := s.Attr(key); return ok && v == value }
}

func resourceAttr(s testotlp.Span, key string) string {
	for _, kv := range s.Resource.GetAttributes() {
		if kv.Key == key {
			return kv.Value.GetStringValue()
		}
	}
	return ""
}

// Off by default: no provider, and every decorator hands back what it is
// given, so the Check path is the untraced one.
func TestOffByDefault(t *testing.T) {
	rcv := testotlp.Start(t)
	// An endpoint alone (set for other processes' signals) turns nothing on.
	cleanEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPURL)
	tr, err := Start(t.Context(), Settings{}, discardLog())
	if err != nil || tr != nil {
		t.Fatalf("Start with nothing asked: %v, %v; want nil, nil", tr, err)
	}
	f := newFixture(t, tr)
	if d := tr.Decider(f.engine); d != Decider(f.engine) {
		t.Errorf("Decider wrapped the engine: %T", d)
	}
	if l := tr.Lookup(f.store); l != authz.Lookup(f.store) {
		t.Errorf("Lookup wrapped the store: %T", l)
	}
	h := http.NotFoundHandler().(http.HandlerFunc)
	if got, ok := tr.Admin(h).(http.HandlerFunc); !ok || got == nil {
		t.Errorf("Admin wrapped the handler: %T", tr.Admin(h))
	}
	srv := httptest.NewServer(tr.Admin(f.adminHandler))
	defer srv.Close()
	f.check(t, tr.Decider(f.engine), f.raw, callerParent)
	postTenant(t, srv.URL, f.adminToken, callerParent)
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := rcv.Spans(); len(got) != 0 {
		t.Errorf("tracing off, yet the receiver got %v", testotlp.Names(got))
	}
}

func TestEnabled(t *testing.T) {
	for _, tt := range []struct {
		name    string
		file    bool
		env     map[string]string
		on, why bool
	}{
		{"nothing", false, nil, false, false},
		{"file", true, nil, true, false},
		{"env otlp", false, map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true, false},
		{"env list", false, map[string]string{"OTEL_TRACES_EXPORTER": "console, otlp"}, true, false},
		{"env none", false, map[string]string{"OTEL_TRACES_EXPORTER": "none"}, false, false},
		{"env unsupported", false, map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, true},
		{"file wins over none", true, map[string]string{"OTEL_TRACES_EXPORTER": "none"}, true, false},
		{"endpoint alone", false, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false, false},
		{"sdk disabled beats env", false, map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, false, false},
		{"sdk disabled beats file", true, map[string]string{"OTEL_SDK_DISABLED": "TRUE"}, false, true},
		{"sdk disabled false", true, map[string]string{"OTEL_SDK_DISABLED": "false"}, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			on, why := enabled(Settings{Enabled: tt.file}, func(k string) string { return tt.env[k] })
			if on != tt.on || (why != "") != tt.why {
				t.Errorf("enabled = %v, %q; want %v, reason given %v", on, why, tt.on, tt.why)
			}
		})
	}
}

func TestProtocolAndServiceNamePrecedence(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if p := protocolOf(Settings{}, getenv); p != ProtocolHTTP {
		t.Errorf("default protocol %q", p)
	}
	env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
	if p := protocolOf(Settings{}, getenv); p != ProtocolGRPC {
		t.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q", p)
	}
	env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/protobuf"
	if p := protocolOf(Settings{}, getenv); p != ProtocolHTTP {
		t.Errorf("the traces-specific variable must win: %q", p)
	}
	if p := protocolOf(Settings{Protocol: ProtocolGRPC}, getenv); p != ProtocolGRPC {
		t.Errorf("the file must win: %q", p)
	}
	env["OTEL_SERVICE_NAME"] = "from-env"
	if n := serviceName(Settings{}, getenv); n != "from-env" {
		t.Errorf("service name %q", n)
	}
	if n := serviceName(Settings{ServiceName: "from-file"}, getenv); n != "from-file" {
		t.Errorf("service name %q", n)
	}
}

func TestStartRefusesBadSettings(t *testing.T) {
	cleanEnv(t)
	ratio := 2.0
	for _, s := range []Settings{
		{Enabled: true, Protocol: "http/json"},
		{Enabled: true, Endpoint: "collector:4317"},
		{Enabled: true, SampleRatio: &ratio},
	} {
		if tr, err := Start(t.Context(), s, discardLog()); err == nil {
			tr.Shutdown(t.Context())
			t.Errorf("Start(%+v) accepted", s)
		}
	}
	cleanEnv(t, "OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	if _, err := Start(t.Context(), Settings{}, discardLog()); err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Errorf("an unsupported protocol in the environment: %v", err)
	}
}

// Checks exported over gRPC, set up by the file: the Check span joins the
// caller's trace, its lookup is its child, attributes say what was decided,
// and nothing carries the key.
func TestCheckSpansOverGRPC(t *testing.T) {
	rcv := testotlp.Start(t)
	// The environment names a dead collector and the other protocol: the
	// file's values win.
	cleanEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	tr, err := Start(t.Context(), Settings{Enabled: true, Protocol: ProtocolGRPC, Endpoint: "http://" + rcv.GRPCAddr, ServiceName: "edge-auth", ServiceVersion: "v9"}, discardLog())
	if err != nil || tr == nil {
		t.Fatalf("Start: %v, %v", tr, err)
	}
	f := newFixture(t, tr)
	d := tr.Decider(f.engine)
	if dec := f.check(t, d, f.raw, callerParent); !dec.Allow() {
		t.Fatalf("valid key: %+v", dec)
	}
	unknown := "ak_live_" + strings.Repeat("A", 32)
	if dec := f.check(t, d, unknown, ""); dec.Allow() {
		t.Fatalf("invalid key allowed")
	}
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	spans := rcv.WaitFor(t, 10*time.Second, "check spans", func(s []testotlp.Span) bool { return len(s) >= 3 })

	allow, ok := find(spans, CheckSpan, withAttr("keygate.reason", "ok"))
	if !ok {
		t.Fatalf("no allowed check span in %v", testotlp.Names(spans))
	}
	if got := hex.EncodeToString(allow.TraceId); got != callerTrace {
		t.Errorf("check span trace %s, want the caller's %s", got, callerTrace)
	}
	if got := hex.EncodeToString(allow.ParentSpanId); got != callerSpan {
		t.Errorf("check span parent %s, want the caller's span %s", got, callerSpan)
	}
	if allow.Kind.String() != "SPAN_KIND_SERVER" {
		t.Errorf("check span kind %v", allow.Kind)
	}
	for k, want := range map[string]string{
		"keygate.route": "api", "keygate.tenant": f.tenant, "keygate.key_id": f.keyID,
		"keygate.status": "200", "url.path": "/v1/things", "http.request.method": "GET",
	} {
		if v, _ := allow.Attr(k); v != want {
			t.Errorf("check span %s = %q, want %q", k, v, want)
		}
	}
	if v, _ := allow.Attr("keygate.decision_id"); len(v) != 16 {
		t.Errorf("decision id %q", v)
	}
	if allow.Status.GetCode().String() == "STATUS_CODE_ERROR" {
		t.Errorf("an allow marked as an error")
	}
	lookup, ok := find(spans, LookupSpan, func(s testotlp.Span) bool { return bytes.Equal(s.ParentSpanId, allow.SpanId) })
	if !ok {
		t.Fatalf("no lookup span under the check span in %v", testotlp.Names(spans))
	}
	if !bytes.Equal(lookup.TraceId, allow.TraceId) {
		t.Errorf("lookup in another trace")
	}
	if v, _ := lookup.Attr("keystore.found"); v != "true" {
		t.Errorf("lookup found = %q", v)
	}

	deny, ok := find(spans, CheckSpan, withAttr("keygate.reason", "invalid_api_key"))
	if !ok {
		t.Fatalf("no denied check span in %v", testotlp.Names(spans))
	}
	if hex.EncodeToString(deny.TraceId) == callerTrace || len(deny.ParentSpanId) != 0 {
		t.Errorf("a Check without traceparent joined a trace")
	}
	if deny.Status.GetCode().String() == "STATUS_CODE_ERROR" {
		t.Errorf("a denial marked as an error: denials are answers")
	}
	if v, _ := deny.Attr("keygate.status"); v != "401" {
		t.Errorf("denial status %q", v)
	}
	if _, ok := deny.Attr("keygate.tenant"); ok {
		t.Errorf("an unknown key has a tenant")
	}
	if n := resourceAttr(allow, "service.name"); n != "edge-auth" {
		t.Errorf("service.name %q", n)
	}
	if v := resourceAttr(allow, "service.version"); v != "v9" {
		t.Errorf("service.version %q", v)
	}
	assertNoSecrets(t, spans, append(f.secrets(), unknown))
}

// Set up by the environment alone, over HTTP: the exporter reads the
// endpoint, the SDK the service name and the sampler.
func TestCheckSpansOverHTTPFromEnv(t *testing.T) {
	rcv := testotlp.Start(t)
	cleanEnv(t,
		"OTEL_TRACES_EXPORTER", "otlp",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPURL,
		"OTEL_SERVICE_NAME", "from-env",
		"OTEL_TRACES_SAMPLER", "parentbased_always_off")
	tr, err := Start(t.Context(), Settings{}, discardLog())
	if err != nil || tr == nil {
		t.Fatalf("Start: %v, %v", tr, err)
	}
	f := newFixture(t, tr)
	d := tr.Decider(f.engine)
	f.check(t, d, f.raw, callerParent) // sampled by its caller: kept
	f.check(t, d, f.raw, "")           // a root, and the sampler says off
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	spans := rcv.WaitFor(t, 10*time.Second, "check spans", func(s []testotlp.Span) bool { return len(s) >= 2 })
	var checks int
	for _, s := range spans {
		if s.Name == CheckSpan {
			checks++
			if hex.EncodeToString(s.TraceId) != callerTrace {
				t.Errorf("an unsampled root Check was exported")
			}
		}
	}
	if checks != 1 {
		t.Errorf("%d check spans, want the caller-sampled one: %v", checks, testotlp.Names(spans))
	}
	if n := resourceAttr(spans[0], "service.name"); n != "from-env" {
		t.Errorf("service.name %q, want OTEL_SERVICE_NAME's", n)
	}
	assertNoSecrets(t, spans, f.secrets())
}

// A file endpoint for HTTP without a path gets /v1/traces, as the
// environment's does; a ratio of 0 keeps no root trace.
func TestHTTPEndpointFromFile(t *testing.T) {
	rcv := testotlp.Start(t)
	cleanEnv(t)
	zero := 0.0
	tr, err := Start(t.Context(), Settings{Enabled: true, Protocol: ProtocolHTTP, Endpoint: rcv.HTTPURL, SampleRatio: &zero}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, tr)
	d := tr.Decider(f.engine)
	f.check(t, d, f.raw, "")
	f.check(t, d, f.raw, callerParent)
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	spans := rcv.WaitFor(t, 10*time.Second, "check span", func(s []testotlp.Span) bool { return len(s) >= 1 })
	for _, s := range spans {
		if hex.EncodeToString(s.TraceId) != callerTrace {
			t.Errorf("sample_ratio 0 kept a root trace: %s", s.Name)
		}
	}
}

// A Check that fails closed is an error span; a collector out of reach
// costs the Check its answer nothing.
func TestFailedCheckAndDeadCollector(t *testing.T) {
	rcv := testotlp.Start(t)
	cleanEnv(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tr, err := Start(t.Context(), Settings{Enabled: true, Protocol: ProtocolGRPC, Endpoint: "http://" + rcv.GRPCAddr}, log)
	if err != nil {
		t.Fatal(err)
	}
	failing := tr.Decider(deciderFunc(func(context.Context, *authz.Request) (authz.Decision, error) {
		return authz.Decision{Reason: authz.ReasonUnavailable, Status: 503}, errors.New("store: closed")
	}))
	if _, err := failing.Decide(t.Context(), &authz.Request{Method: "GET", Path: "/"}); err == nil {
		t.Fatal("the error was swallowed")
	}
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	spans := rcv.WaitFor(t, 10*time.Second, "check span", func(s []testotlp.Span) bool { return len(s) >= 1 })
	if s := spans[0]; s.Status.GetCode().String() != "STATUS_CODE_ERROR" || s.Status.GetMessage() != "store: closed" {
		t.Errorf("failed-closed Check status %v", s.Status)
	}

	// Nothing listens at port 1. Exports are tried soon and given up
	// quickly, so that the failure reaches the log within the test.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "200")
	warned := make(chan string, 16)
	dead, err := Start(t.Context(), Settings{Enabled: true, Protocol: ProtocolHTTP, Endpoint: "http://127.0.0.1:1"},
		slog.New(&recordHandler{level: slog.LevelWarn, records: warned}))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, dead)
	if dec := f.check(t, dead.Decider(f.engine), f.raw, callerParent); !dec.Allow() {
		t.Errorf("with the collector down: %+v", dec)
	}
	select {
	case msg := <-warned:
		if !strings.Contains(msg, "tracing export") || !strings.Contains(msg, "127.0.0.1:1") {
			t.Errorf("export failure logged as %q", msg)
		}
		for _, sec := range f.secrets() {
			if strings.Contains(msg, sec) {
				t.Errorf("the export failure's log carries a secret: %q", msg)
			}
		}
	case <-time.After(30 * time.Second):
		t.Error("the failed export was not logged at Warn")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	dead.Shutdown(ctx) // bounded: what it cannot send is dropped
}

// recordHandler sends every record at level or above, with its
// attributes, to records (dropping what does not fit).
type recordHandler struct {
	level   slog.Level
	records chan string
	attrs   []slog.Attr
}

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	select {
	case h.records <- b.String():
	default:
	}
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordHandler{level: h.level, records: h.records, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *recordHandler) WithGroup(string) slog.Handler { return h }

type deciderFunc func(context.Context, *authz.Request) (authz.Decision, error)

func (f deciderFunc) Decide(ctx context.Context, r *authz.Request) (authz.Decision, error) {
	return f(ctx, r)
}

func postTenant(t *testing.T, base, token, traceparent string) {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/v1/tenants", strings.NewReader(`{"name":"Globex"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/tenants: %d %s", resp.StatusCode, body)
	}
}

// An admin write is a span named after its route, joined to the caller's
// trace, with its principal's kind; reads are not traced.
func TestAdminSpans(t *testing.T) {
	rcv := testotlp.Start(t)
	cleanEnv(t)
	tr, err := Start(t.Context(), Settings{Enabled: true, Protocol: ProtocolHTTP, Endpoint: rcv.HTTPURL}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, tr)
	srv := httptest.NewServer(tr.Admin(f.adminHandler))
	defer srv.Close()
	postTenant(t, srv.URL, f.adminToken, callerParent)
	req, _ := http.NewRequest("GET", srv.URL+"/v1/tenants", nil)
	req.Header.Set("Authorization", "Bearer "+f.adminToken)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	// Refused: no token. Still a write attempt, so still a span.
	resp, err := http.Post(srv.URL+"/v1/tenants", "application/json", strings.NewReader(`{"name":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	spans := rcv.WaitFor(t, 10*time.Second, "admin spans", func(s []testotlp.Span) bool { return len(s) >= 2 })
	if len(spans) != 2 {
		t.Errorf("spans %v: want the two writes, not the read", testotlp.Names(spans))
	}
	const name = AdminSpan + " POST /v1/tenants"
	ok, found := find(spans, name, withAttr("http.response.status_code", "201"))
	if !found {
		t.Fatalf("no span %q with status 201 in %v", name, testotlp.Names(spans))
	}
	if hex.EncodeToString(ok.TraceId) != callerTrace || hex.EncodeToString(ok.ParentSpanId) != callerSpan {
		t.Errorf("admin span not joined to the caller's trace")
	}
	if v, _ := ok.Attr("keygate.admin.principal"); v != "bootstrap" {
		t.Errorf("principal %q", v)
	}
	if v, _ := ok.Attr("http.route"); v != "POST /v1/tenants" {
		t.Errorf("route %q", v)
	}
	refused, found := find(spans, name, withAttr("http.response.status_code", "401"))
	if !found {
		t.Fatalf("no refused admin span in %v", testotlp.Names(spans))
	}
	if _, ok := refused.Attr("keygate.admin.principal"); ok {
		t.Errorf("an unauthenticated request has a principal")
	}
	assertNoSecrets(t, spans, f.secrets())
}
