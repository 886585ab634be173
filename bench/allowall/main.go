// Command allowall is the cost floor for Keygate's benchmark: an Envoy
// ext_authz v3 gRPC server that answers every Check with OK and nothing
// else. It is built from the main module, so it runs the same grpc-go and
// go-control-plane versions as Keygate; what Keygate costs beyond it is
// Keygate's own work (translating the request, deciding, rendering the
// identity headers), not gRPC's or the protocol's.
//
// It prints "listening ADDR" on stdout once it accepts connections, so a
// script can start it on port 0 and read the port back.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type allowAll struct {
	authv3.UnimplementedAuthorizationServer
	shaped bool
}

// Check allows. The response is built per call, as any real server's is,
// so that the floor is not flattered by a shared, pre-sized message.
//
// With -shaped the answer has the shape of Keygate's allow (eight identity
// headers set to overwrite, the credential and unset headers removed, five
// rate-limit headers for the client, ten metadata fields), with fixed
// values and no decision: the floor then pays the same encoding, wire and
// (on the load client) decoding costs, and the difference is Keygate's
// deciding alone. On two cores the load client's decoding of the larger
// answer is itself a bottleneck, which the bare floor does not pay.
func (a allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_OK)}}
	if a.shaped {
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:              options(identity),
			HeadersToRemove:      []string{"x-api-key", "x-org-id"},
			ResponseHeadersToAdd: options(rateHeaders),
		}}
		fields := map[string]*structpb.Value{"cost": structpb.NewNumberValue(1)}
		for _, f := range metadataFields {
			fields[f[0]] = structpb.NewStringValue(f[1])
		}
		resp.DynamicMetadata = &structpb.Struct{Fields: fields}
	}
	return resp, nil
}

var (
	identity = [][2]string{
		{"x-tenant-id", "01a21098-a8ed-742d-b74f-3e2d2e1fb497"},
		{"x-user-id", "user-1"},
		{"x-api-key-id", "01a21098-a8f8-78a4-aa5e-b25a07bc5df0"},
		{"x-api-key-name", "bench"},
		{"x-api-key-environment", "live"},
		{"x-rate-limit-tier", "standard"},
		{"x-scopes", "vault:read,chat:write"},
	}
	rateHeaders = [][2]string{
		{"ratelimit-policy", `"standard";q=100000000;w=1`},
		{"ratelimit", `"standard";r=99999999;t=1`},
		{"x-ratelimit-limit", "100000000"},
		{"x-ratelimit-remaining", "99999999"},
		{"x-ratelimit-reset", "1795608601"},
	}
	metadataFields = [][2]string{
		{"decision", "ok"}, {"decision_id", "9f3a2b1c4d5e6f70"}, {"route", "(unmatched)"},
		{"tenant_id", "01a21098-a8ed-742d-b74f-3e2d2e1fb497"}, {"api_key_id", "01a21098-a8f8-78a4-aa5e-b25a07bc5df0"},
		{"environment", "live"}, {"rate_limit_tier", "standard"},
	}
)

func options(hs [][2]string) []*corev3.HeaderValueOption {
	out := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		out[i] = &corev3.HeaderValueOption{
			Header: &corev3.HeaderValue{Key: h[0], Value: h[1]},
			//lint:ignore SA1019 set like Keygate's own answers (envoy/server.go), so the baseline costs Envoy the same
			Append:       wrapperspb.Bool(false),
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}
	}
	return out
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "gRPC `address` to listen on")
	shaped := flag.Bool("shaped", false, "answer with a response of the shape of Keygate's allow")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("allowall: %v", err)
	}
	// The same server options as Keygate's envoy.NewGRPCServer (none), so
	// that both pay gRPC's default costs.
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, allowAll{shaped: *shaped})
	// Reflection lets ghz find the CheckRequest type the same way it does
	// for Keygate, which registers reflection too.
	reflection.Register(g)
	fmt.Printf("listening %s\n", ln.Addr())
	// Stdout may be a pipe or file the script is waiting on.
	_ = os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		g.Stop()
	}()
	if err := g.Serve(ln); err != nil {
		log.Fatalf("allowall: %v", err)
	}
}
