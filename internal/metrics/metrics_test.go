package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
)

func TestDecisionsCounted(t *testing.T) {
	m := New()
	cred := &authz.Credential{ID: "k1", TenantID: "t1", Tier: "standard"}
	m.ObserveDecision("grpc", &authz.Decision{Allow: true, Reason: authz.ReasonOK, Credential: cred}, time.Millisecond)
	m.ObserveDecision("grpc", &authz.Decision{Reason: authz.ReasonInvalidKey}, time.Millisecond)
	m.ObserveDecision("grpc", &authz.Decision{Allow: true, Reason: authz.ReasonOK, WouldDeny: authz.ReasonInsufficientScope, Credential: cred}, time.Millisecond)
	m.ObserveDecision("grpc", &authz.Decision{Reason: authz.ReasonRateLimited, Credential: cred}, time.Millisecond)
	m.ObserveDecision("grpc", &authz.Decision{Reason: authz.ReasonRateLimited}, time.Millisecond)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`keygate_decisions_total{reason="ok",result="allow",tier="standard"} 1`,
		`keygate_decisions_total{reason="invalid_api_key",result="deny",tier=""} 1`,
		`keygate_decisions_total{reason="insufficient_scope",result="would_deny",tier="standard"} 1`,
		`keygate_decisions_total{reason="rate_limited",result="deny",tier="standard"} 1`,
		`keygate_decisions_total{reason="rate_limited",result="throttled",tier=""} 1`,
		`keygate_check_duration_seconds_count{adapter="grpc"} 5`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, secret := range []string{"k1", "t1"} {
		if strings.Contains(string(body), `"`+secret+`"`) {
			t.Errorf("metrics carry an unbounded label value %q", secret)
		}
	}
}
