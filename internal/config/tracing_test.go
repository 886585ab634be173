package config

import (
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/telemetry"
	"github.com/keygate/keygate/keystore/apikey"
)

func TestTracingSettings(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte("tracing:\n  enabled: true\n  endpoint: http://collector:4317\n  protocol: grpc\n  sample_ratio: 0.25\n  service_name: edge-auth\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.TracingSettings("v1.2.3")
	if !s.Enabled || s.Endpoint != "http://collector:4317" || s.Protocol != telemetry.ProtocolGRPC ||
		s.SampleRatio == nil || *s.SampleRatio != 0.25 || s.ServiceName != "edge-auth" || s.ServiceVersion != "v1.2.3" {
		t.Errorf("settings %+v", s)
	}
}

// Off by default, every field left to the environment; an explicit null
// sample_ratio (as the example writes it) is "not set", not 0.
func TestTracingOffByDefault(t *testing.T) {
	for _, file := range []string{"", "tracing:\n  sample_ratio: ~\n"} {
		path := "t.yaml"
		if file == "" {
			path = ""
		}
		cfg, err := Parse(path, []byte(file))
		if err != nil {
			t.Fatal(err)
		}
		if s := cfg.TracingSettings(""); s.Enabled || s.Endpoint != "" || s.Protocol != "" || s.SampleRatio != nil || s.ServiceName != "" {
			t.Errorf("%q: settings %+v, want all unset", file, s)
		}
	}
}

// Bad values are refused at their line whether tracing is on or not: the
// environment can turn it on at the next start.
func TestTracingProblemsAtTheirFields(t *testing.T) {
	_, err := Parse("t.yaml", []byte("log:\n  level: info\ntracing:\n  endpoint: collector:4317\n  protocol: http/json\n  sample_ratio: 1.5\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"t.yaml:4: tracing.endpoint:",
		"t.yaml:5: tracing.protocol:",
		"t.yaml:6: tracing.sample_ratio:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestAnswerSwitches: envoy.dynamic_metadata and rate_limits.allow_headers
// are on unless set to false.
func TestAnswerSwitches(t *testing.T) {
	for file, want := range map[string]bool{
		"": true,
		"envoy:\n  dynamic_metadata: true\nrate_limits:\n  allow_headers: true\n":   true,
		"envoy:\n  dynamic_metadata: false\nrate_limits:\n  allow_headers: false\n": false,
	} {
		cfg, err := Parse("t.yaml", []byte(file))
		if err != nil {
			t.Fatal(err)
		}
		ac := cfg.AuthzConfig(apikey.Format{})
		if cfg.MetadataOn() != want || ac.RateLimits.QuietAllows == want {
			t.Errorf("%q: metadata %v, quiet allows %v; want metadata %v", file, cfg.MetadataOn(), ac.RateLimits.QuietAllows, want)
		}
	}
}
