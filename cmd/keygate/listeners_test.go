package main

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/internal/metrics"
)

// freeAddr returns a loopback address nobody listens on (the kernel's
// choice, released at once).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestServeListenersClosedOnFailure: when a step of starting the listeners
// fails, every listener opened before it is closed, so that serve leaves
// no port bound behind its error.
func TestServeListenersClosedOnFailure(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name    string
		metrics func(t *testing.T) *metrics.Metrics
		busy    bool // the HTTP address is taken
		// busyMetrics: the metrics listener's address is taken, the last
		// one opened.
		busyMetrics bool
		want        string
	}{
		{name: "listen", busy: true, want: "listen http"},
		{name: "listen metrics", busyMetrics: true, want: "listen metrics"},
		{name: "metrics", want: "metrics", metrics: func(t *testing.T) *metrics.Metrics {
			// The admin listener's metrics are taken: registering them again
			// fails once the gRPC and admin listeners are open.
			m := metrics.New()
			if err := m.RegisterListener("admin", nil); err != nil {
				t.Fatal(err)
			}
			return m
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Load("")
			if err != nil {
				t.Fatal(err)
			}
			cfg.Listen.GRPC, cfg.Listen.Admin, cfg.Listen.HTTP, cfg.Listen.Metrics = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
			var taken []string
			if tc.busy {
				taken = append(taken, cfg.Listen.HTTP)
			}
			if tc.busyMetrics {
				taken = append(taken, cfg.Listen.Metrics)
			}
			for _, addr := range taken {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
			}
			m := metrics.New()
			if tc.metrics != nil {
				m = tc.metrics(t)
			}
			g, err := startListeners(cfg, listenerHandlers{}, m, log)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				if g != nil {
					g.stop()
				}
				t.Fatalf("startListeners: %v, want an error naming %q", err, tc.want)
			}
			closed := []string{cfg.Listen.GRPC, cfg.Listen.Admin}
			if tc.busyMetrics {
				closed = append(closed, cfg.Listen.HTTP)
			}
			for _, addr := range closed {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Errorf("%s is still bound after the failed start: %v", addr, err)
					continue
				}
				ln.Close()
			}
		})
	}
}
