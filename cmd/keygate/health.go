package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keygate/keygate/internal/config"
)

// newHealthCmd probes the local server's gRPC health service and exits 0
// when it is SERVING: the container HEALTHCHECK of an image without a shell.
func newHealthCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health [--addr HOST:PORT]",
		Short: "probe the local gRPC health (container HEALTHCHECK)",
		Args:  usageArgs(cobra.NoArgs),
	}
	addr := cmd.Flags().String("addr", c.getenv("KEYGATE_GRPC_LISTEN"), "gRPC `address` to probe (env KEYGATE_GRPC_LISTEN; default 127.0.0.1:9001)")
	timeout := cmd.Flags().Duration("timeout", 3*time.Second, "give up after this long")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return runHealth(cmd.Context(), *addr, *timeout, c) }
	return cmd
}

func runHealth(ctx context.Context, addr string, timeout time.Duration, c *cli) error {
	target, err := probeTarget(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
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
