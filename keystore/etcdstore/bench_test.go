package etcdstore_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/internal/testetcd"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
	"github.com/keygate/keygate/keystore/etcdstore"
)

// BenchmarkCheckByBackend is the whole decision (engine, cache, store) over
// bbolt and over etcd (an embedded member on loopback), in one run so that
// the two compare as a ratio: a cached key, a key that is never cached
// (every Check reads the backend: the hash index, then the record) and an
// unknown key with the negative cache off (one read of the hash index).
func BenchmarkCheckByBackend(b *testing.B) {
	node := testetcd.Start(b)
	const keys = 200
	dir := b.TempDir()
	backends := []struct {
		name string
		open func(b *testing.B, opts keystore.Options) *keystore.Store
	}{
		{"bbolt", func(b *testing.B, opts keystore.Options) *keystore.Store {
			s, err := keystore.Open(filepath.Join(dir, "k.db"), opts)
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"etcd", func(b *testing.B, opts keystore.Options) *keystore.Store {
			eb, err := etcdstore.Open(etcdstore.Config{
				Endpoints: []string{node.DirectEndpoint()},
				Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				b.Fatal(err)
			}
			s, err := keystore.New(eb, opts)
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	}
	for _, be := range backends {
		s := be.open(b, keystore.Options{})
		tn, err := s.CreateTenant(b.Context(), "Bench")
		if err != nil {
			b.Fatal(err)
		}
		raws := make([]string, keys)
		for i := range raws {
			ck, err := s.CreateKey(b.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k", Scopes: []string{"a:read"}})
			if err != nil {
				b.Fatal(err)
			}
			raws[i] = ck.Secret.Reveal()
		}
		unknown, _ := apikey.MustFormat("ak").Generate(apikey.EnvLive)
		benchDecide(b, be.name+"/cached-valid", s, func(i int) string { return raws[i%8] }, authz.ReasonOK)
		// The same records served without a cache: every Check reads the
		// backend (a bbolt file allows one process, so the first store
		// closes before the second opens).
		s.Close()
		s = be.open(b, keystore.Options{CacheMaxBytes: 1, NegativeCacheEntries: -1})
		benchDecide(b, be.name+"/uncached-valid", s, func(i int) string { return raws[i%keys] }, authz.ReasonOK)
		benchDecide(b, be.name+"/uncached-unknown", s, func(int) string { return unknown }, authz.ReasonInvalidKey)
		s.Close()
	}
}

func benchDecide(b *testing.B, name string, s *keystore.Store, key func(i int) string, want authz.Reason) {
	b.Run(name, func(b *testing.B) {
		e, err := authz.New(authz.Config{RateLimits: authz.RateLimits{
			Tiers: map[string]authz.LimitSet{"standard": authz.One("standard", ratelimit.Limit{Requests: 1 << 29, Window: time.Second})},
			// Off, or after 20 unknown keys the throttle would answer
			// before any lookup.
			FailedAuth: ratelimit.Limit{Requests: -1},
		}}, s)
		if err != nil {
			b.Fatal(err)
		}
		reqs := make([]authz.Request, 64)
		for i := range reqs {
			reqs[i] = authz.Request{Method: "GET", Path: "/v1/x", Peer: "10.0.0.1", Headers: map[string]string{"x-api-key": key(i)}}
		}
		ctx := context.Background()
		for i := range 500 { // fill the cache; ristretto applies Sets asynchronously
			e.Decide(ctx, &reqs[i%len(reqs)])
		}
		time.Sleep(20 * time.Millisecond)
		b.ReportAllocs()
		b.ResetTimer()
		i := 0
		for b.Loop() {
			d, err := e.Decide(ctx, &reqs[i%len(reqs)])
			if err != nil || d.Reason != want {
				b.Fatalf("reason %s, want %s (err %v)", d.Reason, want, err)
			}
			i++
		}
	})
}

// BenchmarkRevokeByBackend is an admin write: over bbolt (one fsynced
// transaction), and over etcd with one replica and with three, where the
// write returns only once the other two have applied it.
func BenchmarkRevokeByBackend(b *testing.B) {
	node := testetcd.Start(b)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	openEtcd := func(b *testing.B, prefix string) *keystore.Store {
		eb, err := etcdstore.Open(etcdstore.Config{Endpoints: []string{node.DirectEndpoint()}, Prefix: prefix, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		s, err := keystore.New(eb, keystore.Options{MaxOrgKeys: -1})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	}
	run := func(b *testing.B, s *keystore.Store) {
		tn, err := s.CreateTenant(b.Context(), "Bench")
		if err != nil {
			b.Fatal(err)
		}
		ids := make([]string, 0, 64)
		for range cap(ids) {
			ck, err := s.CreateKey(b.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
			if err != nil {
				b.Fatal(err)
			}
			ids = append(ids, ck.ID)
		}
		b.ReportAllocs()
		b.ResetTimer()
		i := 0
		for b.Loop() {
			// Revoking a revoked key rewrites it: every iteration is a
			// committed write that invalidates the key everywhere.
			if _, err := s.RevokeKey(b.Context(), ids[i%len(ids)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	}
	b.Run("bbolt", func(b *testing.B) {
		s, err := keystore.Open(filepath.Join(b.TempDir(), "k.db"), keystore.Options{MaxOrgKeys: -1})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
	b.Run("etcd/replicas=1", func(b *testing.B) { run(b, openEtcd(b, "/bench-1/")) })
	b.Run("etcd/replicas=3", func(b *testing.B) {
		s := openEtcd(b, "/bench-3/")
		openEtcd(b, "/bench-3/")
		openEtcd(b, "/bench-3/")
		run(b, s)
	})
}
