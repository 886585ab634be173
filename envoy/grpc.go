package envoy

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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
func NewGRPCServer(a *Server, opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	g := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(g, a)
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, h)
	reflection.Register(g)
	return g, h
}
