package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestHealthCommand: the container HEALTHCHECK sees SERVING while the
// server runs, and fails once it has stopped.
func TestHealthCommand(t *testing.T) {
	s := startServer(t, t.TempDir())
	var out bytes.Buffer
	if err := run(context.Background(), []string{"health", "--addr", s.grpcAddr}, &out, &out, func(string) string { return "" }); err != nil {
		t.Fatalf("health of a running server: %v (%s)", err, out.String())
	}
	if strings.TrimSpace(out.String()) != "SERVING" {
		t.Fatalf("health printed %q", out.String())
	}
	s.stop(t)
	if err := run(context.Background(), []string{"health", "--addr", s.grpcAddr, "--timeout", "500ms"}, &out, &out, func(string) string { return "" }); err == nil {
		t.Fatal("health of a stopped server succeeded")
	}
}

func TestProbeTarget(t *testing.T) {
	for in, want := range map[string]string{
		"":             "127.0.0.1:9001",
		"0.0.0.0:9001": "127.0.0.1:9001",
		"[::]:9001":    "127.0.0.1:9001",
		":9001":        "127.0.0.1:9001",
		"10.0.0.5:77":  "10.0.0.5:77",
	} {
		if got, err := probeTarget(in); err != nil || got != want {
			t.Errorf("probeTarget(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
