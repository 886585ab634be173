package metrics

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// grpcMetrics counts and times every gRPC call by service, method and code
// under the names and labels of go-grpc-middleware's Prometheus provider
// (grpc_server_started_total, grpc_server_handled_total,
// grpc_server_msg_received_total, grpc_server_msg_sent_total,
// grpc_server_handling_seconds), which dashboards for gRPC servers expect.
// Each method's series are resolved once, when the server's methods are
// initialized (InitGRPC): a Check pays no label lookup, which cost it as
// much as writing its answer.
type grpcMetrics struct {
	started, handled, received, sent *prometheus.CounterVec
	seconds                          *prometheus.HistogramVec
	// methods maps a full method name ("/pkg.Service/Method") to its
	// series; replaced whole, never changed, so calls read it unlocked.
	methods atomic.Pointer[map[string]*methodSeries]
	mu      sync.Mutex // serializes replacing methods
}

// methodSeries are one method's series.
type methodSeries struct {
	started, received, sent prometheus.Counter
	seconds                 prometheus.Observer
	handled                 [numCodes]prometheus.Counter
}

// numCodes is the number of gRPC status codes, OK (0) to Unauthenticated (16).
const numCodes = int(codes.Unauthenticated) + 1

func newGRPCMetrics() *grpcMetrics {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	g := &grpcMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total", Help: "Total number of RPCs started on the server.",
		}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total", Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, append(labels, "grpc_code")),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_received_total", Help: "Total number of RPC stream messages received on the server.",
		}, labels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_sent_total", Help: "Total number of gRPC stream messages sent by the server.",
		}, labels),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			Buckets: checkBuckets,
		}, labels),
	}
	g.methods.Store(&map[string]*methodSeries{})
	return g
}

func (g *grpcMetrics) Describe(ch chan<- *prometheus.Desc) {
	g.started.Describe(ch)
	g.handled.Describe(ch)
	g.received.Describe(ch)
	g.sent.Describe(ch)
	g.seconds.Describe(ch)
}

func (g *grpcMetrics) Collect(ch chan<- prometheus.Metric) {
	g.started.Collect(ch)
	g.handled.Collect(ch)
	g.received.Collect(ch)
	g.sent.Collect(ch)
	g.seconds.Collect(ch)
}

// grpcType is the grpc_type label of a method.
func grpcType(clientStream, serverStream bool) string {
	switch {
	case clientStream && serverStream:
		return "bidi_stream"
	case clientStream:
		return "client_stream"
	case serverStream:
		return "server_stream"
	}
	return "unary"
}

// initialize resolves the series of every method of s, each code of
// grpc_server_handled_total included, so they are scraped at zero before
// the first call.
func (g *grpcMetrics) initialize(s reflection.ServiceInfoProvider) {
	for service, info := range s.GetServiceInfo() {
		for _, m := range info.Methods {
			g.series("/"+service+"/"+m.Name, grpcType(m.IsClientStream, m.IsServerStream))
		}
	}
}

// series returns the series of fullMethod, resolving them on first use.
func (g *grpcMetrics) series(fullMethod, typ string) *methodSeries {
	if s, ok := (*g.methods.Load())[fullMethod]; ok {
		return s
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old := *g.methods.Load()
	if s, ok := old[fullMethod]; ok {
		return s
	}
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	s := &methodSeries{
		started:  g.started.WithLabelValues(typ, service, method),
		received: g.received.WithLabelValues(typ, service, method),
		sent:     g.sent.WithLabelValues(typ, service, method),
		seconds:  g.seconds.WithLabelValues(typ, service, method),
	}
	for c := range s.handled {
		s.handled[c] = g.handled.WithLabelValues(typ, service, method, codes.Code(c).String())
	}
	next := make(map[string]*methodSeries, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[fullMethod] = s
	g.methods.Store(&next)
	return s
}

func (s *methodSeries) done(err error, start time.Time) {
	c := status.Code(err)
	if int(c) >= 0 && int(c) < numCodes {
		s.handled[c].Inc()
	} else {
		s.handled[codes.Unknown].Inc()
	}
	s.seconds.Observe(time.Since(start).Seconds())
}

func (g *grpcMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	s := g.series(info.FullMethod, "unary")
	s.started.Inc()
	s.received.Inc()
	resp, err := handler(ctx, req)
	s.sent.Inc()
	s.done(err, start)
	return resp, err
}

func (g *grpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	s := g.series(info.FullMethod, grpcType(info.IsClientStream, info.IsServerStream))
	s.started.Inc()
	err := handler(srv, &countedStream{ServerStream: ss, s: s})
	s.done(err, start)
	return err
}

// countedStream counts the messages of a stream.
type countedStream struct {
	grpc.ServerStream
	s *methodSeries
}

func (c *countedStream) SendMsg(m any) error {
	err := c.ServerStream.SendMsg(m)
	if err == nil {
		c.s.sent.Inc()
	}
	return err
}

func (c *countedStream) RecvMsg(m any) error {
	err := c.ServerStream.RecvMsg(m)
	if err == nil {
		c.s.received.Inc()
	}
	return err
}
