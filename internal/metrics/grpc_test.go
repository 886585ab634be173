package metrics

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestGRPCMetrics runs a real gRPC server on loopback with the
// interceptors: unary calls are counted by code and timed, a stream's
// messages are counted, and every method of the server is scraped at zero
// after InitGRPC, before any call.
func TestGRPCMetrics(t *testing.T) {
	m := New()
	g := grpc.NewServer(m.GRPCServerOptions()...)
	h := health.NewServer()
	h.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, h)
	m.InitGRPC(g)
	const svc = "grpc.health.v1.Health"
	if n := value(t, m.grpc.handled.WithLabelValues("unary", svc, "Check", "NotFound")); n != 0 {
		t.Fatalf("handled NotFound before any call = %v", n)
	}
	if n := count(m.grpc.handled); n < 2*numCodes {
		t.Fatalf("after InitGRPC: %d handled series, want every code of each method (at least %d)", n, 2*numCodes)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "up"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown service: %v", err)
	}
	w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "up"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"started Check", value(t, m.grpc.started.WithLabelValues("unary", svc, "Check")), 4},
		{"handled Check OK", value(t, m.grpc.handled.WithLabelValues("unary", svc, "Check", "OK")), 3},
		{"handled Check NotFound", value(t, m.grpc.handled.WithLabelValues("unary", svc, "Check", "NotFound")), 1},
		{"received Check", value(t, m.grpc.received.WithLabelValues("unary", svc, "Check")), 4},
		{"started Watch", value(t, m.grpc.started.WithLabelValues("server_stream", svc, "Watch")), 1},
		{"sent Watch", value(t, m.grpc.sent.WithLabelValues("server_stream", svc, "Watch")), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := count(m.grpc.seconds); n < 2 {
		t.Errorf("no handling time series")
	}
}

func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

func count(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 1024)
	c.Collect(ch)
	close(ch)
	return len(ch)
}
