package envoy_test

import (
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
)

// clock is a test clock the engine reads; tests move it by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// maxInWindow is the largest number of the sorted times ts inside any
// rolling window (t-w, t].
func maxInWindow(ts []time.Time, w time.Duration) int {
	best, lo := 0, 0
	for hi := range ts {
		for !ts[lo].After(ts[hi].Add(-w)) {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

func headerMap(opts []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	return m
}

// TestStandardTierPromiseThroughServer: AlfaOne's "Standard: 100
// requests/minute" holds in every rolling minute, through the real gRPC
// server, however the client paces itself. Before sliding windows, paced
// traffic got 198 in one minute (a full bucket plus a minute's refill).
func TestStandardTierPromiseThroughServer(t *testing.T) {
	start0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(16, 16))
	cases := []struct {
		name string
		at   func() []time.Duration // offsets of the requests from start0, ascending
		min  int                    // fewer admitted would be a limit stricter than documented
	}{
		{"paced 5/s for 60 s", func() []time.Duration { return paced(200*time.Millisecond, time.Minute) }, 100},
		{"paced 5/s for 3 min", func() []time.Duration { return paced(200*time.Millisecond, 3*time.Minute) }, 282},
		{"paced 2/s for 3 min", func() []time.Duration { return paced(500*time.Millisecond, 3*time.Minute) }, 282},
		{"bursts at the window's edges", func() []time.Duration {
			var out []time.Duration
			for _, at := range []time.Duration{59900 * time.Millisecond, 60100 * time.Millisecond, 119900 * time.Millisecond, 120100 * time.Millisecond} {
				for range 150 {
					out = append(out, at)
				}
			}
			return out
		}, 200},
		{"random gaps", func() []time.Duration {
			var out []time.Duration
			at := time.Duration(0)
			for at < 5*time.Minute {
				at += time.Duration(rng.Int64N(int64(1500 * time.Millisecond)))
				out = append(out, at)
			}
			return out
		}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{t: start0}
			h := start(t, authz.Config{Now: clk.now})
			std := h.key(t, keystore.KeySpec{Tier: "standard"})
			var admitted []time.Time
			for _, off := range tc.at() {
				clk.set(start0.Add(off))
				resp := h.check(t, checkRequest(map[string]string{"x-api-key": std.Secret.Reveal()}))
				if resp.GetOkResponse() != nil {
					admitted = append(admitted, clk.now())
				} else if resp.GetDeniedResponse().GetStatus().GetCode() != 429 {
					t.Fatalf("at %v: %v", off, resp)
				}
			}
			most := maxInWindow(admitted, time.Minute)
			t.Logf("%s: %d admitted, at most %d in any rolling minute (promise: 100)", tc.name, len(admitted), most)
			if most > 100 {
				t.Fatalf("%d requests admitted within one rolling minute, promise is 100", most)
			}
			if len(admitted) < tc.min {
				t.Fatalf("only %d admitted, want at least %d", len(admitted), tc.min)
			}
		})
	}
}

func paced(every, for_ time.Duration) []time.Duration {
	var out []time.Duration
	for at := time.Duration(0); at < for_; at += every {
		out = append(out, at)
	}
	return out
}

// TestConcurrentClientsThroughServer: many clients of one key at once get
// exactly the limit, no more, whatever the interleaving.
func TestConcurrentClientsThroughServer(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 25, 12, 0, 30, 0, time.UTC)}
	h := start(t, authz.Config{Now: clk.now})
	std := h.key(t, keystore.KeySpec{Tier: "standard"})
	var mu sync.Mutex
	allowed := 0
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 20 {
				if h.check(t, checkRequest(map[string]string{"x-api-key": std.Secret.Reveal()})).GetOkResponse() != nil {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed != 100 {
		t.Fatalf("320 concurrent requests in one instant: %d admitted, want exactly 100", allowed)
	}
}

// TestNamedLimitsThroughServer: a tier of two named limits charges both,
// reports both, and a request refused by one spends nothing in the other;
// a key's own limits override and add to its tier's.
func TestNamedLimitsThroughServer(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clk := &clock{t: t0}
	tiers := map[string]authz.LimitSet{
		"standard": {
			{Name: "per_minute", Limit: ratelimit.Limit{Requests: 10, Window: time.Minute}},
			{Name: "per_day", Limit: ratelimit.Limit{Requests: 15, Window: 24 * time.Hour}},
		},
		"enterprise": authz.One("enterprise", ratelimit.Limit{Requests: 1000, Window: time.Minute}),
	}
	h := start(t, authz.Config{Now: clk.now, RateLimits: authz.RateLimits{Tiers: tiers}})
	k := h.key(t, keystore.KeySpec{Tier: "standard"})
	call := func() (bool, map[string]string) {
		resp := h.check(t, checkRequest(map[string]string{"x-api-key": k.Secret.Reveal()}))
		if ok := resp.GetOkResponse(); ok != nil {
			return true, headerMap(ok.GetResponseHeadersToAdd())
		}
		return false, headerMap(resp.GetDeniedResponse().GetHeaders())
	}
	for i := range 10 {
		ok, hdr := call()
		if !ok {
			t.Fatalf("request %d refused: %v", i+1, hdr)
		}
		if i == 0 {
			if hdr["ratelimit-policy"] != `"per_minute";q=10;w=60, "per_day";q=15;w=86400` {
				t.Fatalf("policy %q", hdr["ratelimit-policy"])
			}
			if hdr["ratelimit"] != `"per_minute";r=9;t=64, "per_day";r=14;t=91800` {
				t.Fatalf("ratelimit %q", hdr["ratelimit"])
			}
		}
	}
	// The minute is spent: refused, and 20 refusals spend none of the day.
	for range 20 {
		ok, hdr := call()
		if ok || hdr["x-ratelimit-limit"] != "10" || !strings.Contains(hdr["ratelimit"], `"per_day";r=5;`) {
			t.Fatalf("11th request in the minute: allowed=%v %v", ok, hdr)
		}
	}
	clk.set(t0.Add(2 * time.Minute))
	for i := range 5 {
		if ok, hdr := call(); !ok {
			t.Fatalf("request %d of the day's last 5 refused: %v", i+1, hdr)
		}
	}
	ok, hdr := call()
	if ok || hdr["x-ratelimit-limit"] != "15" {
		t.Fatalf("16th request of the day: allowed=%v %v", ok, hdr)
	}

	// A key's own limits: per_minute raised to 3 here, per_day off, and
	// a limit of its own added.
	own := h.key(t, keystore.KeySpec{Tier: "standard", Limits: map[string]ratelimit.Limit{
		"per_minute": {Requests: 3, Window: time.Minute},
		"per_day":    {},
		"per_second": {Requests: 2, Window: time.Second},
	}})
	resp := h.check(t, checkRequest(map[string]string{"x-api-key": own.Secret.Reveal()}))
	got := headerMap(resp.GetOkResponse().GetResponseHeadersToAdd())
	if got["ratelimit-policy"] != `"per_minute";q=3;w=60, "per_second";q=2;w=1` {
		t.Fatalf("a key's own limits: policy %q", got["ratelimit-policy"])
	}
	if h.check(t, checkRequest(map[string]string{"x-api-key": own.Secret.Reveal()})).GetOkResponse() == nil {
		t.Fatal("second request within per_second's 2 refused")
	}
	if h.check(t, checkRequest(map[string]string{"x-api-key": own.Secret.Reveal()})).GetOkResponse() != nil {
		t.Fatal("third request in one second admitted past per_second")
	}
}

// TestUserLimitsThroughServer: keys of one user share the user's budget,
// so creating keys multiplies nothing; another user has its own; a user's
// record overrides and adds to the default, from the next Check on.
func TestUserLimitsThroughServer(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clk := &clock{t: t0}
	h := start(t, authz.Config{Now: clk.now, RateLimits: authz.RateLimits{
		User: authz.LimitSet{{Name: "per_minute", Limit: ratelimit.Limit{Requests: 5, Window: time.Minute}}},
	}})
	live := h.key(t, keystore.KeySpec{Tier: "enterprise", UserID: "dev-1"})
	test := h.key(t, keystore.KeySpec{Tier: "enterprise", UserID: "dev-1", Environment: "test"})
	ci := h.key(t, keystore.KeySpec{Tier: "enterprise", UserID: "dev-1"})
	other := h.key(t, keystore.KeySpec{Tier: "enterprise", UserID: "dev-2"})
	nobody := h.key(t, keystore.KeySpec{Tier: "enterprise"})
	ok := func(k keystore.CreatedKey) (bool, map[string]string) {
		resp := h.check(t, checkRequest(map[string]string{"x-api-key": k.Secret.Reveal()}))
		if o := resp.GetOkResponse(); o != nil {
			return true, headerMap(o.GetResponseHeadersToAdd())
		}
		return false, headerMap(resp.GetDeniedResponse().GetHeaders())
	}
	n := 0
	for i := range 12 {
		if a, hdr := ok([]keystore.CreatedKey{live, test, ci}[i%3]); a {
			n++
			if i == 0 && hdr["ratelimit-policy"] != `"enterprise";q=1000;w=60, "user.per_minute";q=5;w=60` {
				t.Fatalf("policy %q", hdr["ratelimit-policy"])
			}
		} else if hdr["x-ratelimit-limit"] != "5" {
			t.Fatalf("refusal by the user's budget: %v", hdr)
		}
	}
	if n != 5 {
		t.Fatalf("three keys of one user: %d admitted, want the user's 5", n)
	}
	if a, _ := ok(other); !a {
		t.Fatal("another user's key was limited by dev-1's budget")
	}
	if a, hdr := ok(nobody); !a || hdr["ratelimit-policy"] != `"enterprise";q=1000;w=60` {
		t.Fatalf("a key with no user: allowed=%v policy %q", a, hdr["ratelimit-policy"])
	}

	// dev-1's record raises its per_minute to 8 and adds a per_hour, which
	// the next Check applies.
	if _, _, err := h.store.PutUser(t.Context(), h.tenant, "dev-1", keystore.UserSpec{Limits: map[string]ratelimit.Limit{
		"per_minute": {Requests: 8, Window: time.Minute},
		"per_hour":   {Requests: 4, Window: time.Hour}, // counts from now on
	}}); err != nil {
		t.Fatal(err)
	}
	n = 0
	for i := range 10 {
		if a, _ := ok([]keystore.CreatedKey{live, ci}[i%2]); a {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("after raising dev-1 to 8 a minute: %d more admitted, want 3", n)
	}
	clk.set(t0.Add(2 * time.Minute))
	n = 0
	for range 5 {
		if a, _ := ok(test); a {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("dev-1's per_hour of 4 with 3 spent: %d admitted, want 1", n)
	}
	// per_minute: 0 turns the default off for dev-2.
	if _, _, err := h.store.PutUser(t.Context(), h.tenant, "dev-2", keystore.UserSpec{Limits: map[string]ratelimit.Limit{"per_minute": {}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if a, hdr := ok(other); !a {
			t.Fatalf("dev-2 with its user limit off: request %d refused %v", i+1, hdr)
		}
	}
}
