package envoy_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/keystore"
)

// BenchmarkAdapterCheck is the gRPC adapter in process (no network): a
// CheckRequest through translation, the core and header injection into a
// CheckResponse message (allow, deny-malformed: what Server.Check returns)
// or into the encoded answer the gRPC server sends (the -wire variants).
// The difference to keystore's BenchmarkCheck is the adapter's own cost. Run: go test -run='^$' -bench=Adapter -benchmem ./envoy
func BenchmarkAdapterCheck(b *testing.B) {
	e, k := benchEngine(b)
	srv := envoy.NewServer(e, nil)
	bare := envoy.NewServer(e, nil, envoy.WithMetadata(false))
	valid, malformed := k.Secret.Reveal(), k.Secret.Reveal()[:len(k.Secret.Reveal())-1]+"!"
	for _, c := range []struct {
		name  string
		key   string
		check func(context.Context, *authv3.CheckRequest) error
	}{
		{"allow", valid, message(srv)},
		{"deny-malformed", malformed, message(srv)},
		{"allow-wire", valid, wire(srv)},
		{"deny-malformed-wire", malformed, wire(srv)},
		{"allow-wire-nometadata", valid, wire(bare)},
	} {
		b.Run(c.name, func(b *testing.B) {
			req := checkRequest(map[string]string{"x-api-key": c.key, "x-tenant-id": "spoofed", "accept": "*/*"})
			ctx := context.Background()
			for i := 0; i < 1000; i++ {
				c.check(ctx, req)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := c.check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func message(s *envoy.Server) func(context.Context, *authv3.CheckRequest) error {
	return func(ctx context.Context, req *authv3.CheckRequest) error {
		_, err := s.Check(ctx, req)
		return err
	}
}

func wire(s *envoy.Server) func(context.Context, *authv3.CheckRequest) error {
	return func(ctx context.Context, req *authv3.CheckRequest) error {
		if envoy.CheckWire(s, ctx, req) == 0 {
			return errors.New("empty answer")
		}
		return nil
	}
}

// BenchmarkHTTPCheck is the HTTP adapter in process (no network): an nginx
// auth_request or a Caddy forward_auth request as net/http hands it over,
// through header folding, the core and writing the answer's headers.
// Run: go test -run='^$' -bench=HTTPCheck -benchmem ./envoy
func BenchmarkHTTPCheck(b *testing.B) {
	e, k := benchEngine(b)
	h := envoy.NewHTTPHandler(e, nil)
	for _, c := range []struct {
		name   string
		path   string
		header http.Header
	}{
		{"nginx", envoy.PathNginx, http.Header{"X-Original-Uri": {"/api/v1/assessments?limit=10"}, "X-Original-Method": {"GET"},
			"X-Real-Ip": {"203.0.113.7"}, "X-Forwarded-For": {"203.0.113.7"}, "X-Api-Key": {k.Secret.Reveal()}, "Connection": {""}}},
		{"forward", envoy.PathForward, http.Header{"X-Forwarded-Uri": {"/api/v1/assessments?limit=10"}, "X-Forwarded-Method": {"GET"},
			"X-Forwarded-Host": {"api.example.com"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-For": {"203.0.113.7"}, "X-Api-Key": {k.Secret.Reveal()}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, c.path, nil)
			r.Header = c.header
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, r)
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }

// benchEngine is the engine the adapter benchmarks decide with: a real
// bbolt store holding one key (returned), closed when b ends, and a tier
// limit no benchmark reaches.
func benchEngine(b *testing.B) (*authz.Engine, keystore.CreatedKey) {
	b.Helper()
	s, err := keystore.Open(filepath.Join(b.TempDir(), "k.db"), keystore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	tn, err := s.CreateTenant(b.Context(), "Bench")
	if err != nil {
		b.Fatal(err)
	}
	k, err := s.CreateKey(b.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "bench", UserID: "u1", Scopes: []string{"a", "b"}})
	if err != nil {
		b.Fatal(err)
	}
	e, err := authz.New(authz.Config{RateLimits: authz.RateLimits{
		Tiers: map[string]authz.LimitSet{"standard": authz.One("standard", ratelimit.Limit{Requests: 1 << 29, Window: time.Second})},
	}}, s)
	if err != nil {
		b.Fatal(err)
	}
	return e, k
}
