package authz_test

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

// countingLookup counts the lookups that reach the real store.
type countingLookup struct {
	*keystore.Store
	n atomic.Int64
}

func (c *countingLookup) LookupKey(ctx context.Context, h apikey.Hash) (*authz.Credential, bool, error) {
	c.n.Add(1)
	return c.Store.LookupKey(ctx, h)
}

type limitWorld struct {
	store       *keystore.Store
	tenant, org string
	std, ent    keystore.CreatedKey
	orgA, orgB  keystore.CreatedKey
	metered     keystore.CreatedKey
	now         time.Time
}

func newLimitWorld(t *testing.T) *limitWorld {
	t.Helper()
	s, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{MaxOrgKeys: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	w := &limitWorld{store: s, now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	tn, _ := s.CreateTenant(t.Context(), "Acme")
	og, _ := s.CreateOrg(t.Context(), tn.ID, "EU")
	w.tenant, w.org = tn.ID, og.ID
	mk := func(spec keystore.KeySpec) keystore.CreatedKey {
		spec.TenantID, spec.Name = tn.ID, "k"
		k, err := s.CreateKey(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	w.std = mk(keystore.KeySpec{})
	w.ent = mk(keystore.KeySpec{Tier: "enterprise"})
	w.orgA = mk(keystore.KeySpec{OrgID: og.ID})
	w.orgB = mk(keystore.KeySpec{OrgID: og.ID})
	w.metered = mk(keystore.KeySpec{CreditsRemaining: new(int64(5))})
	return w
}

func (w *limitWorld) engine(t *testing.T, cfg authz.Config, l authz.Lookup) *authz.Engine {
	t.Helper()
	cfg.Now = func() time.Time { return w.now }
	if l == nil {
		l = w.store
	}
	e, err := authz.New(cfg, l)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func decideFrom(t *testing.T, e *authz.Engine, peer string, headers map[string]string, settings map[string]string) authz.Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), &authz.Request{Method: "GET", Path: "/x", Peer: peer, Headers: headers, Settings: settings})
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return d
}

// TestFailedAuthThrottle: past N invalid keys in the window an address gets
// 429 without a store lookup; valid keys from other addresses are fine.
func TestFailedAuthThrottle(t *testing.T) {
	w := newLimitWorld(t)
	cl := &countingLookup{Store: w.store}
	e := w.engine(t, authz.Config{RateLimits: authz.RateLimits{FailedAuth: ratelimit.Limit{Requests: 5, Window: time.Minute}}}, cl)
	unknown, _ := apikey.MustFormat("ak").Generate("live")
	for i := 0; i < 5; i++ {
		if d := decideFrom(t, e, "198.51.100.7", map[string]string{"x-api-key": unknown}, nil); d.Reason != authz.ReasonInvalidKey {
			t.Fatalf("guess %d: %s", i+1, d.Reason)
		}
	}
	before := cl.n.Load()
	for _, k := range []string{unknown, "garbage", w.std.Secret.Reveal()} {
		d := decideFrom(t, e, "198.51.100.7", map[string]string{"x-api-key": k}, nil)
		if d.Reason != authz.ReasonRateLimited || d.Status != 429 || header(d.ResponseHeaders, "retry-after") == "" {
			t.Fatalf("throttled address: %s %d %v", d.Reason, d.Status, d.ResponseHeaders)
		}
	}
	if cl.n.Load() != before {
		t.Fatal("a throttled address still reached the store")
	}
	// IPv6 neighbours in one /64 share a budget; another address is fine.
	for i := 0; i < 5; i++ {
		decideFrom(t, e, "2001:db8:1:2::"+strconv.Itoa(i+1), map[string]string{"x-api-key": unknown}, nil)
	}
	if d := decideFrom(t, e, "2001:db8:1:2::ffff", map[string]string{"x-api-key": w.std.Secret.Reveal()}, nil); d.Reason != authz.ReasonRateLimited {
		t.Fatalf("same /64: %s", d.Reason)
	}
	if d := decideFrom(t, e, "203.0.113.1", map[string]string{"x-api-key": w.std.Secret.Reveal()}, nil); !d.Allow() {
		t.Fatalf("valid key from another address: %s", d.Reason)
	}
	// The window rolls over: a sliding window counts a request for at most
	// the window and one of its 16 slots.
	w.now = w.now.Add(time.Minute + time.Minute/16)
	if d := decideFrom(t, e, "198.51.100.7", map[string]string{"x-api-key": w.std.Secret.Reveal()}, nil); !d.Allow() {
		t.Fatalf("after the window: %s", d.Reason)
	}
	// Missing keys are not guesses.
	off := w.engine(t, authz.Config{RateLimits: authz.RateLimits{FailedAuth: ratelimit.Limit{Requests: 1, Window: time.Minute}}}, nil)
	for i := 0; i < 3; i++ {
		decideFrom(t, off, "192.0.2.1", nil, nil)
	}
	if d := decideFrom(t, off, "192.0.2.1", map[string]string{"x-api-key": w.std.Secret.Reveal()}, nil); !d.Allow() {
		t.Fatalf("requests without a key throttled the address: %s", d.Reason)
	}
}

func TestTierLimitsAndCost(t *testing.T) {
	w := newLimitWorld(t)
	e := w.engine(t, authz.Config{RateLimits: authz.RateLimits{Tiers: map[string]authz.LimitSet{
		"standard":   authz.One("standard", ratelimit.Limit{Requests: 10, Window: time.Minute}),
		"enterprise": authz.One("enterprise", ratelimit.Limit{Requests: 100, Window: time.Minute, Burst: 20, Algorithm: ratelimit.TokenBucket}),
	}}}, nil)
	cost := map[string]string{"keygate.cost": "4"}
	for i, want := range []string{"6", "2"} {
		d := decideFrom(t, e, "", map[string]string{"x-api-key": w.std.Secret.Reveal()}, cost)
		if !d.Allow() || header(d.ResponseHeaders, "x-ratelimit-remaining") != want {
			t.Fatalf("cost-4 request %d: %s remaining %q", i+1, d.Reason, header(d.ResponseHeaders, "x-ratelimit-remaining"))
		}
	}
	d := decideFrom(t, e, "", map[string]string{"x-api-key": w.std.Secret.Reveal()}, cost)
	// The first 8 leave the sliding window 60 s to 63.75 s (a slot) after
	// they came, depending on where in its slot the clock was.
	if d.Reason != authz.ReasonRateLimited || header(d.ResponseHeaders, "retry-after") != "64" {
		t.Fatalf("cost 4 with 2 left: %s retry-after %q (the first requests leave the window in 63.75 s)", d.Reason, header(d.ResponseHeaders, "retry-after"))
	}
	if d := decideFrom(t, e, "", map[string]string{"x-api-key": w.std.Secret.Reveal()}, nil); !d.Allow() {
		t.Fatalf("a refused request was charged: cost 1 with 2 left: %s", d.Reason)
	}
	d = decideFrom(t, e, "", map[string]string{"x-api-key": w.ent.Secret.Reveal()}, nil)
	if header(d.ResponseHeaders, "ratelimit-policy") != `"enterprise";q=20;w=60` || header(d.ResponseHeaders, "x-ratelimit-limit") != "20" {
		t.Fatalf("enterprise burst headers: %v", d.ResponseHeaders)
	}
	// Shadow mode reports the 429 it would have given.
	for i := 0; i < 3; i++ {
		decideFrom(t, e, "", map[string]string{"x-api-key": w.std.Secret.Reveal()}, nil)
	}
	d = decideFrom(t, e, "", map[string]string{"x-api-key": w.std.Secret.Reveal()}, map[string]string{"keygate.shadow": "true"})
	if !d.Allow() || d.WouldDeny != authz.ReasonRateLimited {
		t.Fatalf("shadow rate limit: allow=%v would_deny=%s", d.Allow(), d.WouldDeny)
	}
}

// TestOrgAndTenantBudgets: keys of one org share the org's budget on top of
// their own, checked in one pass.
func TestOrgAndTenantBudgets(t *testing.T) {
	w := newLimitWorld(t)
	e := w.engine(t, authz.Config{RateLimits: authz.RateLimits{
		Org:    authz.One("org", ratelimit.Limit{Requests: 3, Window: time.Minute}),
		Tenant: authz.One("tenant", ratelimit.Limit{Requests: 5, Window: time.Minute}),
	}}, nil)
	for _, k := range []keystore.CreatedKey{w.orgA, w.orgB, w.orgA} {
		if d := decideFrom(t, e, "", map[string]string{"x-api-key": k.Secret.Reveal()}, nil); !d.Allow() {
			t.Fatalf("within the org budget: %s", d.Reason)
		}
	}
	d := decideFrom(t, e, "", map[string]string{"x-api-key": w.orgB.Secret.Reveal()}, nil)
	if d.Reason != authz.ReasonRateLimited || !containsPolicy(header(d.ResponseHeaders, "ratelimit"), `"org";r=0;t=64`) || header(d.ResponseHeaders, "x-ratelimit-limit") != "3" {
		t.Fatalf("org budget used up: %s %v", d.Reason, d.ResponseHeaders)
	}
	if !containsPolicy(header(d.ResponseHeaders, "ratelimit-policy"), `"org";q=3;w=60`) {
		t.Fatalf("policy header %q lacks the org budget", header(d.ResponseHeaders, "ratelimit-policy"))
	}
	// The tenant's other keys share the tenant budget: 3 spent, 2 left.
	for i := 0; i < 2; i++ {
		if d := decideFrom(t, e, "", map[string]string{"x-api-key": w.std.Secret.Reveal()}, nil); !d.Allow() {
			t.Fatalf("tenant budget request %d: %s", i+1, d.Reason)
		}
	}
	if d := decideFrom(t, e, "", map[string]string{"x-api-key": w.ent.Secret.Reveal()}, nil); d.Reason != authz.ReasonRateLimited {
		t.Fatalf("tenant budget used up: %s", d.Reason)
	}
}

func containsPolicy(h, item string) bool {
	for _, p := range splitComma(h) {
		if p == item {
			return true
		}
	}
	return false
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			p := s[start:i]
			for len(p) > 0 && p[0] == ' ' {
				p = p[1:]
			}
			out = append(out, p)
			start = i + 1
		}
	}
	return out
}

func TestCreditsThroughEngine(t *testing.T) {
	w := newLimitWorld(t)
	e := w.engine(t, authz.Config{Credits: w.store}, nil)
	cost := map[string]string{"keygate.cost": "2"}
	for _, want := range []string{"3", "1"} {
		d := decideFrom(t, e, "", map[string]string{"x-api-key": w.metered.Secret.Reveal()}, cost)
		if !d.Allow() || header(d.ResponseHeaders, "x-credits-remaining") != want {
			t.Fatalf("metered request: %s credits %q", d.Reason, header(d.ResponseHeaders, "x-credits-remaining"))
		}
	}
	d := decideFrom(t, e, "", map[string]string{"x-api-key": w.metered.Secret.Reveal()}, cost)
	if d.Reason != authz.ReasonCreditsExhausted || d.Status != 429 {
		t.Fatalf("credits at 1, cost 2: %s %d", d.Reason, d.Status)
	}
	checkBody(t, authz.FormatSimple, d, "API credits exhausted")
	if d := decideFrom(t, e, "", map[string]string{"x-api-key": w.metered.Secret.Reveal()}, nil); !d.Allow() {
		t.Fatalf("cost 1 with 1 left: %s", d.Reason)
	}
	if d := decideFrom(t, e, "", map[string]string{"x-api-key": w.std.Secret.Reveal()}, nil); !d.Allow() || header(d.ResponseHeaders, "x-credits-remaining") != "" {
		t.Fatalf("unmetered key: %s %v", d.Reason, d.ResponseHeaders)
	}
}

// downLimiter is a shared limiter that cannot be reached.
type downLimiter struct{ calls atomic.Int64 }

func (d *downLimiter) Take(context.Context, int, []ratelimit.Charge[string], []ratelimit.Result) (ratelimit.Result, error) {
	d.calls.Add(1)
	return ratelimit.Result{}, errors.New("connection refused")
}

// localShared is the in-process limiter behind the SharedLimiter
// interface, standing in for Redis where only the wiring is under test.
type localShared struct{ l *ratelimit.Limiter[string] }

func (s localShared) Take(_ context.Context, cost int, charges []ratelimit.Charge[string], each []ratelimit.Result) (ratelimit.Result, error) {
	return s.l.TakeEach(s.l.Now(), cost, charges, each)
}

func TestSharedLimiterPolicy(t *testing.T) {
	w := newLimitWorld(t)
	tiers := map[string]authz.LimitSet{"standard": authz.One("standard", ratelimit.Limit{Requests: 2, Window: time.Minute}), "enterprise": authz.One("enterprise", ratelimit.Limit{Requests: 2, Window: time.Minute})}
	// Two engines (two replicas) sharing one limiter admit the budget once.
	shared := localShared{ratelimit.New[string](func() time.Time { return w.now })}
	a := w.engine(t, authz.Config{RateLimits: authz.RateLimits{Tiers: tiers, Shared: shared}}, nil)
	b := w.engine(t, authz.Config{RateLimits: authz.RateLimits{Tiers: tiers, Shared: shared}}, nil)
	admitted := 0
	for _, e := range []*authz.Engine{a, b, a, b} {
		if decideFrom(t, e, "", map[string]string{"x-api-key": w.std.Secret.Reveal()}, nil).Allow() {
			admitted++
		}
	}
	if admitted != 2 {
		t.Fatalf("two replicas admitted %d of a budget of 2", admitted)
	}
	// Shared state down: closed refuses with 503, open falls back.
	down := &downLimiter{}
	closed := w.engine(t, authz.Config{RateLimits: authz.RateLimits{Tiers: tiers, Shared: down}}, nil)
	d, err := closed.Decide(context.Background(), &authz.Request{Path: "/x", Headers: map[string]string{"x-api-key": w.ent.Secret.Reveal()}})
	if d.Allow() || d.Status != 503 || !errors.Is(err, authz.ErrUnavailable) {
		t.Fatalf("fail closed: %+v %v", d.Reason, err)
	}
	open := w.engine(t, authz.Config{RateLimits: authz.RateLimits{Tiers: tiers, Shared: down, SharedFailOpen: true}}, nil)
	for i, want := range []bool{true, true, false} {
		if got := decideFrom(t, open, "", map[string]string{"x-api-key": w.ent.Secret.Reveal()}, nil).Allow(); got != want {
			t.Fatalf("fail open request %d: allow=%v, want the local budget of 2", i+1, got)
		}
	}
	if down.calls.Load() < 4 {
		t.Fatalf("the shared limiter was asked %d times", down.calls.Load())
	}
}

// TestQuietAllows: with QuietAllows an allowed request's answer carries no
// rate-limit headers, the limit still counts it, and the 429 that follows
// carries them all.
func TestQuietAllows(t *testing.T) {
	w := newLimitWorld(t)
	e := w.engine(t, authz.Config{RateLimits: authz.RateLimits{QuietAllows: true, Tiers: map[string]authz.LimitSet{
		"standard":   authz.One("standard", ratelimit.Limit{Requests: 2, Window: time.Minute}),
		"enterprise": authz.One("enterprise", ratelimit.Limit{Requests: 100, Window: time.Minute}),
	}}}, nil)
	key := map[string]string{"x-api-key": w.std.Secret.Reveal()}
	for i := range 2 {
		d := decideFrom(t, e, "", key, nil)
		if !d.Allow() {
			t.Fatalf("request %d of 2: %s", i+1, d.Reason)
		}
		for _, h := range d.ResponseHeaders {
			if strings.Contains(h.Name, "ratelimit") {
				t.Fatalf("allow %d carries %s with QuietAllows", i+1, h.Name)
			}
		}
	}
	d := decideFrom(t, e, "", key, nil)
	if d.Reason != authz.ReasonRateLimited || header(d.ResponseHeaders, "x-ratelimit-remaining") != "0" || header(d.ResponseHeaders, "retry-after") == "" {
		t.Fatalf("third request: %s, headers %v: want a 429 with every rate-limit header", d.Reason, d.ResponseHeaders)
	}
}
