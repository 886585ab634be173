package envoy_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/keystore"
)

// BenchmarkAdapterCheck is the gRPC adapter in process (no network): a
// CheckRequest through translation, the core and header injection into a
// CheckResponse. The difference to keystore's BenchmarkCheck is the
// adapter's own cost. Run: go test -run='^$' -bench=Adapter -benchmem ./envoy
func BenchmarkAdapterCheck(b *testing.B) {
	s, err := keystore.Open(filepath.Join(b.TempDir(), "k.db"), keystore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	tn, _ := s.CreateTenant(b.Context(), "Bench")
	k, _ := s.CreateKey(b.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "bench", UserID: "u1", Scopes: []string{"a", "b"}})
	e, err := authz.New(authz.Config{RateLimits: authz.RateLimits{
		Tiers: map[string]authz.LimitSet{"standard": authz.One("standard", ratelimit.Limit{Requests: 1 << 29, Window: time.Second})},
	}}, s)
	if err != nil {
		b.Fatal(err)
	}
	srv := envoy.NewServer(e, nil)
	for _, c := range []struct {
		name string
		key  string
	}{{"allow", k.Secret.Reveal()}, {"deny-malformed", k.Secret.Reveal()[:len(k.Secret.Reveal())-1] + "!"}} {
		b.Run(c.name, func(b *testing.B) {
			req := checkRequest(map[string]string{"x-api-key": c.key, "x-tenant-id": "spoofed", "accept": "*/*"})
			ctx := context.Background()
			for i := 0; i < 1000; i++ {
				srv.Check(ctx, req)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := srv.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
