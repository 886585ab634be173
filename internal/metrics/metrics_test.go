package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

func TestDecisionsCounted(t *testing.T) {
	m := New()
	cred := &authz.Credential{ID: "k1", TenantID: "t1", Tier: "standard"}
	m.ObserveDecision("grpc", &authz.Decision{Kind: authz.KindAllow, Reason: authz.ReasonOK, Credential: cred}, time.Millisecond)
	m.ObserveDecision("grpc", &authz.Decision{Reason: authz.ReasonInvalidKey}, time.Millisecond)
	m.ObserveDecision("grpc", &authz.Decision{Kind: authz.KindAllow, Reason: authz.ReasonOK, WouldDeny: authz.ReasonInsufficientScope, Credential: cred}, time.Millisecond)
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

func TestStoreMetrics(t *testing.T) {
	s, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tn, _ := s.CreateTenant(t.Context(), "Acme")
	k, _ := s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "a"})
	r, _ := s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "b"})
	s.RevokeKey(t.Context(), r.ID)
	s.LookupKey(context.Background(), apikey.HashOf(k.Secret.Reveal()))
	m := New()
	if err := m.RegisterStore(s); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`keygate_keys{state="active"} 1`,
		`keygate_keys{state="revoked"} 1`,
		`keygate_cache_misses_total 1`,
		`keygate_store_errors_total 0`,
		`keygate_cache_resets_total 0`,
		`keygate_store_following 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
