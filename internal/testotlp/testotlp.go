// Package testotlp is an in-process OTLP trace receiver for tests: a real
// gRPC TraceService and a real HTTP POST /v1/traces endpoint on loopback,
// collecting every span exported to them, so that tests check what an
// OpenTelemetry collector would receive.
package testotlp

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Span is one received span with the resource it came with.
type Span struct {
	*tracepb.Span
	Resource *resourcepb.Resource
}

// Attr returns the string form of the span attribute key, and whether it
// is there.
func (s Span) Attr(key string) (string, bool) {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return valueString(kv.Value), true
		}
	}
	return "", false
}

// Receiver collects the spans exported to it over either protocol.
type Receiver struct {
	collectorpb.UnimplementedTraceServiceServer

	// GRPCAddr is host:port of the gRPC TraceService; HTTPURL is the base
	// URL ("http://host:port") of the HTTP endpoint, which serves /v1/traces.
	GRPCAddr string
	HTTPURL  string

	mu      sync.Mutex
	spans   []Span
	changed chan struct{} // closed and replaced whenever spans arrive
}

// Start runs a receiver on 127.0.0.1 until the test ends.
func Start(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{changed: make(chan struct{})}

	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(gs, r)
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)
	r.GRPCAddr = gl.Addr().String()

	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.serveHTTP)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })
	r.HTTPURL = "http://" + hl.Addr().String()
	return r
}

// Export is the gRPC TraceService's one method.
func (r *Receiver) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.add(req)
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "want application/x-protobuf, not "+ct, http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 16<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(&msg)
	out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func (r *Receiver) add(req *collectorpb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, Span{Span: s, Resource: rs.Resource})
			}
		}
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// Spans returns what has arrived so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// WaitFor waits until ok holds for the spans received, at most timeout,
// and returns them; the test fails if it never does.
func (r *Receiver) WaitFor(t testing.TB, timeout time.Duration, what string, ok func([]Span) bool) []Span {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		spans, changed := append([]Span(nil), r.spans...), r.changed
		r.mu.Unlock()
		if ok(spans) {
			return spans
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no %s within %v; received %d spans: %v", what, timeout, len(spans), Names(spans))
			return nil
		}
	}
}

// Names lists the spans' names, for messages.
func Names(spans []Span) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name
	}
	return out
}

// Strings returns every string a span carries where a secret could leak:
// its name, status message, attribute keys and values, event names and
// attributes, link attributes, and its resource's attributes.
func (s Span) Strings() []string {
	out := []string{s.Name, s.TraceState}
	if s.Status != nil {
		out = append(out, s.Status.Message)
	}
	attrs := func(kvs []*commonpb.KeyValue) {
		for _, kv := range kvs {
			out = append(out, kv.Key, valueString(kv.Value))
		}
	}
	attrs(s.Attributes)
	for _, e := range s.Events {
		out = append(out, e.Name)
		attrs(e.Attributes)
	}
	for _, l := range s.Links {
		out = append(out, l.TraceState)
		attrs(l.Attributes)
	}
	if s.Resource != nil {
		attrs(s.Resource.Attributes)
	}
	return out
}

// valueString renders an attribute value, arrays and maps included, so
// that a scan for a secret sees all of it.
func valueString(v *commonpb.AnyValue) string {
	if v == nil {
		return ""
	}
	switch x := v.Value.(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BytesValue:
		return string(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		s := ""
		for _, e := range x.ArrayValue.GetValues() {
			s += valueString(e) + "\n"
		}
		return s
	case *commonpb.AnyValue_KvlistValue:
		s := ""
		for _, kv := range x.KvlistValue.GetValues() {
			s += kv.Key + "=" + valueString(kv.Value) + "\n"
		}
		return s
	}
	// Numbers and booleans: their text form.
	return protoText(v)
}

func protoText(v *commonpb.AnyValue) string {
	switch x := v.Value.(type) {
	case *commonpb.AnyValue_BoolValue:
		if x.BoolValue {
			return "true"
		}
		return "false"
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	}
	return ""
}
