package envoy_test

import (
	"context"
	"errors"
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
