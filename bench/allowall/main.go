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

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
)

type allowAll struct {
	authv3.UnimplementedAuthorizationServer
}

// Check allows. The response is built per call, as any real server's is,
// so that the floor is not flattered by a shared, pre-sized message.
func (allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_OK)}}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "gRPC `address` to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("allowall: %v", err)
	}
	// The same server options as Keygate's envoy.NewGRPCServer (none), so
	// that both pay gRPC's default costs.
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, allowAll{})
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
