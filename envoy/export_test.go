package envoy

import (
	"context"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// CheckWire runs the gRPC server's Check (the encoded answer) for
// benchmarks and returns the answer's length, its buffer back to the pool.
func CheckWire(s *Server, ctx context.Context, req *authv3.CheckRequest) int {
	r := requestOf(req)
	b := s.checkWire(ctx, &r)
	n := b.Len()
	b.Free()
	return n
}
