package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keygate/keygate/internal/config"
)

// runHealth probes the local server's gRPC health service and exits 0 when
// it is SERVING: the container HEALTHCHECK of an image without a shell.
func runHealth(ctx context.Context, args []string, c *cli) error {
	fs := flag.NewFlagSet("keygate health", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	addr := fs.String("addr", c.getenv("KEYGATE_GRPC_LISTEN"), "gRPC `address` to probe (env KEYGATE_GRPC_LISTEN; default 127.0.0.1:9001)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	target, err := probeTarget(*addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("health %s: %w", target, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health %s: %s", target, resp.GetStatus())
	}
	fmt.Fprintln(c.stdout, "SERVING")
	return nil
}

// probeTarget turns a listen address into one to dial: a server listening
// on every interface (0.0.0.0, ::, or no host) is probed on loopback.
func probeTarget(listen string) (string, error) {
	if listen == "" {
		listen = config.DefaultGRPCListen
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("health: address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}
