package envoy_test

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/authz/ratelimit/redislimit"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/internal/testredis"
	"github.com/keygate/keygate/keystore"
)

// replicas are three engines, each behind its own gRPC server, sharing one
// store and one real Redis for their budgets, and one test clock.
type replicas struct {
	store   *keystore.Store
	tenant  string
	clients []authv3.AuthorizationClient
}

func startReplicas(t *testing.T, clk *clock, rl authz.RateLimits) *replicas {
	t.Helper()
	s, err := keystore.Open(filepath.Join(t.TempDir(), "keygate.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	tn, err := s.CreateTenant(t.Context(), "Acme")
	if err != nil {
		t.Fatal(err)
	}
	srv := testredis.Start(t)
	r := &replicas{store: s, tenant: tn.ID}
	for range 3 {
		rl := rl
		rl.Shared = redislimit.New(srv.Client(t), redislimit.Options{Now: clk.now, Timeout: -1})
		e, err := authz.New(authz.Config{Now: clk.now, RateLimits: rl}, s)
		if err != nil {
			t.Fatal(err)
		}
		g, _ := envoy.NewGRPCServer(envoy.NewServer(e, nil))
		conn := serve(t, g)
		r.clients = append(r.clients, authv3.NewAuthorizationClient(conn))
	}
	return r
}

func (r *replicas) allowed(t *testing.T, i int, secret string) bool {
	t.Helper()
	resp, err := r.clients[i%len(r.clients)].Check(t.Context(), checkRequest(map[string]string{"x-api-key": secret}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() == nil && resp.GetDeniedResponse().GetStatus().GetCode() != 429 {
		t.Fatalf("neither allowed nor 429: %v", resp)
	}
	return resp.GetOkResponse() != nil
}

// TestPromiseAcrossReplicas: three replicas sharing Redis keep the
// standard tier's promise together, for paced traffic spread over them, for
// concurrent clients, and for named limits charged all or nothing.
func TestPromiseAcrossReplicas(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	t.Run("paced 5/s for 3 min", func(t *testing.T) {
		clk := &clock{t: t0}
		r := startReplicas(t, clk, authz.RateLimits{})
		k, err := r.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: r.tenant, Name: "paced", Tier: "standard"})
		if err != nil {
			t.Fatal(err)
		}
		var admitted []time.Time
		for i, off := range paced(200*time.Millisecond, 3*time.Minute) {
			clk.set(t0.Add(off))
			if r.allowed(t, i, k.Secret.Reveal()) {
				admitted = append(admitted, clk.now())
			}
		}
		most := maxInWindow(admitted, time.Minute)
		t.Logf("3 replicas, paced 5/s for 3 min: %d admitted, at most %d in any rolling minute (promise: 100)", len(admitted), most)
		if most > 100 || len(admitted) < 282 {
			t.Fatalf("%d admitted, %d in one rolling minute: want at most 100 per minute and at least 282 in all", len(admitted), most)
		}
	})
	t.Run("concurrent clients", func(t *testing.T) {
		clk := &clock{t: t0}
		r := startReplicas(t, clk, authz.RateLimits{})
		k, err := r.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: r.tenant, Name: "busy", Tier: "standard"})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		n := 0
		var wg sync.WaitGroup
		for c := range 12 {
			wg.Go(func() {
				for i := range 20 {
					if r.allowed(t, c+i, k.Secret.Reveal()) {
						mu.Lock()
						n++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		if n != 100 {
			t.Fatalf("240 requests at once over 3 replicas: %d admitted, want exactly 100", n)
		}
	})
	t.Run("a user's keys", func(t *testing.T) {
		clk := &clock{t: t0}
		r := startReplicas(t, clk, authz.RateLimits{User: authz.One("user", ratelimit.Limit{Requests: 7, Window: time.Minute})})
		var secrets []string
		for _, env := range []string{"live", "test", "live"} {
			k, err := r.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: r.tenant, Name: "dev", UserID: "dev-1", Environment: env, Tier: "enterprise"})
			if err != nil {
				t.Fatal(err)
			}
			secrets = append(secrets, k.Secret.Reveal())
		}
		n := 0
		for i := range 30 {
			if r.allowed(t, i, secrets[i%3]) {
				n++
			}
		}
		if n != 7 {
			t.Fatalf("three keys of one user over three replicas: %d admitted, want the user's 7", n)
		}
	})
	t.Run("named limits", func(t *testing.T) {
		clk := &clock{t: t0}
		r := startReplicas(t, clk, authz.RateLimits{Tiers: map[string]authz.LimitSet{
			"standard": {
				{Name: "per_minute", Limit: ratelimit.Limit{Requests: 10, Window: time.Minute}},
				{Name: "per_day", Limit: ratelimit.Limit{Requests: 15, Window: 24 * time.Hour}},
			},
		}})
		k, err := r.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: r.tenant, Name: "named", Tier: "standard"})
		if err != nil {
			t.Fatal(err)
		}
		count := func(tries int) (n int) {
			for i := range tries {
				if r.allowed(t, i, k.Secret.Reveal()) {
					n++
				}
			}
			return n
		}
		if n := count(30); n != 10 {
			t.Fatalf("first minute: %d admitted, want 10 (per_minute)", n)
		}
		clk.set(t0.Add(2 * time.Minute))
		if n := count(30); n != 5 {
			t.Fatalf("later that day: %d admitted, want 5 (per_day; refusals spent none of it)", n)
		}
	})
}
