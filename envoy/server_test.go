package envoy_test

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/keystore"
)

type harness struct {
	store  *keystore.Store
	conn   *grpc.ClientConn
	client authv3.AuthorizationClient
	tenant string
	org    string
}

// newEngine is a real store in a temp dir with one tenant, and an engine
// over it: what both adapters' tests stand on.
func newEngine(t *testing.T, cfg authz.Config) (*keystore.Store, *authz.Engine, keystore.Tenant) {
	t.Helper()
	s, err := keystore.Open(filepath.Join(t.TempDir(), "keygate.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e, err := authz.New(cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	tn, err := s.CreateTenant(t.Context(), "Acme")
	if err != nil {
		t.Fatal(err)
	}
	return s, e, tn
}

// serve runs g on a loopback port until the test ends and returns a
// client connection to it.
func serve(t *testing.T, g *grpc.Server) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// start runs the real gRPC server on a loopback port over a real store and
// returns a client built from go-control-plane's generated types.
func start(t *testing.T, cfg authz.Config, opts ...envoy.Option) *harness {
	t.Helper()
	s, e, tn := newEngine(t, cfg)
	g, _ := envoy.NewGRPCServer(envoy.NewServer(e, nil, opts...))
	conn := serve(t, g)
	og, _ := s.CreateOrg(t.Context(), tn.ID, "Acme EU")
	return &harness{store: s, conn: conn, client: authv3.NewAuthorizationClient(conn), tenant: tn.ID, org: og.ID}
}

func (h *harness) key(t *testing.T, spec keystore.KeySpec) keystore.CreatedKey {
	t.Helper()
	spec.TenantID = h.tenant
	if spec.Name == "" {
		spec.Name = "Production Backend"
	}
	k, err := h.store.CreateKey(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func checkRequest(headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/api/v1/assessments?limit=10", Host: "api.example.com", Headers: headers,
		}},
	}}
}

func (h *harness) check(t *testing.T, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := h.client.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check returned a gRPC error (Envoy would treat it as a failure): %v", err)
	}
	return resp
}

// applyLikeEnvoy does to the upstream request what Envoy does with an OK
// response: each header option with OVERWRITE_IF_EXISTS_OR_ADD (or, on old
// versions, append=false) replaces the client's value; then removals run.
func applyLikeEnvoy(t *testing.T, in map[string]string, ok *authv3.OkHttpResponse) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range in {
		out[k] = v
	}
	for _, o := range ok.GetHeaders() {
		//lint:ignore SA1019 older Envoy versions read only append: the test holds the server to setting it
		if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || o.GetAppend() == nil || o.GetAppend().GetValue() {
			t.Fatalf("header %s would not overwrite on every Envoy version: %v", o.GetHeader().GetKey(), o)
		}
		if len(o.GetHeader().GetRawValue()) > 0 {
			t.Fatalf("header %s uses raw_value", o.GetHeader().GetKey())
		}
		out[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	for _, r := range ok.GetHeadersToRemove() {
		delete(out, r)
	}
	return out
}

func TestCheckAllowAsEnvoyApplies(t *testing.T) {
	h := start(t, authz.Config{})
	k := h.key(t, keystore.KeySpec{OrgID: h.org, UserID: "u-42", Scopes: []string{"vault:read"}, Tier: "enterprise"})
	sent := map[string]string{
		"x-api-key":      k.Secret.Reveal(),
		"x-tenant-id":    "spoofed",
		"x-api-key-id":   "spoofed",
		"x-scopes":       "admin",
		"accept":         "application/json",
		"x-request-id":   "r1",
		"x-api-key-name": "spoofed",
	}
	resp := h.check(t, checkRequest(sent))
	if resp.GetStatus().GetCode() != int32(code.Code_OK) {
		t.Fatalf("status %v, want OK", resp.GetStatus())
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("no ok_response: %v", resp)
	}
	got := applyLikeEnvoy(t, sent, ok)
	want := map[string]string{
		"accept": "application/json", "x-request-id": "r1",
		"x-tenant-id": h.tenant, "x-org-id": h.org, "x-user-id": "u-42", "x-api-key-id": k.ID,
		"x-api-key-name": "Production Backend", "x-api-key-environment": "live",
		"x-rate-limit-tier": "enterprise", "x-scopes": "vault:read",
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Fatalf("upstream request headers (-got +want):\n%s", diff)
	}
	set := map[string]bool{}
	for _, o := range ok.GetHeaders() {
		set[o.GetHeader().GetKey()] = true
	}
	for _, r := range ok.GetHeadersToRemove() {
		if set[r] {
			t.Fatalf("%s is both set and removed (removal runs after the sets)", r)
		}
	}
	md := resp.GetDynamicMetadata().AsMap()
	if md["tenant_id"] != h.tenant || md["api_key_id"] != k.ID || md["org_id"] != h.org || md["rate_limit_tier"] != "enterprise" {
		t.Fatalf("dynamic metadata = %v", md)
	}
}

func TestCheckDenials(t *testing.T) {
	for _, format := range []string{authz.FormatSimple, authz.FormatProblem} {
		h := start(t, authz.Config{Errors: authz.ErrorStyle{Format: format}})
		revoked := h.key(t, keystore.KeySpec{})
		if _, err := h.store.RevokeKey(t.Context(), revoked.ID); err != nil {
			t.Fatal(err)
		}
		paused := h.key(t, keystore.KeySpec{})
		if _, err := h.store.UpdateKey(t.Context(), paused.ID, keystore.KeyUpdate{Status: new(authz.StatusInactive)}); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name    string
			headers map[string]string
			status  int
			code    code.Code
			message string
		}{
			{"missing", map[string]string{}, 401, code.Code_UNAUTHENTICATED, "API key is required"},
			{"invalid", map[string]string{"authorization": "Bearer ak_live_a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6"}, 401, code.Code_UNAUTHENTICATED, "Invalid API key"},
			{"revoked", map[string]string{"x-api-token": revoked.Secret.Reveal()}, 401, code.Code_UNAUTHENTICATED, "API key has been revoked"},
			{"inactive", map[string]string{"x-api-key": paused.Secret.Reveal()}, 401, code.Code_UNAUTHENTICATED, "API key is inactive"},
		}
		for _, tt := range tests {
			t.Run(format+"/"+tt.name, func(t *testing.T) {
				resp := h.check(t, checkRequest(tt.headers))
				if resp.GetStatus().GetCode() != int32(tt.code) {
					t.Fatalf("grpc status %v, want %v", resp.GetStatus(), tt.code)
				}
				den := resp.GetDeniedResponse()
				if den == nil || int(den.GetStatus().GetCode()) != tt.status {
					t.Fatalf("denied_response = %v, want HTTP %d (without it Envoy answers 403)", den, tt.status)
				}
				var body map[string]any
				if err := json.Unmarshal([]byte(den.GetBody()), &body); err != nil {
					t.Fatalf("body %q: %v", den.GetBody(), err)
				}
				hdr := map[string]string{}
				for _, o := range den.GetHeaders() {
					hdr[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
				}
				switch format {
				case authz.FormatSimple:
					if body["error"] != tt.message || hdr["content-type"] != "application/json" {
						t.Fatalf("body %v, headers %v", body, hdr)
					}
				case authz.FormatProblem:
					if body["detail"] != tt.message || body["code"] == nil || hdr["content-type"] != "application/problem+json" {
						t.Fatalf("body %v, headers %v", body, hdr)
					}
				}
				if !strings.HasPrefix(hdr["www-authenticate"], "Bearer") {
					t.Fatalf("401 without www-authenticate: %v", hdr)
				}
			})
		}
	}
}

// TestCheckHeaderMap: Envoy with encode_raw_headers sends header_map with
// raw values instead of the headers map.
func TestCheckHeaderMap(t *testing.T) {
	h := start(t, authz.Config{})
	k := h.key(t, keystore.KeySpec{})
	req := checkRequest(nil)
	req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "X-Api-Key", RawValue: []byte(k.Secret.Reveal())},
	}}
	if resp := h.check(t, req); resp.GetOkResponse() == nil {
		t.Fatalf("header_map request denied: %v", resp)
	}
	req.Attributes.Request.Http.HeaderMap.Headers = append(req.Attributes.Request.Http.HeaderMap.Headers,
		&corev3.HeaderValue{Key: "x-api-key", RawValue: []byte(k.Secret.Reveal())})
	if resp := h.check(t, req); resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Fatalf("repeated x-api-key in header_map not rejected: %v", resp)
	}
}

// TestCheckFailsClosed: with the store gone, Check answers 503 in a
// CheckResponse (never a gRPC error, which failure_mode_allow would turn
// into an allow).
func TestCheckFailsClosed(t *testing.T) {
	h := start(t, authz.Config{})
	k := h.key(t, keystore.KeySpec{})
	h.check(t, checkRequest(map[string]string{"x-api-key": k.Secret.Reveal()}))
	h.store.Close()
	resp := h.check(t, checkRequest(map[string]string{"x-api-key": k.Secret.Reveal()}))
	if resp.GetStatus().GetCode() != int32(code.Code_UNAVAILABLE) || resp.GetDeniedResponse().GetStatus().GetCode() != 503 {
		t.Fatalf("closed store: %v", resp)
	}
	if !strings.Contains(resp.GetDeniedResponse().GetBody(), "Authorization temporarily unavailable") {
		t.Fatalf("body %q", resp.GetDeniedResponse().GetBody())
	}
}

// TestRevokeVisibleOnNextCheck: through the real server, a revoke is seen
// by the very next Check.
func TestRevokeVisibleOnNextCheck(t *testing.T) {
	h := start(t, authz.Config{})
	k := h.key(t, keystore.KeySpec{})
	req := checkRequest(map[string]string{"authorization": "Bearer " + k.Secret.Reveal()})
	for i := 0; i < 3; i++ {
		if h.check(t, req).GetOkResponse() == nil {
			t.Fatal("fresh key denied")
		}
	}
	if _, err := h.store.RevokeKey(t.Context(), k.ID); err != nil {
		t.Fatal(err)
	}
	resp := h.check(t, req)
	if !strings.Contains(resp.GetDeniedResponse().GetBody(), "API key has been revoked") {
		t.Fatalf("next Check after revoke: %v", resp)
	}
}

func TestHealthAndReflection(t *testing.T) {
	h := start(t, authz.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, svc := range []string{"", envoy.ServiceName} {
		r, err := healthpb.NewHealthClient(h.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q = %v, %v", svc, r, err)
		}
	}
	stream, err := reflectionpb.NewServerReflectionClient(h.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), envoy.ServiceName) {
		t.Fatalf("reflection lists %v, want %s among them", names, envoy.ServiceName)
	}
}

// TestCheckDecisionIDAndIntrospection: denials carry the decision id the
// client can quote; the introspection path is Keygate's own 200 answer,
// which Envoy sends as a local reply; shadow decisions are visible in the
// dynamic metadata.
func TestCheckDecisionIDAndIntrospection(t *testing.T) {
	h := start(t, authz.Config{Policy: authz.Policy{
		IntrospectionPath: "/api/v2/me",
		Rules:             []authz.Rule{{Name: "beta", PathPrefix: "/beta/", Scopes: []string{"beta"}, Shadow: true}},
	}})
	k := h.key(t, keystore.KeySpec{Scopes: []string{"vault:read"}})

	resp := h.check(t, checkRequest(map[string]string{}))
	den := resp.GetDeniedResponse()
	var id string
	for _, o := range den.GetHeaders() {
		if o.GetHeader().GetKey() == authz.DecisionIDHeader {
			id = o.GetHeader().GetValue()
		}
	}
	if len(id) != 16 || resp.GetDynamicMetadata().AsMap()["decision_id"] != id {
		t.Fatalf("denial decision id %q, metadata %v", id, resp.GetDynamicMetadata().AsMap())
	}

	req := checkRequest(map[string]string{"authorization": "Bearer " + k.Secret.Reveal()})
	req.Attributes.Request.Http.Path = "/api/v2/me?x=1"
	resp = h.check(t, req)
	den = resp.GetDeniedResponse()
	if resp.GetStatus().GetCode() == int32(code.Code_OK) || den.GetStatus().GetCode() != 200 {
		t.Fatalf("introspection must be a local 200 reply: %v", resp)
	}
	var me map[string]any
	if err := json.Unmarshal([]byte(den.GetBody()), &me); err != nil || me["api_key_id"] != k.ID || me["tenant_id"] != h.tenant {
		t.Fatalf("introspection body %q: %v", den.GetBody(), err)
	}

	req = checkRequest(map[string]string{"x-api-key": k.Secret.Reveal()})
	req.Attributes.Request.Http.Path = "/beta/feature"
	resp = h.check(t, req)
	if resp.GetOkResponse() == nil || resp.GetDynamicMetadata().AsMap()["would_deny"] != "insufficient_scope" {
		t.Fatalf("shadow route: %v", resp)
	}
}

// TestCheckContextExtensions: per-route settings arrive in the
// CheckRequest's context_extensions and apply.
func TestCheckContextExtensions(t *testing.T) {
	h := start(t, authz.Config{})
	k := h.key(t, keystore.KeySpec{Scopes: []string{"vault:read"}})
	req := checkRequest(map[string]string{"x-api-key": k.Secret.Reveal()})
	req.Attributes.ContextExtensions = map[string]string{"keygate.scopes": "vault:write"}
	resp := h.check(t, req)
	if resp.GetDeniedResponse().GetStatus().GetCode() != 403 || !strings.Contains(resp.GetDeniedResponse().GetBody(), "vault:write") {
		t.Fatalf("scope from context_extensions: %v", resp)
	}
	req.Attributes.ContextExtensions = map[string]string{"keygate.public": "true"}
	req.Attributes.Request.Http.Headers = map[string]string{"x-tenant-id": "evil"}
	resp = h.check(t, req)
	ok := resp.GetOkResponse()
	if ok == nil || !slicesContain(ok.GetHeadersToRemove(), "x-tenant-id") {
		t.Fatalf("public via context_extensions must strip spoofed identity: %v", resp)
	}
}

func slicesContain(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestRateLimitThroughServer: with the clock held still, a standard key's
// 101st request in a minute is refused with 429 and the rate-limit headers;
// an enterprise key is not limited there; allowed answers carry the
// remaining budget for the client.
func TestRateLimitThroughServer(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	h := start(t, authz.Config{Now: func() time.Time { return now }})
	std := h.key(t, keystore.KeySpec{Tier: "standard"})
	ent := h.key(t, keystore.KeySpec{Tier: "enterprise"})
	headersOf := func(opts []*corev3.HeaderValueOption) map[string]string {
		m := map[string]string{}
		for _, o := range opts {
			m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
		}
		return m
	}
	for i := 1; i <= 100; i++ {
		resp := h.check(t, checkRequest(map[string]string{"x-api-key": std.Secret.Reveal()}))
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("request %d of a standard key refused: %v", i, resp)
		}
		if got := headersOf(ok.GetResponseHeadersToAdd())["x-ratelimit-remaining"]; got != strconv.Itoa(100-i) {
			t.Fatalf("request %d: x-ratelimit-remaining %q", i, got)
		}
	}
	resp := h.check(t, checkRequest(map[string]string{"x-api-key": std.Secret.Reveal()}))
	den := resp.GetDeniedResponse()
	if resp.GetStatus().GetCode() != int32(code.Code_RESOURCE_EXHAUSTED) || den.GetStatus().GetCode() != 429 {
		t.Fatalf("101st request: %v", resp)
	}
	hdr := headersOf(den.GetHeaders())
	// A sliding window: all 100 leave it one window and one of its 16
	// slots (63.75 s) after the start of the slot they came in, and only
	// then does the 101st fit.
	want := map[string]string{
		"retry-after":           "64",
		"ratelimit-policy":      `"standard";q=100;w=60`,
		"ratelimit":             `"standard";r=0;t=64`,
		"x-ratelimit-limit":     "100",
		"x-ratelimit-remaining": "0",
		"x-ratelimit-reset":     strconv.FormatInt(now.Unix()+64, 10),
	}
	for k, v := range want {
		if hdr[k] != v {
			t.Errorf("429 header %s = %q, want %q", k, hdr[k], v)
		}
	}
	if !strings.Contains(den.GetBody(), "Rate limit exceeded. Please try again later.") {
		t.Fatalf("429 body %q", den.GetBody())
	}
	for i := 0; i < 101; i++ {
		if h.check(t, checkRequest(map[string]string{"x-api-key": ent.Secret.Reveal()})).GetOkResponse() == nil {
			t.Fatalf("enterprise request %d refused", i+1)
		}
	}
}

// TestMetadataSwitch: with WithMetadata(false) the answers Envoy gets, allow
// and denial, carry no dynamic metadata and are otherwise unchanged; by
// default they do.
func TestMetadataSwitch(t *testing.T) {
	for _, on := range []bool{true, false} {
		h := start(t, authz.Config{}, envoy.WithMetadata(on))
		k := h.key(t, keystore.KeySpec{})
		allow := h.check(t, checkRequest(map[string]string{"x-api-key": k.Secret.Reveal()}))
		deny := h.check(t, checkRequest(map[string]string{"x-api-key": "ak_live_nope"}))
		if allow.GetOkResponse() == nil || deny.GetDeniedResponse().GetStatus().GetCode() != 401 {
			t.Fatalf("metadata %v: allow %v, deny %v", on, allow, deny)
		}
		if got := allow.GetOkResponse().GetHeaders(); len(got) == 0 {
			t.Fatalf("metadata %v: allow sets no identity headers", on)
		}
		for name, resp := range map[string]*authv3.CheckResponse{"allow": allow, "deny": deny} {
			fields := resp.GetDynamicMetadata().GetFields()
			if on && fields["decision_id"].GetStringValue() == "" {
				t.Fatalf("%s with metadata: %v", name, fields)
			}
			if !on && resp.GetDynamicMetadata() != nil {
				t.Fatalf("%s without metadata carries %v", name, fields)
			}
		}
		if on && allow.GetDynamicMetadata().GetFields()["api_key_id"].GetStringValue() != k.ID {
			t.Fatalf("allow metadata %v, want api_key_id %s", allow.GetDynamicMetadata(), k.ID)
		}
	}
}

// TestCheckThroughInterceptor: interceptors (metrics) see every Check as
// the generated service would show it, and the answer is unchanged.
func TestCheckThroughInterceptor(t *testing.T) {
	_, e, _ := newEngine(t, authz.Config{})
	srv := envoy.NewServer(e, nil)
	var calls int
	var seen grpc.UnaryServerInfo
	g, _ := envoy.NewGRPCServer(srv, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == authv3.Authorization_Check_FullMethodName {
			calls++
			seen = *info
		}
		return h(ctx, req)
	}))
	conn := serve(t, g)
	h := &harness{client: authv3.NewAuthorizationClient(conn)}
	resp := h.check(t, checkRequest(map[string]string{"x-api-key": "ak_live_nope"}))
	if resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Fatalf("through an interceptor: %v", resp)
	}
	if calls != 1 || seen.Server != srv {
		t.Fatalf("interceptor saw %d Checks, server %v", calls, seen.Server)
	}
}
