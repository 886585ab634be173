package ratelimit

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// event is a request admitted at t (unix ns) for cost.
type event struct {
	t    int64
	cost int64
}

// maxRolling is the most cost admitted in any rolling window (t−w, t]:
// the promise a sliding window keeps. A two-pointer scan over the events
// sorted by time; windows end at an event, where their sum can only grow.
func maxRolling(ev []event, w time.Duration) int64 {
	ev = slices.Clone(ev)
	slices.SortFunc(ev, func(a, b event) int { return int(min(max(a.t-b.t, -1), 1)) })
	var sum, best int64
	lo := 0
	for hi := range ev {
		sum += ev[hi].cost
		for ev[lo].t <= ev[hi].t-int64(w) {
			sum -= ev[lo].cost
			lo++
		}
		if hi+1 < len(ev) && ev[hi+1].t == ev[hi].t {
			continue // the window ending at t holds every event at t
		}
		best = max(best, sum)
	}
	return best
}

// inWindow sums the events in (t−w, t].
func inWindow(ev []event, t int64, w time.Duration) int64 {
	var sum int64
	for _, e := range ev {
		if e.t > t-int64(w) && e.t <= t {
			sum += e.cost
		}
	}
	return sum
}

var minute = Limit{Requests: 100, Window: time.Minute} // a sliding window

// paced takes cost 1 every gap for d from the clock's start, and returns
// what was admitted.
func paced(t *testing.T, lim Limit, gap, d time.Duration) []event {
	t.Helper()
	c := newClock()
	l := New[string](c.now)
	var ev []event
	for at := c.t; at.Before(c.t.Add(d)); at = at.Add(gap) {
		r, err := l.TakeAt(at, 1, Charge[string]{"k", lim})
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed {
			ev = append(ev, event{at.UnixNano(), 1})
		}
	}
	return ev
}

// TestPacedClient is the bug this algorithm fixes: a client at 5 req/s
// against 100 per minute got 198 in one rolling minute from the token
// bucket. The sliding window admits at most 100 in any rolling minute.
func TestPacedClient(t *testing.T) {
	for _, d := range []time.Duration{time.Minute, 3 * time.Minute} {
		ev := paced(t, minute, 200*time.Millisecond, d)
		got := maxRolling(ev, time.Minute)
		t.Logf("sliding window, 5 req/s for %v against 100/1m: %d admitted, at most %d in any rolling minute", d, len(ev), got)
		if got > 100 {
			t.Fatalf("paced 5/s for %v: %d in one rolling minute, want at most 100", d, got)
		}
		// Refusing early by at most a slot: after the first minute (and
		// its slot) a client paced at 5/s gets 100 per window plus a slot.
		if min := int(d/time.Minute) * 100 * Slots / (Slots + 1); len(ev) < min {
			t.Fatalf("paced 5/s for %v: %d admitted, want at least %d", d, len(ev), min)
		}
	}
}

// TestTokenBucketStillBursts: TokenBucket keeps its behaviour, bursts
// above the average included: that is what an operator picks it for.
func TestTokenBucketStillBursts(t *testing.T) {
	ev := paced(t, standard, 200*time.Millisecond, time.Minute)
	got := maxRolling(ev, time.Minute)
	t.Logf("token bucket, 5 req/s for 1m against 100/1m: %d in one rolling minute", got)
	if got < 190 {
		t.Fatalf("token bucket paced 5/s: %d in one rolling minute, want about 200 (a full bucket plus the refill)", got)
	}
}

func TestSlidingStandard(t *testing.T) {
	c := newClock() // on a minute: slots of 3.75 s start at c.t
	l := New[string](c.now)
	L := time.Duration(minute.slot())
	if L != 3750*time.Millisecond {
		t.Fatalf("slot of a minute = %v, want 3.75s", L)
	}
	for i := 1; i <= 100; i++ {
		r, err := l.Take(1, Charge[string]{"k", minute})
		if err != nil || !r.Allowed || r.Remaining != int64(100-i) || r.Limit != 100 || r.Reset != 17*L-time.Duration(i-1)*10*time.Millisecond {
			t.Fatalf("request %d: %+v %v", i, r, err)
		}
		c.add(10 * time.Millisecond)
	}
	// 1 s later: all 100 sit in the first slot, which leaves the count
	// 17 slots after it began.
	c.add(time.Second - 100*10*time.Millisecond)
	r, _ := l.Take(1, Charge[string]{"k", minute})
	if want := 17*L - time.Second; r.Allowed || r.Remaining != 0 || r.RetryAfter != want || r.Reset != want {
		t.Fatalf("101st: %+v, want refused, retry after and reset in %v", r, want)
	}
	c.add(r.RetryAfter - 1)
	if r, _ := l.Take(1, Charge[string]{"k", minute}); r.Allowed {
		t.Fatalf("1ns before RetryAfter: %+v", r)
	}
	c.add(1)
	if r, _ := l.Take(100, Charge[string]{"k", minute}); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("at RetryAfter, 100 at once: %+v", r)
	}
	// A cost above the limit never fits, and costs nothing.
	r, _ = l.Take(101, Charge[string]{"fresh", minute})
	if r.Allowed || r.Remaining != 100 || r.Reset != 0 || r.RetryAfter != time.Minute+L {
		t.Fatalf("cost 101 of 100: %+v", r)
	}
	if r, _ := l.Take(1<<62, Charge[string]{"fresh", minute}); r.Allowed || r.Remaining != 100 {
		t.Fatalf("cost 2^62: %+v", r)
	}
	if r, _ := l.Take(100, Charge[string]{"fresh", minute}); !r.Allowed {
		t.Fatalf("after refused costs: %+v", r)
	}
}

// TestEdgeBursts: bursts at the edges of windows and slots, where a fixed
// window would admit twice its limit.
func TestEdgeBursts(t *testing.T) {
	start := newClock().t
	L := time.Duration(minute.slot())
	for _, tc := range []struct {
		name   string
		bursts []time.Duration // 100 requests at once at each
		want   int             // admitted in all
	}{
		{"59.999s/60.001s", []time.Duration{59999 * time.Millisecond, 60001 * time.Millisecond}, 100},
		{"slot edge", []time.Duration{L - 1, L}, 100},
		{"window edge", []time.Duration{0, time.Minute - 1, time.Minute}, 100},
		// The first burst leaves the count 17 slots after its slot began.
		{"slot leaves", []time.Duration{L - 1, 18*L - 1, 18 * L}, 200},
		{"late in its slot", []time.Duration{2*L - 1, 18*L - 1, 18 * L}, 200},
	} {
		l := New[string](nil)
		var ev []event
		for _, b := range tc.bursts {
			at := start.Add(b)
			for range 100 {
				if r, _ := l.TakeAt(at, 1, Charge[string]{"k", minute}); r.Allowed {
					ev = append(ev, event{at.UnixNano(), 1})
				}
			}
		}
		got := maxRolling(ev, time.Minute)
		t.Logf("edge bursts %s: %d admitted, at most %d in any rolling minute", tc.name, len(ev), got)
		if got > 100 || len(ev) != tc.want {
			t.Fatalf("%s: %d admitted, %d in one rolling minute; want %d admitted, at most 100 in any minute", tc.name, len(ev), got, tc.want)
		}
	}
}

// TestSlidingProperties drives random costs and gaps against windows from
// a second to a day, and checks every answer against the admitted history:
// never more than N in a rolling window, never refused unless the last
// W+L already hold too much, RetryAfter and Reset exact to the nanosecond.
func TestSlidingProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for _, lim := range []Limit{
		{Requests: 10, Window: time.Second},
		{Requests: 100, Window: time.Minute},
		{Requests: 7, Window: time.Minute + 13},
		{Requests: 1000, Window: 24 * time.Hour},
		{Requests: 1, Window: 5},
	} {
		t.Run(fmt.Sprint(lim.Requests, "/", lim.Window), func(t *testing.T) {
			l := New[string](nil)
			n := int64(lim.Requests)
			L := lim.slot()
			at := newClock().t.Add(time.Duration(rng.Int64N(int64(lim.Window))))
			var ev []event
			refused := 0
			for step := range 3000 {
				cost := 1 + rng.Int64N(max(1, n/4))
				if rng.IntN(50) == 0 {
					cost = n + 1 + rng.Int64N(n)
				}
				// Gaps from nothing to two slots, now and then a window.
				switch rng.IntN(10) {
				case 0:
				case 1:
					at = at.Add(time.Duration(rng.Int64N(int64(lim.Window) + 1)))
				default:
					at = at.Add(time.Duration(rng.Int64N(2*L + 1)))
				}
				now := at.UnixNano()
				r, err := l.TakeAt(at, int(cost), Charge[string]{"k", lim})
				if err != nil {
					t.Fatal(err)
				}
				peek := func(d time.Duration, cost int64) bool {
					p, _ := l.PeekAt(at.Add(d), int(cost), Charge[string]{"k", lim})
					return p.Allowed
				}
				if r.Allowed {
					ev = append(ev, event{now, cost})
					// Remaining counts what the last W+L hold, at most.
					lo, hi := n-inWindow(ev, now, time.Duration((Slots+1)*L)), n-inWindow(ev, now, lim.Window)
					if r.Remaining < lo || r.Remaining > hi {
						t.Fatalf("step %d: remaining %d, want in [%d, %d]", step, r.Remaining, lo, hi)
					}
					if r.Reset <= 0 || peek(r.Reset-1, n) || !peek(r.Reset, n) {
						t.Fatalf("step %d: Reset %v is not when the bucket is full again", step, r.Reset)
					}
					continue
				}
				refused++
				if held := inWindow(ev, now, time.Duration((Slots+1)*L)); held+cost <= n {
					t.Fatalf("step %d: cost %d refused with %d in the last W+L (%v): refused earlier than a slot", step, cost, held, time.Duration((Slots+1)*L))
				}
				if cost > n {
					if r.RetryAfter != lim.Window+time.Duration(L) {
						t.Fatalf("step %d: cost %d > %d: RetryAfter %v", step, cost, n, r.RetryAfter)
					}
					continue
				}
				if r.RetryAfter <= 0 || peek(r.RetryAfter-1, cost) || !peek(r.RetryAfter, cost) {
					t.Fatalf("step %d: cost %d: RetryAfter %v is not exact: %+v", step, cost, r.RetryAfter, r)
				}
			}
			got := maxRolling(ev, lim.Window)
			t.Logf("%d admitted, %d refused, at most %d of %d in any rolling %v", len(ev), refused, got, n, lim.Window)
			if got > n {
				t.Fatalf("%d in one rolling %v, want at most %d", got, lim.Window, n)
			}
			if refused < 100 || len(ev) < 100 {
				t.Fatalf("%d admitted, %d refused: a poor sequence", len(ev), refused)
			}
		})
	}
}

// TestConcurrentClients: goroutines race on shared buckets, alone and in
// multi-bucket charges of both algorithms. Each phase's requests share a
// slot (they race in any order), phases move forward by 0 to 3 slots.
// Every bucket keeps its promise, and holds exactly what was admitted
// with it: a refused multi-charge spent nothing anywhere.
func TestConcurrentClients(t *testing.T) {
	limits := map[string]Limit{
		"key:a":  {Requests: 20, Window: time.Second},
		"key:b":  {Requests: 30, Window: time.Second},
		"org":    {Requests: 40, Window: time.Second},
		"tenant": {Requests: 50, Window: 2 * time.Second},
		"tb":     {Requests: 100, Window: time.Second, Algorithm: TokenBucket},
	}
	sets := [][]string{{"key:a"}, {"key:a", "org", "tenant"}, {"key:b", "org", "tenant", "tb"}, {"key:b"}, {"org", "tb"}}
	l := New[string](nil)
	L := time.Duration(limits["key:a"].slot()) // 62.5 ms; tenant's is twice that
	var mu sync.Mutex
	admitted := map[string][]event{}
	at := newClock().t
	total := 0
	for phase := range 200 {
		at = at.Add(time.Duration(rand.IntN(4)) * L).Truncate(L)
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(phase), uint64(g)))
				for range 4 {
					set := sets[rng.IntN(len(sets))]
					charges := make([]Charge[string], len(set))
					for i, name := range set {
						charges[i] = Charge[string]{name, limits[name]}
					}
					cost := 1 + rng.IntN(3)
					now := at.Add(time.Duration(rng.Int64N(int64(L))))
					r, err := l.TakeAt(now, cost, charges...)
					if err != nil {
						t.Error(err)
						return
					}
					if r.Allowed {
						mu.Lock()
						for _, name := range set {
							admitted[name] = append(admitted[name], event{now.UnixNano(), int64(cost)})
						}
						total++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
	}
	end := at.Add(L - 1)
	for name, lim := range limits {
		if lim.Algorithm == TokenBucket {
			continue
		}
		got := maxRolling(admitted[name], lim.Window)
		t.Logf("16 goroutines, %s (%d per %v): %d admitted in all, at most %d in any rolling window", name, lim.Requests, lim.Window, len(admitted[name]), got)
		if got > int64(lim.Requests) {
			t.Errorf("%s: %d in one rolling %v, want at most %d", name, got, lim.Window, lim.Requests)
		}
		// What the bucket counts now is exactly what was admitted in its
		// counted slots.
		sl := lim.slot()
		cur := floorDiv(end.UnixNano(), sl)
		var held int64
		for _, e := range admitted[name] {
			if floorDiv(e.t, sl) >= cur-Slots {
				held += e.cost
			}
		}
		r, _ := l.PeekAt(end, 1, Charge[string]{name, lim})
		if want := max(0, int64(lim.Requests)-held-1); r.Allowed && r.Remaining != want || !r.Allowed && held < int64(lim.Requests) {
			t.Errorf("%s: %+v, want %d held (remaining %d after a peek of 1)", name, r, held, want)
		}
	}
	if total < 400 {
		t.Fatalf("%d of 12800 admitted: a poor test", total)
	}
}

// TestMixedAlgorithms: a token bucket and a sliding window charged
// together, all or nothing, each described in each.
func TestMixedAlgorithms(t *testing.T) {
	c := newClock()
	l := New[string](c.now)
	tb := Limit{Requests: 60, Window: time.Minute, Burst: 5, Algorithm: TokenBucket}
	sw := Limit{Requests: 8, Window: time.Minute}
	charges := []Charge[string]{{"tb", tb}, {"sw", sw}}
	each := make([]Result, 2)
	for i := range 5 {
		r, err := l.TakeEach(c.now(), 1, charges, each)
		if err != nil || !r.Allowed || each[0].Remaining != int64(4-i) || each[1].Remaining != int64(7-i) || each[1].Limit != 8 || each[0].Limit != 5 {
			t.Fatalf("take %d: %+v %+v", i, r, each)
		}
	}
	// The token bucket is empty: refused, and the window not charged.
	r, _ := l.TakeEach(c.now(), 1, charges, each)
	if r.Allowed || r.Index != 0 || !each[1].Allowed || each[1].Remaining != 2 {
		t.Fatalf("6th: %+v %+v", r, each)
	}
	c.add(3 * time.Second) // 3 tokens back
	for range 3 {
		if r, _ := l.Take(1, charges...); !r.Allowed {
			t.Fatalf("after refill: %+v", r)
		}
	}
	// Now the window is full (8), the bucket has tokens again later.
	c.add(time.Second)
	r, _ = l.TakeEach(c.now(), 1, charges, each)
	if r.Allowed || r.Index != 1 || each[1].Remaining != 0 || !each[0].Allowed {
		t.Fatalf("window full: %+v %+v", r, each)
	}
}

// TestLimitChangeStartsAfresh: a window whose slot length changed (a new
// Window) restarts; one whose Requests changed keeps its counts.
func TestLimitChange(t *testing.T) {
	c := newClock()
	l := New[string](c.now)
	l.Take(10, Charge[string]{"k", Limit{Requests: 10, Window: time.Minute}})
	if r, _ := l.Take(1, Charge[string]{"k", Limit{Requests: 20, Window: time.Minute}}); !r.Allowed || r.Remaining != 9 {
		t.Fatalf("raised requests: %+v, want the 10 already admitted counted", r)
	}
	if r, _ := l.Take(1, Charge[string]{"k", Limit{Requests: 5, Window: time.Minute}}); r.Allowed {
		t.Fatalf("lowered requests: %+v, want refused", r)
	}
	if r, _ := l.Take(1, Charge[string]{"k", Limit{Requests: 10, Window: time.Hour}}); !r.Allowed || r.Remaining != 9 {
		t.Fatalf("new window: %+v, want a fresh bucket", r)
	}
}

// TestClockBackwards: a time before the bucket's newest slot counts in
// that slot; nothing panics on times before 1970 either.
func TestClockBackwards(t *testing.T) {
	l := New[string](nil)
	at := newClock().t
	lim := Limit{Requests: 2, Window: time.Minute}
	l.TakeAt(at, 1, Charge[string]{"k", lim})
	l.TakeAt(at.Add(-time.Hour), 1, Charge[string]{"k", lim})
	if r, _ := l.TakeAt(at.Add(time.Minute), 1, Charge[string]{"k", lim}); r.Allowed {
		t.Fatalf("a minute after two requests (one stamped an hour early): %+v", r)
	}
	old := time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 4 {
		r, err := l.TakeAt(old.Add(time.Duration(i)*time.Second), 1, Charge[string]{"old", lim})
		if err != nil || r.Allowed != (i < 2) || r.Reset <= 0 {
			t.Fatalf("before 1970, take %d: %+v %v", i, r, err)
		}
	}
}

func TestSlidingValidate(t *testing.T) {
	for _, tc := range []struct {
		lim  Limit
		want string
	}{
		{Limit{Requests: 10, Window: time.Minute, Burst: 3}, "burst applies to token_bucket"},
		{Limit{Requests: 10, Window: time.Minute, Algorithm: 2}, "algorithm(2)"},
		{Limit{Requests: MaxRequests + 1, Window: 24 * time.Hour}, "at most"},
		{Limit{Requests: 1, Window: MaxWindow + 1}, "at most"},
	} {
		err := tc.lim.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.lim, err, tc.want)
		}
		if _, err := New[string](nil).Take(1, Charge[string]{"k", tc.lim}); err != ErrLimit && tc.lim.Burst == 0 {
			t.Errorf("Take with %+v: %v, want ErrLimit", tc.lim, err)
		}
	}
	for _, ok := range []Limit{minute, {Requests: MaxRequests, Window: MaxWindow}, {Requests: 10, Window: time.Minute, Burst: 3, Algorithm: TokenBucket}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
}

// TestTakeDoesNotAllocate: a Take on a bucket that exists allocates
// nothing; a new sliding bucket allocates its window, once.
func TestTakeDoesNotAllocate(t *testing.T) {
	l := New[string](nil)
	big := Limit{Requests: 1 << 30, Window: time.Hour}
	charges := []Charge[string]{{"key:1", big}, {"org:1", big}, {"tenant:1", Limit{Requests: 1 << 30, Window: time.Hour, Algorithm: TokenBucket}}}
	each := make([]Result, 3)
	now := time.Now()
	l.TakeEach(now, 1, charges, each)
	if n := testing.AllocsPerRun(1000, func() { l.TakeEach(now, 1, charges, each) }); n != 0 {
		t.Fatalf("%v allocations per Take on existing buckets", n)
	}
}

// TestNewBucketAllocatesOnce: a new sliding window allocates its state,
// and the map grows now and then; nothing else.
func TestNewBucketAllocatesOnce(t *testing.T) {
	l := New[string](nil)
	keys := make([]string, 2000)
	for i := range keys {
		keys[i] = fmt.Sprint("key:", i)
	}
	i := 0
	now := time.Now()
	n := testing.AllocsPerRun(1000, func() {
		l.TakeAt(now, 1, Charge[string]{keys[i], minute})
		i++
	})
	t.Logf("%.2f allocations per new bucket", n)
	if n > 1.5 {
		t.Fatalf("%.2f allocations per new bucket, want 1 and the map's growth", n)
	}
}
