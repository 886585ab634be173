package envoy

import (
	"context"
	"fmt"
	"runtime"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/reflection"
)

// ServiceName is the gRPC service Envoy calls, also the name its health is
// reported under.
const ServiceName = "envoy.service.auth.v3.Authorization"

// NewGRPCServer returns a gRPC server serving a, grpc.health.v1 (overall and
// for ServiceName, both SERVING) and server reflection, so that grpcurl and
// Kubernetes gRPC probes work without extra files. Call Shutdown on the
// health server before stopping, so that probes turn NOT_SERVING while
// in-flight Checks drain.
//
// Check answers are written straight to the wire (see wire.go) through a
// codec that passes such answers through and hands every other message to
// gRPC's proto codec.
func NewGRPCServer(a *Server, opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	g := grpc.NewServer(append([]grpc.ServerOption{
		grpc.ForceServerCodecV2(wireCodec{encoding.GetCodecV2(proto.Name)}),
		// Checks run on goroutines kept for them, whose stacks have
		// already grown to what a Check needs: a goroutine per stream
		// (grpc-go's default) grows a fresh stack for every Check, which
		// cost as much as deciding. A stream that finds every worker busy
		// (Checks waiting on the store) still gets its own goroutine. An
		// idle worker costs a parked goroutine and its stack (tens of KiB).
		grpc.NumStreamWorkers(uint32(max(64, 16*runtime.GOMAXPROCS(0)))),
	}, opts...)...)
	g.RegisterService(&checkService, a)
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, h)
	reflection.Register(g)
	return g, h
}

// checkService is Authorization_ServiceDesc with a Check handler whose
// answer is already encoded: the same service and method names and the
// same proto file, so Envoy, grpcurl and reflection see no difference.
var checkService = grpc.ServiceDesc{
	ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
	HandlerType: (*authv3.AuthorizationServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: checkHandler}},
	Metadata:    authv3.Authorization_ServiceDesc.Metadata,
}

func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wireRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	s := srv.(*Server)
	if interceptor == nil {
		return s.checkWire(ctx, &in.Request), nil
	}
	return interceptor(ctx, in, &s.info, s.intercepted)
}

// interceptedCheck is the handler the interceptors call on (see
// Server.intercepted).
func (s *Server) interceptedCheck(ctx context.Context, req any) (any, error) {
	r, ok := req.(*wireRequest)
	if !ok {
		return nil, fmt.Errorf("check: an interceptor replaced the request with %T", req)
	}
	return s.checkWire(ctx, &r.Request), nil
}

// wireCodec is gRPC's proto codec, except for a Check: its request is read
// straight from the wire into a wireRequest (see wirerequest.go), and its
// answer, already encoded (a mem.Buffer from checkWire), is sent as it is.
type wireCodec struct{ encoding.CodecV2 }

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(mem.Buffer); ok {
		return mem.BufferSlice{b}, nil
	}
	return c.CodecV2.Marshal(v)
}

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if w, ok := v.(*wireRequest); ok {
		// The copy outlives data, which gRPC reuses once this returns.
		return decodeRequest(data.Materialize(), w)
	}
	return c.CodecV2.Unmarshal(data, v)
}
