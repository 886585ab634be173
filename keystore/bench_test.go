package keystore

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore/apikey"
)

// The Check path measured in process: decision core + cache + store, no
// gRPC. Run:
//
//	go test -run='^$' -bench=Check -benchmem ./keystore
//	KEYGATE_BENCH_LARGE=1 go test -run='^$' -bench=Check -benchmem -timeout=30m ./keystore
//
// The second adds a store of 1,000,000 keys (about a minute to build).

// benchSizes are the store sizes benchmarked: 1,000,000 keys only on
// request, since building that store takes a while.
func benchSizes() []int {
	sizes := []int{1, 100_000}
	if os.Getenv("KEYGATE_BENCH_LARGE") != "" {
		sizes = append(sizes, 1_000_000)
	}
	return sizes
}

// benchStore is a store holding n keys, of which the raw forms of the
// first len(raws) are known to the benchmark.
type benchStore struct {
	s      *Store
	raws   []string
	opened time.Duration // Open of the filled file
	first  time.Duration // first Check after Open
}

var benchStores = map[int]*benchStore{}

// newBenchStore fills a store with n keys in large transactions (the
// admin path commits each key; filling a million that way would take
// hours) and reopens it, timing the open and the first lookup.
func newBenchStore(b *testing.B, n int) *benchStore {
	if bs, ok := benchStores[n]; ok {
		return bs
	}
	dir, err := os.MkdirTemp("", "keygate-bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "keygate.db")
	s, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	tn, err := s.CreateTenant(b.Context(), "Bench")
	if err != nil {
		b.Fatal(err)
	}
	format := apikey.MustFormat("ak")
	const known = 10_000
	bs := &benchStore{}
	db := s.b.(*boltBackend).db
	db.NoSync = true
	now := time.Now().UTC()
	for start := 0; start < n; start += 50_000 {
		err := db.Update(func(btx *bolt.Tx) error {
			tx := boltTx{btx}
			for i := start; i < min(start+50_000, n); i++ {
				var h apikey.Hash
				display := "ak_live_XXXX"
				if i < known {
					raw, err := format.Generate(apikey.EnvLive)
					if err != nil {
						return err
					}
					bs.raws = append(bs.raws, raw)
					h, display = apikey.HashOf(raw), apikey.DisplayPrefix(raw)
				} else if _, err := rand.Read(h[:]); err != nil {
					return err
				}
				id, err := newID()
				if err != nil {
					return err
				}
				k := storedKey{Key: Key{
					ID: id, Name: fmt.Sprint("key ", i), DisplayPrefix: display, TenantID: tn.ID,
					UserID: "user-1", Environment: apikey.EnvLive, Tier: "standard",
					Scopes: []string{"vault:read", "chat:write"}, Status: authz.StatusActive, CreatedAt: now,
				}, Hash: h[:]}
				if err := putKey(tx, &k, true); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	db.NoSync = false
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if bs.s, err = Open(path, Options{}); err != nil {
		b.Fatal(err)
	}
	bs.opened = time.Since(t0)
	if _, found, err := bs.s.LookupKey(context.Background(), apikey.HashOf(bs.raws[0])); err != nil || !found {
		b.Fatalf("first lookup: %v %v", found, err)
	}
	bs.first = time.Since(t0)
	b.Cleanup(func() { bs.s.Close(); delete(benchStores, n) })
	benchStores[n] = bs
	return bs
}

// uncached looks every key up in bbolt, as a Check of a key not yet cached.
type uncached struct{ s *Store }

func (u uncached) LookupKey(_ context.Context, h apikey.Hash) (*authz.Credential, bool, error) {
	c, err := u.s.readCredential(context.Background(), h)
	return c, c != nil, err
}

func benchEngine(b *testing.B, l authz.Lookup) *authz.Engine {
	e, err := authz.New(authz.Config{RateLimits: authz.RateLimits{
		Tiers: map[string]authz.LimitSet{"standard": authz.One("standard", ratelimit.Limit{Requests: 1 << 29, Window: time.Second})},
		// Off, or after 20 unknown keys from the one peer the throttle
		// would answer before any lookup, and "unknown" would measure it.
		FailedAuth: ratelimit.Limit{Requests: -1},
	}}, l)
	if err != nil {
		b.Fatal(err)
	}
	return e
}

func BenchmarkCheck(b *testing.B) {
	for _, n := range benchSizes() {
		bs := newBenchStore(b, n)
		fi, _ := os.Stat(bs.s.Backend())
		b.Logf("%d keys: file %d MiB, Open %v, Open + first Check %v, process RSS %s", n, fi.Size()>>20, bs.opened, bs.first, rss())
		unknown, _ := apikey.MustFormat("ak").Generate(apikey.EnvLive)
		valid := bs.raws[0]
		cases := []struct {
			name   string
			lookup authz.Lookup
			key    func(i int) string
			want   authz.Reason
		}{
			{"cached-valid", bs.s, func(int) string { return valid }, authz.ReasonOK},
			{"uncached-valid", uncached{bs.s}, func(i int) string { return bs.raws[i%len(bs.raws)] }, authz.ReasonOK},
			{"unknown", bs.s, func(int) string { return unknown }, authz.ReasonInvalidKey},
			{"malformed", bs.s, func(int) string { return valid[:len(valid)-1] + "!" }, authz.ReasonInvalidKey},
		}
		for _, c := range cases {
			b.Run(fmt.Sprintf("%s/keys=%d", c.name, n), func(b *testing.B) {
				e := benchEngine(b, c.lookup)
				reqs := make([]authz.Request, 64)
				for i := range reqs {
					reqs[i] = authz.Request{Method: "GET", Path: "/v1/x", Peer: "10.0.0.1", Headers: map[string]string{"x-api-key": c.key(i)}}
				}
				ctx := context.Background()
				for i := 0; i < 2000; i++ { // fill the cache; ristretto applies Sets asynchronously
					e.Decide(ctx, &reqs[i%len(reqs)])
				}
				bs.s.cache.pos.Wait()
				b.ReportAllocs()
				b.ResetTimer()
				i := 0
				for b.Loop() {
					d, err := e.Decide(ctx, &reqs[i%len(reqs)])
					if err != nil || d.Reason != c.want {
						b.Fatalf("reason %s, want %s (err %v)", d.Reason, c.want, err)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkCreateKey is the admin path: one committed, fsynced
// transaction per key.
func BenchmarkCreateKey(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "k.db"), Options{MaxOrgKeys: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	tn, _ := s.CreateTenant(b.Context(), "Bench")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.CreateKey(b.Context(), KeySpec{TenantID: tn.ID, Name: "k", Scopes: []string{"a"}}); err != nil {
			b.Fatal(err)
		}
	}
}

// rss reads the process's resident and peak memory (Linux), for the
// record of what a store of n keys costs.
func rss() string {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	var out []string
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "VmHWM:") {
			out = append(out, strings.Join(strings.Fields(line), " "))
		}
	}
	return strings.Join(out, ", ")
}

// BenchmarkCheckParallel is the cached allow path from every core at once,
// with last-used times recorded as serve records them: what contends.
func BenchmarkCheckParallel(b *testing.B) {
	bs := newBenchStore(b, 100_000)
	e, err := authz.New(authz.Config{Recorder: bs.s, RateLimits: authz.RateLimits{
		Tiers: map[string]authz.LimitSet{"standard": authz.One("standard", ratelimit.Limit{Requests: 1 << 29, Window: time.Second})},
	}}, bs.s)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, raw := range bs.raws[:256] { // warm the cache
		e.Decide(ctx, &authz.Request{Path: "/x", Headers: map[string]string{"x-api-key": raw}})
	}
	bs.s.cache.pos.Wait()
	reqs := make([]authz.Request, 256)
	for i := range reqs {
		reqs[i] = authz.Request{Path: "/x", Peer: "10.0.0.1", Headers: map[string]string{"x-api-key": bs.raws[i]}}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			e.Decide(ctx, &reqs[i%len(reqs)])
			i++
		}
	})
}
