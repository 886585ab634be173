package config

import (
	"github.com/keygate/keygate/internal/telemetry"
)

// tracingConfig is the tracing section: OpenTelemetry traces over OTLP,
// off unless enabled here or by OTEL_TRACES_EXPORTER=otlp. A field left
// empty is taken from the standard OTEL_* environment, then the OTel
// default; a field set here wins over the environment.
type tracingConfig struct {
	Enabled     bool     `yaml:"enabled"`      // false
	Endpoint    string   `yaml:"endpoint"`     // OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, else localhost:4318 (4317 for grpc)
	Protocol    string   `yaml:"protocol"`     // grpc | http/protobuf; OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, else http/protobuf
	SampleRatio *float64 `yaml:"sample_ratio"` // OTEL_TRACES_SAMPLER(_ARG), else every trace (parent-based)
	ServiceName string   `yaml:"service_name"` // OTEL_SERVICE_NAME, else keygate
}

// TracingSettings are the tracing section as the telemetry package takes
// it; version is the build's, for service.version.
func (c *Config) TracingSettings(version string) telemetry.Settings {
	t := c.Tracing
	return telemetry.Settings{
		Enabled:        t.Enabled,
		Endpoint:       t.Endpoint,
		Protocol:       t.Protocol,
		SampleRatio:    t.SampleRatio,
		ServiceName:    t.ServiceName,
		ServiceVersion: version,
	}
}

// validateTracing checks the section whether or not tracing is on: the
// environment can turn it on at any start.
func (c *Config) validateTracing(p *problems) {
	t := c.Tracing
	p.add("tracing.endpoint", telemetry.ValidEndpoint(t.Endpoint))
	p.add("tracing.protocol", telemetry.ValidProtocol(t.Protocol))
	p.add("tracing.sample_ratio", telemetry.ValidSampleRatio(t.SampleRatio))
}
