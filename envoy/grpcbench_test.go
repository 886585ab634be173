package envoy_test

import (
	"bytes"
	"context"
	"net"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate/envoy"
)

// allowAll is the floor: an ext_authz server that allows everything with
// the smallest answer, on grpc-go's defaults.
type allowAll struct {
	authv3.UnimplementedAuthorizationServer
}

func (allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_OK)}}, nil
}

// BenchmarkGRPCCheck is a cached allow over real gRPC on loopback, client
// and server in this process, beside the floor in the same run: compare
// the two sub-benchmarks' ns/op (a ratio, not a figure) and allocs/op.
// bench/run.sh measures the same with the client and the server on their
// own cores. Run: go test -run='^$' -bench=GRPCCheck -benchmem ./envoy
func BenchmarkGRPCCheck(b *testing.B) {
	e, k := benchEngine(b)
	req := checkRequest(map[string]string{"x-api-key": k.Secret.Reveal(), "accept": "*/*", "user-agent": "bench"})
	wire, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	floor := grpc.NewServer()
	authv3.RegisterAuthorizationServer(floor, allowAll{})
	keygate, _ := envoy.NewGRPCServer(envoy.NewServer(e, nil))
	for _, c := range []struct {
		name string
		srv  *grpc.Server
	}{{"floor", floor}, {"keygate", keygate}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go c.srv.Serve(ln)
		defer c.srv.Stop()
		// The client sends the request marshalled once and does not
		// decode answers (see bench/lean): both servers cost it the same.
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		b.Run(c.name, func(b *testing.B) {
			b.SetParallelism(8)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var ok bool
				for pb.Next() {
					if err := conn.Invoke(context.Background(), authv3.Authorization_Check_FullMethodName, wire, &ok); err != nil || !ok {
						b.Errorf("Check = %v, allowed %v", err, ok)
						return
					}
				}
			})
		})
	}
}

// rawCodec sends pre-marshalled bytes and reads only whether an answer
// allows: it starts with an empty google.rpc.Status (code OK).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }

func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*bool) = bytes.HasPrefix(data, []byte{0x0a, 0x00})
	return nil
}

func (rawCodec) Name() string { return "proto" }
