// Package envoy adapts the decision core to Envoy's external authorization
// gRPC protocol (envoy.service.auth.v3): a CheckRequest becomes an
// authz.Request, and an authz.Decision becomes a CheckResponse that Envoy
// applies exactly as decided, whatever its version.
//
// It translates and decides nothing. The rules it follows are the "Envoy
// facts" of DESIGN.md: denials carry their HTTP status in denied_response
// (without it Envoy answers 403), policy denials are never gRPC errors (an
// error plus failure_mode_allow would let the request through), injected
// headers overwrite on every Envoy version, and headers_to_remove never
// names a header that is set.
package envoy

import (
	"context"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keygate/keygate/authz"
)

// Server implements envoy.service.auth.v3.Authorization.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	reporting
	// info is what the gRPC server's interceptors are told of a Check
	// and intercepted what they call: the same for every call, so made
	// once.
	info        grpc.UnaryServerInfo
	intercepted grpc.UnaryHandler
}

// NewServer returns an Authorization server that asks d. A nil logger
// discards.
func NewServer(d Decider, log *slog.Logger, opts ...Option) *Server {
	s := &Server{reporting: newReporting(d, log, opts)}
	s.info = grpc.UnaryServerInfo{Server: s, FullMethod: authv3.Authorization_Check_FullMethodName}
	s.intercepted = s.interceptedCheck
	return s
}

// Check answers one CheckRequest. It returns a gRPC error only for a request
// it cannot read at all; every decision, the fail-closed 503 included, is a
// CheckResponse.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	r := requestOf(req)
	d := s.decide(ctx, &r)
	resp := Response(d)
	if !s.metadata {
		resp.DynamicMetadata = nil
	}
	s.report(ctx, "grpc", &r, &d, start)
	return resp, nil
}

// checkWire is Check as the gRPC server runs it: the answer encoded into
// a buffer gRPC returns to its pool once sent (see wire.go).
func (s *Server) checkWire(ctx context.Context, r *authz.Request) mem.Buffer {
	start := time.Now()
	d := s.decide(ctx, r)
	var meta metaFields
	if s.metadata {
		meta = metadataOf(&d)
	}
	sz := responseSize(&d, &meta)
	pool := mem.DefaultBufferPool()
	buf := pool.Get(sz.total)
	*buf = appendResponse((*buf)[:0], &d, &meta, sz)
	s.report(ctx, "grpc", r, &d, start)
	return mem.NewBuffer(buf, pool)
}

func (s *Server) decide(ctx context.Context, r *authz.Request) authz.Decision {
	d, err := s.decider.Decide(ctx, r)
	if err != nil {
		// The decision is already the fail-closed denial; the cause is for
		// operators. It never contains the key: the core does not put it in
		// errors.
		s.log.LogAttrs(ctx, slog.LevelError, "check failed closed", slog.String("error", err.Error()))
	}
	return d
}

// requestOf translates a CheckRequest. Envoy sends lower-case header names;
// with encode_raw_headers it sends header_map instead of headers, which is
// folded into the same shape (repeated headers joined with ",").
func requestOf(req *authv3.CheckRequest) authz.Request {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	r := authz.Request{
		Method:   h.GetMethod(),
		Path:     h.GetPath(),
		Host:     h.GetHost(),
		Headers:  h.GetHeaders(),
		Peer:     attrs.GetSource().GetAddress().GetSocketAddress().GetAddress(),
		Settings: attrs.GetContextExtensions(),
	}
	if len(r.Headers) == 0 && len(h.GetHeaderMap().GetHeaders()) > 0 {
		r.Headers = foldHeaderMap(h.GetHeaderMap())
	}
	return r
}

func foldHeaderMap(m *corev3.HeaderMap) map[string]string {
	out := make(map[string]string, len(m.GetHeaders()))
	for _, hv := range m.GetHeaders() {
		v := hv.GetValue()
		if raw := hv.GetRawValue(); len(raw) > 0 {
			v = string(raw)
		}
		authz.AddHeader(out, hv.GetKey(), v)
	}
	return out
}

// Response renders a Decision as Envoy's CheckResponse.
func Response(d authz.Decision) *authv3.CheckResponse {
	if d.Kind == authz.KindAllow {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:         overwrite(d.Set),
				HeadersToRemove: d.Remove,
				// The remaining budget goes back to the client on the
				// backend's response.
				ResponseHeadersToAdd: overwrite(d.ResponseHeaders),
			}},
			DynamicMetadata: metadata(d),
		}
	}
	// Keygate's own answers go to the client as Envoy's local reply, with
	// the decision id to quote: a denial, and a reply (KindReply, status
	// 200), for which ext_authz has no other form than denied_response
	// (a CheckResponse with an OK status always goes upstream), so Envoy's
	// own ext_authz counters count it as denied; Keygate's logs and
	// metrics count it as a reply.
	headers := overwrite(d.ResponseHeaders, authz.Header{Name: authz.DecisionIDHeader, Value: authz.FormatID(d.ID)})
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(grpcCode(d.Status)), Message: string(d.Reason)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
			Headers: headers,
			Body:    d.Body,
		}},
		DynamicMetadata: metadata(d),
	}
}

// overwrite renders headers so that every Envoy version replaces a header
// the client sent under the same name: older versions read Append (false),
// newer ones AppendAction, whose default would add a second header next to
// a spoofed one.
func overwrite(hs []authz.Header, extra ...authz.Header) []*corev3.HeaderValueOption {
	n := len(hs) + len(extra)
	if n == 0 {
		return nil
	}
	// Three allocations for any number of headers: the messages live in
	// two backing arrays (they are never copied, only pointed to).
	opts := make([]corev3.HeaderValueOption, n)
	vals := make([]corev3.HeaderValue, n)
	out := make([]*corev3.HeaderValueOption, n)
	i := 0
	for _, list := range [2][]authz.Header{hs, extra} {
		for _, h := range list {
			vals[i].Key, vals[i].Value = h.Name, h.Value
			opts[i].Header = &vals[i]
			//lint:ignore SA1019 Envoy versions before append_action read only append; both are set so an injected header overwrites on every version (DESIGN.md)
			opts[i].Append = appendFalse
			opts[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			out[i] = &opts[i]
			i++
		}
	}
	return out
}

// appendFalse is shared by every header option: messages are only read
// once built, so one value serves them all.
var appendFalse = wrapperspb.Bool(false)

// metadata is emitted by Envoy under envoy.filters.http.ext_authz, for
// access logs and rate-limit descriptors.
func metadata(d authz.Decision) *structpb.Struct {
	m := metadataOf(&d)
	// Every value lives in one block: three allocations per Check (block,
	// map, struct) rather than two per field.
	b := &metaBlock{}
	fields := make(map[string]*structpb.Value, maxMetaFields+1)
	for i := range m.n {
		b.strs[i].StringValue = m.value(i)
		b.vals[i].Kind = &b.strs[i]
		fields[m.names[i]] = &b.vals[i]
	}
	b.num.NumberValue = m.cost
	b.vals[m.n].Kind = &b.num
	fields[metaCost] = &b.vals[m.n]
	return &structpb.Struct{Fields: fields}
}

// metadataOf lists d's metadata fields.
func metadataOf(d *authz.Decision) metaFields {
	var m metaFields
	m.add("decision", string(d.Reason))
	m.idAt, m.id = m.n, d.ID
	m.add("decision_id", "")
	m.add("route", d.Route)
	if d.WouldDeny != "" {
		m.add("would_deny", string(d.WouldDeny))
	}
	// Envoy's rate limit filter can build descriptors from these
	// (metadata actions on envoy.filters.http.ext_authz), so an operator
	// running envoyproxy/ratelimit can key global limits on them.
	if c := d.Credential; c != nil {
		m.add("tenant_id", c.TenantID)
		m.add("api_key_id", c.ID)
		m.add("environment", c.Environment)
		m.add("rate_limit_tier", c.Tier)
		if c.OrgID != "" {
			m.add("org_id", c.OrgID)
		}
	}
	m.cost = float64(max(d.Cost, 1))
	return m
}

// metaCost names the metadata's one number field, the request's cost.
const metaCost = "cost"

// maxMetaFields is how many string fields metadata sets at most.
const maxMetaFields = 9

// metaBlock holds every value of one metadata struct in one allocation.
type metaBlock struct {
	strs [maxMetaFields]structpb.Value_StringValue
	vals [maxMetaFields + 1]structpb.Value
	num  structpb.Value_NumberValue
}

// grpcCode maps a denial's HTTP status to the google.rpc code Envoy logs.
// Any non-OK code makes Envoy answer with denied_response; the
// introspection reply (HTTP 200) is one such local reply.
func grpcCode(status int) code.Code {
	switch status {
	case 400:
		return code.Code_INVALID_ARGUMENT
	case 401:
		return code.Code_UNAUTHENTICATED
	case 403:
		return code.Code_PERMISSION_DENIED
	case 429:
		return code.Code_RESOURCE_EXHAUSTED
	case 503:
		return code.Code_UNAVAILABLE
	}
	return code.Code_PERMISSION_DENIED
}
