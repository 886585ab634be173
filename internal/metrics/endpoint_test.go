package metrics

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keygate/keygate/internal/buildinfo"
)

// scrape asks h for target and returns the status and body.
func scrape(t *testing.T, h http.Handler, method, target, authorization string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec.Code, rec.Body.String()
}

// TestEndpointServesMetricsOnly: the listener anyone may reach answers
// GET /metrics, in text Prometheus parses, and nothing else.
func TestEndpointServesMetricsOnly(t *testing.T) {
	m := New()
	if err := m.RegisterBuildInfo(buildinfo.Get("v1.2.3", "")); err != nil {
		t.Fatal(err)
	}
	m.ObserveAdminRequest("GET /v1/keys/{id}", 200)
	m.ObserveAdminRequest("", 404)
	h := m.Endpoint(nil)
	code, body := scrape(t, h, "GET", "/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("the scrape does not parse: %v\n%s", err, body)
	}
	bi := fams["keygate_build_info"]
	if bi == nil || len(bi.Metric) != 1 || bi.Metric[0].GetGauge().GetValue() != 1 {
		t.Fatalf("keygate_build_info = %v", bi)
	}
	labels := map[string]string{}
	for _, l := range bi.Metric[0].Label {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != "v1.2.3" || labels["go_version"] == "" || labels["revision"] == "" {
		t.Errorf("keygate_build_info labels %v", labels)
	}
	for _, want := range []string{
		`keygate_admin_requests_total{code="200",route="GET /v1/keys/{id}"} 1`,
		`keygate_admin_requests_total{code="404",route="unrouted"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the scrape lacks %s", want)
		}
	}
	if _, ok := fams["grpc_server_handled_total"]; ok {
		t.Error("gRPC series before any method was initialized or called")
	}

	for _, c := range []struct {
		method, target string
		want           int
	}{
		{"GET", "/", http.StatusNotFound},
		{"GET", "/healthz", http.StatusNotFound},
		{"GET", "/v1/keys", http.StatusNotFound},
		{"GET", "/metrics/x", http.StatusNotFound},
		{"POST", "/metrics", http.StatusMethodNotAllowed},
		{"DELETE", "/metrics", http.StatusMethodNotAllowed},
		{"HEAD", "/metrics", http.StatusOK},
	} {
		if code, _ := scrape(t, h, c.method, c.target, ""); code != c.want {
			t.Errorf("%s %s = %d, want %d", c.method, c.target, code, c.want)
		}
	}
}

// TestEndpointToken: with a token check, a scrape needs a bearer token it
// accepts; a check that cannot tell is a 503, not a 401 the scraper would
// take for a wrong token.
func TestEndpointToken(t *testing.T) {
	m := New()
	var broken bool
	h := m.Endpoint(func(_ context.Context, token string) (bool, error) {
		if broken {
			return false, errors.New("store down")
		}
		return token == "good", nil
	})
	for _, c := range []struct {
		authorization string
		want          int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer", http.StatusUnauthorized},
		{"Bearer ", http.StatusUnauthorized},
		{"Basic good", http.StatusUnauthorized},
		{"Bearer bad", http.StatusUnauthorized},
		{"Bearer good", http.StatusOK},
		{"bearer  good ", http.StatusOK},
	} {
		code, body := scrape(t, h, "GET", "/metrics", c.authorization)
		if code != c.want {
			t.Errorf("Authorization %q = %d, want %d", c.authorization, code, c.want)
		}
		if code != http.StatusOK && strings.Contains(body, "go_goroutines") {
			t.Errorf("Authorization %q: refused, yet the metrics were sent", c.authorization)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer realm="keygate-metrics"` {
		t.Errorf("WWW-Authenticate %q", got)
	}
	// Paths other than /metrics are 404 without a token too: there is
	// nothing else here to ask a token for.
	if code, _ := scrape(t, h, "GET", "/v1/keys", ""); code != http.StatusNotFound {
		t.Errorf("GET /v1/keys without a token = %d, want 404", code)
	}
	broken = true
	if code, _ := scrape(t, h, "GET", "/metrics", "Bearer good"); code != http.StatusServiceUnavailable {
		t.Errorf("a token check that failed = %d, want 503", code)
	}
}
