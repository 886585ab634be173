package authz_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

// benchDecide measures the in-process decision (core + cache, no gRPC) for
// one request shape. Run: go test -bench=Decide -benchmem ./authz
func benchDecide(b *testing.B, headers func(valid string) map[string]string) {
	s, err := keystore.Open(filepath.Join(b.TempDir(), "keygate.db"), keystore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	tn, _ := s.CreateTenant(b.Context(), "Acme")
	k, err := s.CreateKey(b.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "bench", Scopes: []string{"a", "b"}})
	if err != nil {
		b.Fatal(err)
	}
	// A budget the benchmark cannot exhaust, so it measures the allow path
	// (with its rate-limit charge and headers), not the 429.
	e, err := authz.New(authz.Config{Recorder: s, RateLimits: authz.RateLimits{
		Tiers: map[string]authz.LimitSet{"standard": authz.One("standard", ratelimit.Limit{Requests: 1 << 29, Window: time.Second})},
	}}, s)
	if err != nil {
		b.Fatal(err)
	}
	req := &authz.Request{Method: "GET", Path: "/v1/x", Peer: "10.0.0.1", Headers: headers(k.Secret.Reveal())}
	ctx := context.Background()
	for range 1000 { // warm the cache (ristretto applies Sets asynchronously)
		e.Decide(ctx, req)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.Decide(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecideCachedValid(b *testing.B) {
	benchDecide(b, func(k string) map[string]string { return map[string]string{"x-api-key": k} })
}

func BenchmarkDecideUnknown(b *testing.B) {
	unknown, _ := apikey.MustFormat("ak").Generate("live")
	benchDecide(b, func(string) map[string]string { return map[string]string{"x-api-key": unknown} })
}

func BenchmarkDecideMalformed(b *testing.B) {
	benchDecide(b, func(k string) map[string]string { return map[string]string{"x-api-key": k[:len(k)-1] + "0"} })
}

func BenchmarkDecideMissing(b *testing.B) {
	benchDecide(b, func(string) map[string]string { return map[string]string{"accept": "*/*"} })
}
