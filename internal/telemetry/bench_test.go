package telemetry

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/keygate/keygate/authz"
)

// benchCheck measures one cached allow through d: the engine alone, or
// traced with every span kept (exported to a no-op exporter through the
// batch processor serve uses) or none. Run:
// go test -run=^$ -bench=Check -benchmem ./internal/telemetry
func benchCheck(b *testing.B, tr *Tracing, traceparent string) {
	f := newFixture(b, tr)
	d := tr.Decider(f.engine)
	h := map[string]string{"x-api-key": f.raw}
	if traceparent != "" {
		h["traceparent"] = traceparent
	}
	req := &authz.Request{Method: "GET", Path: "/v1/things", Peer: "10.0.0.1", Headers: h}
	ctx := context.Background()
	for range 1000 { // warm the cache (ristretto applies Sets asynchronously)
		d.Decide(ctx, req)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if dec, err := d.Decide(ctx, req); err != nil || !dec.Allow() {
			b.Fatalf("%+v, %v", dec, err)
		}
	}
	b.StopTimer()
	tr.Shutdown(ctx)
}

func benchTracing(sampler sdktrace.Sampler) *Tracing {
	return newTracing(sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(tracetest.NewNoopExporter()),
		sdktrace.WithSampler(sampler)))
}

func BenchmarkCheckUntraced(b *testing.B) { benchCheck(b, nil, "") }

func BenchmarkCheckTracedSampled(b *testing.B) {
	benchCheck(b, benchTracing(sdktrace.AlwaysSample()), "")
}

// A caller's traceparent to join: extraction included.
func BenchmarkCheckTracedSampledWithParent(b *testing.B) {
	benchCheck(b, benchTracing(sdktrace.ParentBased(sdktrace.AlwaysSample())), callerParent)
}

func BenchmarkCheckTracedNotSampled(b *testing.B) {
	benchCheck(b, benchTracing(sdktrace.NeverSample()), "")
}
