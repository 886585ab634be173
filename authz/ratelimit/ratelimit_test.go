package ratelimit

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

// standard is the token bucket the tests of GCRA use; the sliding-window
// tests are in sliding_test.go.
var standard = Limit{Requests: 100, Window: time.Minute, Algorithm: TokenBucket}

func TestStandardTier(t *testing.T) {
	c := newClock()
	l := New[string](c.now)
	for i := 1; i <= 100; i++ {
		r, err := l.Take(1, Charge[string]{Key: "k", Limit: standard})
		if err != nil || !r.Allowed {
			t.Fatalf("request %d refused: %+v %v", i, r, err)
		}
		if r.Remaining != int64(100-i) || r.Limit != 100 {
			t.Fatalf("request %d: remaining %d limit %d", i, r.Remaining, r.Limit)
		}
	}
	r, _ := l.Take(1, Charge[string]{Key: "k", Limit: standard})
	if r.Allowed || r.Remaining != 0 || r.RetryAfter != 600*time.Millisecond || r.Reset != time.Minute {
		t.Fatalf("101st: %+v, want refused, retry after 600ms, reset in 1m", r)
	}
	// Another key is not affected.
	if r, _ := l.Take(1, Charge[string]{Key: "other", Limit: standard}); !r.Allowed {
		t.Fatal("another key was limited")
	}
	// One token comes back every 600 ms.
	c.add(599 * time.Millisecond)
	if r, _ := l.Take(1, Charge[string]{Key: "k", Limit: standard}); r.Allowed {
		t.Fatal("admitted before the token came back")
	}
	c.add(time.Millisecond)
	if r, _ := l.Take(1, Charge[string]{Key: "k", Limit: standard}); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("after 600ms: %+v", r)
	}
	// Window roll-over: a minute after the last request the bucket is full.
	c.add(time.Minute)
	r, _ = l.Take(1, Charge[string]{Key: "k", Limit: standard})
	if !r.Allowed || r.Remaining != 99 {
		t.Fatalf("after a full window: %+v", r)
	}
}

func TestBurstAndCost(t *testing.T) {
	c := newClock()
	l := New[string](c.now)
	lim := Limit{Requests: 60, Window: time.Minute, Burst: 10, Algorithm: TokenBucket}
	r, _ := l.Take(4, Charge[string]{Key: "k", Limit: lim})
	if !r.Allowed || r.Remaining != 6 || r.Limit != 10 {
		t.Fatalf("cost 4 of burst 10: %+v", r)
	}
	r, _ = l.Take(6, Charge[string]{Key: "k", Limit: lim})
	if !r.Allowed || r.Remaining != 0 {
		t.Fatalf("cost 6 more: %+v", r)
	}
	r, _ = l.Take(3, Charge[string]{Key: "k", Limit: lim})
	if r.Allowed || r.RetryAfter != 3*time.Second {
		t.Fatalf("cost 3 on empty bucket: %+v, want retry after 3s (1 token/s)", r)
	}
	// A refused request costs nothing: 2 s later a cost-2 request fits.
	c.add(2 * time.Second)
	if r, _ := l.Take(2, Charge[string]{Key: "k", Limit: lim}); !r.Allowed {
		t.Fatalf("refused request was charged: %+v", r)
	}
	if _, err := l.Take(0, Charge[string]{Key: "k", Limit: lim}); err != ErrCost {
		t.Fatalf("cost 0: %v", err)
	}
	for _, bad := range []Limit{{}, {Requests: 1 << 30, Window: time.Second}, {Requests: 1, Window: time.Second, Burst: -1},
		{Requests: 1 << 31, Window: time.Hour}, {Requests: 1, Window: MaxWindow + 1}, {Requests: 1, Window: time.Second, Algorithm: 7}} {
		if _, err := l.Take(1, Charge[string]{Key: "k", Limit: bad}); err != ErrLimit {
			t.Fatalf("Take with %+v: %v, want ErrLimit", bad, err)
		}
	}
	// A cost above the burst can never fit.
	if r, _ := l.Take(11, Charge[string]{Key: "fresh", Limit: lim}); r.Allowed {
		t.Fatal("cost above burst admitted")
	}
}

// TestExactUnderConcurrency: 50 goroutines race for the last tokens; exactly
// as many are admitted as there were tokens.
func TestExactUnderConcurrency(t *testing.T) {
	for _, tc := range []struct {
		tokens int
		alg    Algorithm
	}{{1, TokenBucket}, {7, TokenBucket}, {100, TokenBucket}, {1, SlidingWindow}, {7, SlidingWindow}, {100, SlidingWindow}} {
		tokens := tc.tokens
		c := newClock()
		l := New[string](c.now)
		lim := Limit{Requests: tokens, Window: time.Hour, Algorithm: tc.alg}
		var admitted atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < 50; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; i < 10; i++ {
					if r, _ := l.Take(1, Charge[string]{Key: "hot", Limit: lim}); r.Allowed {
						admitted.Add(1)
					}
				}
			}()
		}
		close(start)
		wg.Wait()
		if got := admitted.Load(); got != int64(tokens) {
			t.Fatalf("%d tokens: admitted %d", tokens, got)
		}
	}
}

// TestAllOrNothing: a key, its org and its tenant are charged together; a
// refusal by one charges none, and concurrent takes over overlapping
// buckets do not deadlock.
func TestAllOrNothing(t *testing.T) {
	for _, alg := range []Algorithm{TokenBucket, SlidingWindow} {
		t.Run(alg.String(), func(t *testing.T) { testAllOrNothing(t, alg) })
	}
}

func testAllOrNothing(t *testing.T, alg Algorithm) {
	c := newClock()
	l := New[string](c.now)
	key := Limit{Requests: 10, Window: time.Hour, Algorithm: alg}
	tenant := Limit{Requests: 3, Window: time.Hour, Algorithm: alg}
	for i := 0; i < 3; i++ {
		if r, _ := l.Take(1, Charge[string]{"key:a", key}, Charge[string]{"tenant:t", tenant}); !r.Allowed {
			t.Fatalf("take %d refused", i)
		}
	}
	r, _ := l.Take(1, Charge[string]{"key:a", key}, Charge[string]{"tenant:t", tenant})
	if r.Allowed || r.Index != 1 {
		t.Fatalf("tenant budget exhausted: %+v, want refused by charge 1", r)
	}
	// The key bucket was not charged for the refused request: it has 7 left.
	if r, _ := l.Take(1, Charge[string]{"key:a", key}); r.Remaining != 6 {
		t.Fatalf("key bucket after refusal: %+v, want 6 left after this take", r)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				a, b := fmt.Sprint("k", i%7), fmt.Sprint("k", (i+g)%5)
				l.Take(1, Charge[string]{a, key}, Charge[string]{b, key}, Charge[string]{"shared", key})
			}
		}(g)
	}
	wg.Wait()
}

// TestEvictionBoundsMemory: a bucket that has refilled is forgotten, so the
// state follows the keys in use, not every key ever seen.
func TestEvictionBoundsMemory(t *testing.T) {
	for _, alg := range []Algorithm{TokenBucket, SlidingWindow} {
		t.Run(alg.String(), func(t *testing.T) { testEvictionBoundsMemory(t, alg) })
	}
}

// refilled is how long after one take of cost 1 a bucket of lim equals no
// state.
func refilled(lim Limit) time.Duration {
	if lim.Algorithm == TokenBucket {
		return time.Duration(lim.interval())
	}
	return time.Duration((Slots + 1) * lim.slot())
}

func testEvictionBoundsMemory(t *testing.T, alg Algorithm) {
	c := newClock()
	l := New[string](c.now)
	lim := Limit{Requests: 10, Window: time.Second, Algorithm: alg}
	for i := 0; i < 20000; i++ {
		l.Take(1, Charge[string]{Key: fmt.Sprint("key-", i), Limit: lim})
	}
	if n := l.Len(); n != 20000 {
		t.Fatalf("%d buckets held before any refilled, want 20000", n)
	}
	c.add(refilled(lim) - 1)
	if l.Sweep(); l.Len() != 20000 {
		t.Fatalf("%d buckets held 1ns before they refilled, want 20000", l.Len())
	}
	c.add(1)
	// Takes by a few live keys sweep the shards they land in as they go.
	live := Limit{Requests: 1 << 20, Window: time.Hour, Algorithm: alg}
	for i := 0; i < 4*numShards*sweepEvery; i++ {
		l.Take(1, Charge[string]{Key: fmt.Sprint("live-", i%1000), Limit: live})
	}
	// Nearly every shard saw enough takes to sweep; a rare one with few
	// live keys may not have yet.
	if n := l.Len(); n > 1000+20000/10 {
		t.Fatalf("%d buckets held after idle keys refilled: takes did not sweep", n)
	}
	l.Sweep()
	if n := l.Len(); n != 1000 {
		t.Fatalf("%d buckets after Sweep, want the 1000 live ones", n)
	}
}

func TestLimitValidate(t *testing.T) {
	for _, bad := range []Limit{{}, {Requests: 1}, {Requests: -1, Window: time.Second}, {Requests: 1, Window: time.Second, Burst: -1}, {Requests: 10, Window: 5}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	if err := standard.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestPeekChargesNothing(t *testing.T) {
	c := newClock()
	l := New[string](c.now)
	lim := Limit{Requests: 2, Window: time.Hour, Algorithm: TokenBucket}
	for i := 0; i < 5; i++ {
		if r, _ := l.Peek(1, Charge[string]{"k", lim}); !r.Allowed || r.Remaining != 1 {
			t.Fatalf("peek %d: %+v", i, r)
		}
	}
	l.Take(1, Charge[string]{"k", lim})
	l.Take(1, Charge[string]{"k", lim})
	if r, _ := l.Peek(1, Charge[string]{"k", lim}); r.Allowed {
		t.Fatalf("peek on an empty bucket: %+v", r)
	}
}

// TestEmptyTracksState: Empty (the lock-free fast path of a Check) is true
// exactly when no bucket holds state.
func TestEmptyTracksState(t *testing.T) {
	for _, alg := range []Algorithm{TokenBucket, SlidingWindow} {
		t.Run(alg.String(), func(t *testing.T) { testEmptyTracksState(t, alg) })
	}
}

func testEmptyTracksState(t *testing.T, alg Algorithm) {
	c := newClock()
	l := New[string](c.now)
	if !l.Empty() {
		t.Fatal("new limiter not empty")
	}
	lim := Limit{Requests: 1, Window: time.Second, Algorithm: alg}
	l.Take(1, Charge[string]{"a", lim})
	l.Take(1, Charge[string]{"a", lim}) // refused: no new state
	l.Take(1, Charge[string]{"b", lim})
	if l.Empty() || l.Len() != 2 {
		t.Fatalf("after two keys: empty=%v len=%d", l.Empty(), l.Len())
	}
	c.add(refilled(lim))
	l.Sweep()
	if !l.Empty() || l.Len() != 0 {
		t.Fatalf("after refill and sweep: empty=%v len=%d", l.Empty(), l.Len())
	}
	for i := 0; i < 3*sweepEvery; i++ { // takes that sweep as they go
		l.Take(1, Charge[string]{fmt.Sprint(i), lim})
		c.add(refilled(lim))
	}
	l.Sweep()
	if !l.Empty() {
		t.Fatalf("size drifted: len=%d, Empty=%v", l.Len(), l.Empty())
	}
}
