package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsLine finds the metrics listener's address in the serving line.
var metricsLine = regexp.MustCompile(`msg="keygate serving".* metrics=(\S+)`)

// metricsAddr is the metrics listener's address in s's serving line.
func metricsAddr(t *testing.T, s *server) string {
	t.Helper()
	// The serving line reaches the log buffer just after the pipe that
	// startServer waited on.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if m := metricsLine.FindStringSubmatch(s.logs.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics address in the serving line:\n%s", s.logs)
		}
	}
}

// metricsURL is the /metrics URL of s's metrics listener.
func metricsURL(t *testing.T, s *server) string {
	t.Helper()
	return "http://" + metricsAddr(t, s) + "/metrics"
}

// scrapeMetrics GETs url with authorization (none when empty) and returns
// the status and the body.
func scrapeMetrics(t *testing.T, url, authorization string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// sample is the value of the series of fam whose labels include want; ok
// is false when there is none.
func sample(fam *dto.MetricFamily, want map[string]string) (v float64, ok bool) {
	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsListenerE2E: the real binary serves Prometheus text on the
// metrics listener to a scraper holding no token, with the build, the
// gRPC calls and the admin requests in it, and serves nothing else there.
func TestMetricsListenerE2E(t *testing.T) {
	s := startServer(t, t.TempDir())
	url := metricsURL(t, s)
	_, client := keyAndClient(t, s) // creates a tenant and a key through the admin API
	if _, err := check(client, "", "/api/v1/things"); err != nil {
		t.Fatal(err)
	}

	code, body := scrapeMetrics(t, url, "")
	if code != http.StatusOK {
		t.Fatalf("scrape without a token = %d: %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("the scrape does not parse: %v\n%s", err, body)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"keygate_build_info", map[string]string{"version": "dev"}},
		{"grpc_server_handled_total", map[string]string{"grpc_service": "envoy.service.auth.v3.Authorization", "grpc_method": "Check", "grpc_code": "OK"}},
		{"grpc_server_handling_seconds", map[string]string{"grpc_method": "Check"}},
		{"keygate_admin_requests_total", map[string]string{"route": "POST /v1/tenants", "code": "201"}},
		{"keygate_admin_requests_total", map[string]string{"route": "POST /v1/keys", "code": "201"}},
		{"keygate_decisions_total", nil},
		{"keygate_listener_max_connections", map[string]string{"listener": "metrics"}},
	} {
		if v, ok := sample(fams[c.name], c.labels); !ok || v < 1 {
			t.Errorf("%s%v = %v (found: %v)", c.name, c.labels, v, ok)
		}
	}

	for _, path := range []string{"/", "/healthz", "/readyz", "/v1/tenants"} {
		if code, _ := scrapeMetrics(t, strings.TrimSuffix(url, "/metrics")+path, ""); code != http.StatusNotFound {
			t.Errorf("GET %s on the metrics listener = %d, want 404", path, code)
		}
	}
	// The admin listener's /metrics still wants a token.
	if code, _ := scrapeMetrics(t, s.admin+"/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("admin /metrics without a token = %d, want 401", code)
	}
	s.stop(t)
}

// TestMetricsListenerTokenE2E: with metrics.require_token a scrape needs
// the bootstrap token or a live admin token with metrics:read; without
// one it is refused and shown nothing.
func TestMetricsListenerTokenE2E(t *testing.T) {
	dir := t.TempDir()
	s := startWithConfig(t, dir, writeConfig(t, dir, "metrics:\n  require_token: true\n"))
	url := metricsURL(t, s)
	for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Basic " + readToken(t, dir)} {
		code, body := scrapeMetrics(t, url, auth)
		if code != http.StatusUnauthorized || strings.Contains(body, "keygate_build_info") {
			t.Errorf("scrape with Authorization %.12q = %d", auth, code)
		}
	}
	code, body := scrapeMetrics(t, url, "Bearer "+readToken(t, dir))
	if code != http.StatusOK || !strings.Contains(body, "keygate_build_info") {
		t.Errorf("scrape with the bootstrap token = %d:\n%.300s", code, body)
	}

	// An admin token with metrics:read scrapes, until it is revoked; one
	// without that scope never does.
	reader := s.cli(t, "admin-tokens", "create", "--name", "prometheus", "--scopes", "metrics:read")
	keys := s.cli(t, "admin-tokens", "create", "--name", "ci", "--scopes", "keys:read")
	if code, _ := scrapeMetrics(t, url, "Bearer "+reader["token"].(string)); code != http.StatusOK {
		t.Errorf("scrape with a metrics:read admin token = %d", code)
	}
	if code, _ := scrapeMetrics(t, url, "Bearer "+keys["token"].(string)); code != http.StatusUnauthorized {
		t.Errorf("scrape with a keys:read admin token = %d, want 401", code)
	}
	s.cli(t, "admin-tokens", "revoke", reader["id"].(string))
	if code, _ := scrapeMetrics(t, url, "Bearer "+reader["token"].(string)); code != http.StatusUnauthorized {
		t.Errorf("scrape with a revoked admin token = %d, want 401", code)
	}
	s.stop(t)
}

// TestMetricsListenerOffE2E: listen.metrics off opens no listener, and
// the serving line says so.
func TestMetricsListenerOffE2E(t *testing.T) {
	s := startServerWith(t, t.TempDir(), "KEYGATE_METRICS_LISTEN=off")
	if addr := metricsAddr(t, s); addr != "off" {
		t.Errorf("serving line with listen.metrics off names %s", addr)
	}
	s.stop(t)
}
