// Package telemetry owns Keygate's OpenTelemetry tracing: turning it on
// from the config file's tracing section or the standard OTEL_* environment,
// the OTLP exporter (gRPC or HTTP), and the decorators that put spans around
// a Check, a store lookup and an admin write.
//
// Tracing is off unless asked for. Off, Start returns a nil *Tracing, whose
// methods hand back what they are given unwrapped, so the Check path costs
// exactly what it does without this package.
//
// Spans never carry a key, its hash, a credential header or an admin token:
// a Check span names the key by its id and tenant, an admin span its
// principal by token id, and paths are recorded without their query.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Protocols of the OTLP exporter.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// DefaultServiceName is service.name when neither the file nor
// OTEL_SERVICE_NAME sets one.
const DefaultServiceName = "keygate"

// Settings are the config file's tracing section. A zero field leaves the
// choice to the OTEL_* environment, then to the OTel default: the file's
// explicit values win over the environment, as options passed to an OTel
// SDK win over its environment.
type Settings struct {
	// Enabled turns tracing on. False: on only if OTEL_TRACES_EXPORTER
	// lists otlp. OTEL_SDK_DISABLED=true turns it off either way.
	Enabled bool
	// Endpoint is the URL of the collector's OTLP receiver; http:// sends
	// in clear text, https:// over TLS. With ProtocolHTTP a URL without a
	// path gets /v1/traces. Empty: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
	// OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4317 (gRPC) or
	// localhost:4318 (HTTP).
	Endpoint string
	// Protocol is ProtocolGRPC or ProtocolHTTP. Empty:
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL,
	// else ProtocolHTTP (the OTel default).
	Protocol string
	// SampleRatio, when set, samples that share (0 to 1) of the traces
	// that start at Keygate; a Check whose traceparent says sampled or not
	// follows its caller. Nil: OTEL_TRACES_SAMPLER and
	// OTEL_TRACES_SAMPLER_ARG, else parentbased_always_on.
	SampleRatio *float64
	// ServiceName is the resource's service.name. Empty:
	// OTEL_SERVICE_NAME, else DefaultServiceName.
	ServiceName string
	// ServiceVersion is the resource's service.version (the build).
	ServiceVersion string
}

// Validate reports what is wrong with s on its own, whatever the
// environment says, each problem naming its field.
func (s Settings) Validate() error {
	var errs []error
	if err := ValidProtocol(s.Protocol); err != nil {
		errs = append(errs, fmt.Errorf("protocol: %w", err))
	}
	if err := ValidEndpoint(s.Endpoint); err != nil {
		errs = append(errs, fmt.Errorf("endpoint: %w", err))
	}
	if err := ValidSampleRatio(s.SampleRatio); err != nil {
		errs = append(errs, fmt.Errorf("sample_ratio: %w", err))
	}
	return errors.Join(errs...)
}

// ValidProtocol checks a protocol setting; empty is valid (the
// environment's).
func ValidProtocol(p string) error {
	if p != "" && p != ProtocolGRPC && p != ProtocolHTTP {
		return fmt.Errorf("%q: want %s or %s", p, ProtocolGRPC, ProtocolHTTP)
	}
	return nil
}

// ValidEndpoint checks an endpoint setting: an http or https URL with a
// host; empty is valid (the environment's).
func ValidEndpoint(s string) error {
	if s == "" {
		return nil
	}
	_, err := endpointURL(s)
	return err
}

// ValidSampleRatio checks a sample ratio: nil (the environment's), or
// from 0 to 1.
func ValidSampleRatio(r *float64) error {
	if r != nil && !(*r >= 0 && *r <= 1) {
		return fmt.Errorf("%v is not between 0 and 1", *r)
	}
	return nil
}

func endpointURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%q: want a URL such as http://otel-collector:4317", s)
	}
	return u, nil
}

// Tracing is tracing turned on: the tracer provider and its exporter. A nil
// *Tracing is tracing off; its methods then wrap nothing.
type Tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
}

// Start turns tracing on if s or the environment asks for it, and returns
// nil, nil if they do not. Exporting is asynchronous (a batch span
// processor): a collector out of reach costs Checks nothing, and its errors
// are logged at Warn. Call Shutdown to flush what is left.
func Start(ctx context.Context, s Settings, log *slog.Logger) (*Tracing, error) {
	on, why := enabled(s, os.Getenv)
	if !on {
		if why != "" {
			log.Warn("tracing off", "reason", why)
		}
		return nil, nil
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	protocol := protocolOf(s, os.Getenv)
	if err := ValidProtocol(protocol); err != nil {
		return nil, fmt.Errorf("tracing protocol (OTEL_EXPORTER_OTLP_PROTOCOL): %w", err)
	}
	exp, err := newExporter(ctx, protocol, s.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("tracing exporter: %w", err)
	}
	res, err := newResource(ctx, s)
	switch {
	case errors.Is(err, resource.ErrPartialResource):
		// A malformed OTEL_RESOURCE_ATTRIBUTES loses those attributes,
		// not the traces.
		log.Warn("tracing resource", "error", err)
	case err != nil:
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	// The error handler is global in OTel: export failures go to the log,
	// which names the endpoint and the cause, never a span's contents.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing export", "error", err)
	}))
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if s.SampleRatio != nil {
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*s.SampleRatio))))
	}
	t := newTracing(sdktrace.NewTracerProvider(opts...))
	log.Info("tracing on", "protocol", protocol, "service", serviceName(s, os.Getenv))
	return t, nil
}

// newTracing wraps a provider; tests give one of their own.
func newTracing(tp *sdktrace.TracerProvider) *Tracing {
	return &Tracing{
		provider: tp,
		tracer:   tp.Tracer("github.com/keygate/keygate"),
		prop:     propagation.TraceContext{},
	}
}

// Shutdown exports the spans not yet sent and stops the exporter, within
// ctx. Nil (tracing off): nothing to do.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// enabled says whether tracing is on and, when the environment asks for
// something this package does not do, why it stays off.
func enabled(s Settings, getenv func(string) string) (on bool, why string) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		if s.Enabled {
			return false, "OTEL_SDK_DISABLED=true"
		}
		return false, ""
	}
	if s.Enabled {
		return true, ""
	}
	exporters := getenv("OTEL_TRACES_EXPORTER")
	for e := range strings.SplitSeq(exporters, ",") {
		switch strings.TrimSpace(e) {
		case "otlp":
			return true, ""
		case "", "none":
		default:
			why = "OTEL_TRACES_EXPORTER=" + exporters + ": only otlp is supported"
		}
	}
	return false, why
}

// protocolOf is the exporter's protocol: the file's, else the
// environment's, else the OTel default.
func protocolOf(s Settings, getenv func(string) string) string {
	for _, p := range []string{s.Protocol, getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL")} {
		if p = strings.TrimSpace(p); p != "" {
			return p
		}
	}
	return ProtocolHTTP
}

func serviceName(s Settings, getenv func(string) string) string {
	for _, n := range []string{s.ServiceName, getenv("OTEL_SERVICE_NAME")} {
		if n = strings.TrimSpace(n); n != "" {
			return n
		}
	}
	return DefaultServiceName
}

// newExporter builds the OTLP exporter. It reads the OTEL_EXPORTER_OTLP_*
// environment itself (endpoint, headers, certificate, timeout,
// compression); an endpoint from the file overrides the environment's.
// Neither exporter connects here: a collector down at start is retried
// at export.
func newExporter(ctx context.Context, protocol, endpoint string) (sdktrace.SpanExporter, error) {
	switch protocol {
	case ProtocolGRPC:
		var opts []otlptracegrpc.Option
		if endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(endpoint))
		}
		return otlptracegrpc.New(ctx, opts...)
	default:
		var opts []otlptracehttp.Option
		if endpoint != "" {
			u, err := endpointURL(endpoint)
			if err != nil {
				return nil, err
			}
			// As OTEL_EXPORTER_OTLP_ENDPOINT does: a base URL gets the
			// traces path.
			if u.Path == "" || u.Path == "/" {
				u.Path = "/v1/traces"
			}
			opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
		}
		return otlptracehttp.New(ctx, opts...)
	}
}

// newResource describes this process: service.name and service.version,
// then OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, then the file's
// service name, each overriding the one before.
func newResource(ctx context.Context, s Settings) (*resource.Resource, error) {
	base := []attribute.KeyValue{attribute.String("service.name", DefaultServiceName)}
	if s.ServiceVersion != "" {
		base = append(base, attribute.String("service.version", s.ServiceVersion))
	}
	opts := []resource.Option{resource.WithTelemetrySDK(), resource.WithAttributes(base...), resource.WithFromEnv()}
	if s.ServiceName != "" {
		opts = append(opts, resource.WithAttributes(attribute.String("service.name", s.ServiceName)))
	}
	return resource.New(ctx, opts...)
}
