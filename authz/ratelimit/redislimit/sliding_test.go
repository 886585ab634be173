package redislimit

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/internal/testredis"
)

var minute = ratelimit.Limit{Requests: 100, Window: time.Minute} // a sliding window

// event is a request admitted at t (µs) for cost.
type event struct {
	t    int64
	cost int64
}

// maxRolling is the most cost admitted in any rolling window (t−w, t]: a
// two-pointer scan over the events sorted by time.
func maxRolling(ev []event, w time.Duration) int64 {
	ev = slices.Clone(ev)
	slices.SortFunc(ev, func(a, b event) int { return int(min(max(a.t-b.t, -1), 1)) })
	wus := w.Microseconds()
	var sum, best int64
	lo := 0
	for hi := range ev {
		sum += ev[hi].cost
		for ev[lo].t <= ev[hi].t-wus {
			sum -= ev[lo].cost
			lo++
		}
		if hi+1 < len(ev) && ev[hi+1].t == ev[hi].t {
			continue
		}
		best = max(best, sum)
	}
	return best
}

// fakeClock gives a Limiter a clock of the test's (µs), starting at the
// real time rounded up to a minute, and never behind the real one, so
// that Redis, expiring keys by its own clock, never drops a bucket the
// fake clock still counts.
type fakeClock struct{ us int64 }

func newFake(l *Limiter) *fakeClock {
	c := &fakeClock{us: time.Now().Add(time.Minute).Truncate(time.Minute).UnixMicro()}
	l.nowUS = func() int64 { return c.us }
	return c
}

func (c *fakeClock) add(d time.Duration) { c.us += d.Microseconds() }

func newLimiter(t *testing.T, s *testredis.Server) *Limiter {
	return New(s.Client(t), Options{Prefix: fmt.Sprintf("t%d:", time.Now().UnixNano()), Timeout: slow})
}

func TestPacedClient(t *testing.T) {
	s := testredis.Start(t)
	for _, d := range []time.Duration{time.Minute, 3 * time.Minute} {
		l := newLimiter(t, s)
		c := newFake(l)
		var ev []event
		for end := c.us + d.Microseconds(); c.us < end; c.add(200 * time.Millisecond) {
			if r := take(t, l, 1, one("k", minute)); r.Allowed {
				ev = append(ev, event{c.us, 1})
			}
		}
		got := maxRolling(ev, time.Minute)
		t.Logf("Redis sliding window, 5 req/s for %v against 100/1m: %d admitted, at most %d in any rolling minute", d, len(ev), got)
		if got > 100 || len(ev) < int(d/time.Minute)*100*16/17 {
			t.Fatalf("paced 5/s for %v: %d admitted, %d in one rolling minute", d, len(ev), got)
		}
	}
}

func TestEdgeBursts(t *testing.T) {
	s := testredis.Start(t)
	const L = 3750 * time.Millisecond
	for _, tc := range []struct {
		name   string
		bursts []time.Duration
		want   int
	}{
		{"59.999s/60.001s", []time.Duration{59999 * time.Millisecond, 60001 * time.Millisecond}, 100},
		{"slot edge", []time.Duration{L - time.Microsecond, L}, 100},
		{"window edge", []time.Duration{0, time.Minute - time.Microsecond, time.Minute}, 100},
		{"slot leaves", []time.Duration{L - time.Microsecond, 18*L - time.Microsecond, 18 * L}, 200},
	} {
		l := newLimiter(t, s)
		c := newFake(l)
		start := c.us
		var ev []event
		for _, b := range tc.bursts {
			c.us = start + b.Microseconds()
			for range 100 {
				if r := take(t, l, 1, one("k", minute)); r.Allowed {
					ev = append(ev, event{c.us, 1})
				}
			}
		}
		got := maxRolling(ev, time.Minute)
		t.Logf("Redis edge bursts %s: %d admitted, at most %d in any rolling minute", tc.name, len(ev), got)
		if got > 100 || len(ev) != tc.want {
			t.Fatalf("%s: %d admitted, %d in one rolling minute; want %d, at most 100", tc.name, len(ev), got, tc.want)
		}
	}
}

// TestSlidingProperties: random costs and gaps against windows from a
// second to a day; every refusal's RetryAfter is exact to the
// microsecond: a take 1 µs earlier is refused, one at RetryAfter admitted.
func TestSlidingProperties(t *testing.T) {
	s := testredis.Start(t)
	rng := rand.New(rand.NewPCG(3, 5))
	for _, lim := range []ratelimit.Limit{
		{Requests: 10, Window: time.Second},
		{Requests: 100, Window: time.Minute},
		{Requests: 1000, Window: 24 * time.Hour},
	} {
		t.Run(fmt.Sprint(lim.Requests, "/", lim.Window), func(t *testing.T) {
			l := newLimiter(t, s)
			c := newFake(l)
			c.add(time.Duration(rng.Int64N(int64(lim.Window))))
			n := int64(lim.Requests)
			L := lim.Window / ratelimit.Slots
			var ev []event
			exact := 0
			for step := range 600 {
				cost := 1 + rng.Int64N(max(1, n/4))
				if rng.IntN(10) == 0 {
					c.add(time.Duration(rng.Int64N(int64(lim.Window))))
				} else {
					c.add(time.Duration(rng.Int64N(int64(2 * L))))
				}
				r := take(t, l, int(cost), one("k", lim))
				if r.Allowed {
					ev = append(ev, event{c.us, cost})
					continue
				}
				if r.RetryAfter <= 0 || r.RetryAfter%time.Microsecond != 0 {
					t.Fatalf("step %d: RetryAfter %v", step, r.RetryAfter)
				}
				if rng.IntN(3) != 0 {
					continue
				}
				c.add(r.RetryAfter - time.Microsecond)
				if r2 := take(t, l, int(cost), one("k", lim)); r2.Allowed {
					t.Fatalf("step %d: admitted 1µs before RetryAfter %v: %+v", step, r.RetryAfter, r2)
				}
				c.add(time.Microsecond)
				if r2 := take(t, l, int(cost), one("k", lim)); !r2.Allowed {
					t.Fatalf("step %d: refused at RetryAfter %v: %+v", step, r.RetryAfter, r2)
				}
				ev = append(ev, event{c.us, cost})
				exact++
			}
			got := maxRolling(ev, lim.Window)
			t.Logf("%d admitted, %d RetryAfters checked, at most %d of %d in any rolling %v", len(ev), exact, got, n, lim.Window)
			if got > n || exact < 20 {
				t.Fatalf("%d in one rolling %v (want at most %d); %d RetryAfters checked", got, lim.Window, n, exact)
			}
		})
	}
}

// TestConcurrentClients: goroutines, each a replica with its own clock,
// race on shared windows, alone and in multi-bucket charges mixed with a
// token bucket. Each phase's requests share a slot; phases move forward
// by 0 to 3 slots. Every window keeps its promise.
func TestConcurrentClients(t *testing.T) {
	s := testredis.Start(t)
	client := s.Client(t)
	limits := map[string]ratelimit.Limit{
		"key:a":  {Requests: 20, Window: time.Second},
		"org":    {Requests: 40, Window: time.Second},
		"tenant": {Requests: 50, Window: 2 * time.Second},
		"tb":     {Requests: 100, Window: time.Second, Algorithm: ratelimit.TokenBucket},
	}
	sets := [][]string{{"key:a"}, {"key:a", "org", "tenant"}, {"org", "tenant", "tb"}, {"org"}}
	prefix := fmt.Sprintf("c%d:", time.Now().UnixNano())
	const L = int64(62500) // µs, key:a's and org's slot
	start := time.Now().Add(time.Minute).Truncate(time.Minute).UnixMicro()
	var mu sync.Mutex
	admitted := map[string][]event{}
	total := 0
	at := start
	for phase := range 60 {
		at = (at + int64(rand.IntN(4))*L) / L * L
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(phase), uint64(g)))
				var now int64
				l := New(client, Options{Prefix: prefix, Timeout: slow})
				l.nowUS = func() int64 { return now }
				for range 4 {
					set := sets[rng.IntN(len(sets))]
					charges := make([]ratelimit.Charge[string], len(set))
					for i, name := range set {
						charges[i] = ratelimit.Charge[string]{Key: name, Limit: limits[name]}
					}
					cost := 1 + rng.IntN(3)
					now = at + rng.Int64N(L)
					r, err := l.Take(t.Context(), cost, charges, nil)
					if err != nil {
						t.Error(err)
						return
					}
					if r.Allowed {
						mu.Lock()
						for _, name := range set {
							admitted[name] = append(admitted[name], event{now, int64(cost)})
						}
						total++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
	}
	for name, lim := range limits {
		if lim.Algorithm == ratelimit.TokenBucket {
			continue
		}
		got := maxRolling(admitted[name], lim.Window)
		t.Logf("Redis, 8 replicas: %s (%d per %v): %d admitted, at most %d in any rolling window", name, lim.Requests, lim.Window, len(admitted[name]), got)
		if got > int64(lim.Requests) {
			t.Errorf("%s: %d in one rolling %v, want at most %d", name, got, lim.Window, lim.Requests)
		}
	}
	if total < 100 {
		t.Fatalf("%d of 1920 admitted: a poor test", total)
	}
}

// TestWindowMemory: a window's hash holds only its counted slots and L,
// and expires when the last of them leaves.
func TestWindowMemory(t *testing.T) {
	s := testredis.Start(t)
	rc := s.Client(t)
	l := New(rc, Options{Prefix: "m:", Timeout: slow})
	c := newFake(l)
	lim := ratelimit.Limit{Requests: 1000, Window: 160 * time.Millisecond} // 10 ms slots
	for range 200 {
		take(t, l, 1, one("w", lim))
		c.add(3 * time.Millisecond)
		if n := rc.HLen(t.Context(), "m:w").Val(); n > ratelimit.Slots+2 {
			t.Fatalf("%d fields: stale slots kept", n)
		}
	}
	c.add(-3 * time.Millisecond)
	// The last take was in the slot starting at or before the fake now:
	// the key lives until that slot has left, 17 slots after it began,
	// and a second more (SLACK).
	slot := c.us / 10000 * 10000
	until := time.Duration(slot+17*10000-c.us)*time.Microsecond + time.Second
	ttl := rc.PTTL(t.Context(), "m:w").Val()
	if ttl <= time.Second || ttl > until+time.Millisecond {
		t.Fatalf("PTTL %v, want in (1s, %v]", ttl, until)
	}
	// A refusal writes nothing.
	if r := take(t, l, 2000, one("never", lim)); r.Allowed || rc.Exists(t.Context(), "m:never").Val() != 0 {
		t.Fatalf("cost 2000 of 1000: %+v, or its key was created", r)
	}
}

// TestSwitchAlgorithm: an operator switches a limit between algorithms
// (or changes its window): the key of the other kind reads as no state and
// is replaced, never an error.
func TestSwitchAlgorithm(t *testing.T) {
	s := testredis.Start(t)
	l := New(s.Client(t), Options{Timeout: slow})
	tb := ratelimit.Limit{Requests: 3, Window: time.Hour, Algorithm: ratelimit.TokenBucket}
	sw := ratelimit.Limit{Requests: 3, Window: time.Hour}
	sw2 := ratelimit.Limit{Requests: 3, Window: 2 * time.Hour}
	for i, lim := range []ratelimit.Limit{tb, sw, tb, sw, sw2, sw} {
		if r := take(t, l, 2, one("k", lim)); !r.Allowed || r.Remaining != 1 {
			t.Fatalf("take %d with %+v: %+v, want a fresh bucket", i, lim, r)
		}
	}
	if r := take(t, l, 2, one("k", sw)); r.Allowed {
		t.Fatalf("same window again: %+v, want refused", r)
	}
	// Both kinds on one name in one Take: charged once, no error.
	if _, err := l.Take(t.Context(), 1, []ratelimit.Charge[string]{{Key: "x", Limit: sw}, {Key: "x", Limit: tb}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Take(t.Context(), 1, []ratelimit.Charge[string]{{Key: "x", Limit: tb}, {Key: "x", Limit: sw}}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestSlidingHugeCost(t *testing.T) {
	s := testredis.Start(t)
	l := New(s.Client(t), Options{Timeout: slow})
	r := take(t, l, 1<<62, one("k", minute))
	if r.Allowed || r.Remaining != 100 || r.RetryAfter != time.Minute+3750*time.Millisecond {
		t.Fatalf("cost 2^62: %+v, want refused, retry after a window and a slot", r)
	}
	if r := take(t, l, 100, one("k", minute)); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("after: %+v", r)
	}
}
