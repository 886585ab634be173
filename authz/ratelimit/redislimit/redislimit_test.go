package redislimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/internal/testredis"
)

// slow is a Timeout for tests about answers, not about timeouts: the race
// detector on two cores can make a round trip take far more than 50 ms.
const slow = 5 * time.Second

// standard is the token bucket of the GCRA tests; sliding windows are
// tested in sliding_test.go.
var standard = ratelimit.Limit{Requests: 100, Window: time.Minute, Algorithm: ratelimit.TokenBucket}

func one(key string, lim ratelimit.Limit) []ratelimit.Charge[string] {
	return []ratelimit.Charge[string]{{Key: key, Limit: lim}}
}

func take(t *testing.T, l *Limiter, cost int, charges []ratelimit.Charge[string]) ratelimit.Result {
	t.Helper()
	r, err := l.Take(t.Context(), cost, charges, nil)
	if err != nil {
		t.Fatalf("take %d of %v: %v", cost, charges, err)
	}
	return r
}

// within checks a duration measured on Redis's clock: want minus up to
// slack of real time elapsed between the requests, and never more.
func within(t *testing.T, what string, got, want, slack time.Duration) {
	t.Helper()
	if got > want || got < want-slack-time.Microsecond {
		t.Fatalf("%s = %v, want %v minus at most %v", what, got, want, slack)
	}
}

func TestStandardTier(t *testing.T) {
	s := testredis.Start(t)
	l := New(s.Client(t), Options{Timeout: slow})
	start := time.Now()
	for i := 1; i <= 100; i++ {
		r := take(t, l, 1, one("key:k", standard))
		// Remaining is exact while less than one interval (600 ms) passes.
		if !r.Allowed || r.Remaining != int64(100-i) || r.Limit != 100 || r.Index != 0 {
			t.Fatalf("request %d: %+v, want admitted with %d remaining of 100", i, r, 100-i)
		}
	}
	r := take(t, l, 1, one("key:k", standard))
	elapsed := time.Since(start)
	if r.Allowed || r.Remaining != 0 || r.Limit != 100 {
		t.Fatalf("101st: %+v, want refused with 0 remaining", r)
	}
	// The bucket is empty until one token comes back, 600 ms after the
	// first request: less whatever time passed since.
	within(t, "RetryAfter", r.RetryAfter, 600*time.Millisecond, elapsed)
	within(t, "Reset", r.Reset, time.Minute, elapsed)
	if r := take(t, l, 1, one("key:other", standard)); !r.Allowed || r.Remaining != 99 {
		t.Fatalf("another key: %+v, want its own full bucket", r)
	}
}

func TestBurstAndCost(t *testing.T) {
	s := testredis.Start(t)
	l := New(s.Client(t), Options{Timeout: slow})
	lim := ratelimit.Limit{Requests: 60, Window: time.Minute, Burst: 10, Algorithm: ratelimit.TokenBucket} // a token a second, 10 at once
	start := time.Now()
	if r := take(t, l, 4, one("k", lim)); !r.Allowed || r.Remaining != 6 || r.Limit != 10 {
		t.Fatalf("cost 4 of burst 10: %+v", r)
	}
	if r := take(t, l, 6, one("k", lim)); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("cost 6 more: %+v", r)
	}
	r := take(t, l, 3, one("k", lim))
	if r.Allowed || r.Remaining != 0 {
		t.Fatalf("cost 3 on an empty bucket: %+v", r)
	}
	within(t, "RetryAfter for cost 3", r.RetryAfter, 3*time.Second, time.Since(start))

	// A cost above the burst never fits; refusing it costs nothing.
	start = time.Now()
	r = take(t, l, 11, one("k2", lim))
	if r.Allowed || r.Remaining != 10 {
		t.Fatalf("cost 11 of burst 10: %+v", r)
	}
	within(t, "RetryAfter for cost 11", r.RetryAfter, time.Second, time.Since(start))
	if r := take(t, l, 10, one("k2", lim)); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("cost 10 after a refused 11: %+v", r)
	}
}

func TestAllOrNothing(t *testing.T) {
	s := testredis.Start(t)
	c := s.Client(t)
	l := New(c, Options{Timeout: slow})
	tenant := ratelimit.Limit{Requests: 3, Window: time.Minute, Algorithm: ratelimit.TokenBucket}
	both := []ratelimit.Charge[string]{{Key: "key:a", Limit: standard}, {Key: "tenant:t", Limit: tenant}}
	start := time.Now()
	for i := 1; i <= 3; i++ {
		r := take(t, l, 1, both)
		// The tenant bucket has less left: it is the one described.
		if !r.Allowed || r.Index != 1 || r.Remaining != int64(3-i) || r.Limit != 3 {
			t.Fatalf("request %d: %+v, want admitted, tenant bucket with %d left", i, r, 3-i)
		}
	}
	before, err := c.Get(t.Context(), DefaultPrefix+"key:a").Result()
	if err != nil {
		t.Fatal(err)
	}
	r := take(t, l, 1, both)
	if r.Allowed || r.Index != 1 || r.Remaining != 0 {
		t.Fatalf("4th: %+v, want refused by the tenant bucket", r)
	}
	within(t, "RetryAfter", r.RetryAfter, 20*time.Second, time.Since(start))
	after, err := c.Get(t.Context(), DefaultPrefix+"key:a").Result()
	if err != nil || after != before {
		t.Fatalf("key bucket TAT %q -> %q (%v): a refused request charged it", before, after, err)
	}
	if r := take(t, l, 1, one("key:a", standard)); !r.Allowed || r.Remaining != 96 {
		t.Fatalf("key bucket alone: %+v, want 96 left (3 charged, not 4)", r)
	}
}

// Three clients stand for three Keygate replicas: every one of them sees
// the same buckets, and no token is handed out twice.
func TestExactUnderConcurrency(t *testing.T) {
	for _, alg := range []ratelimit.Algorithm{ratelimit.TokenBucket, ratelimit.SlidingWindow} {
		t.Run(alg.String(), func(t *testing.T) { testExactUnderConcurrency(t, alg) })
	}
}

func testExactUnderConcurrency(t *testing.T, alg ratelimit.Algorithm) {
	s := testredis.Start(t)
	var replicas [3]*Limiter
	for i := range replicas {
		replicas[i] = New(s.Client(t), Options{Timeout: slow})
	}
	lim := ratelimit.Limit{Requests: 20, Window: time.Hour, Algorithm: alg} // no refill while the test runs
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 150)
	for g := range 50 {
		wg.Go(func() {
			l := replicas[g%len(replicas)]
			for range 3 {
				r, err := l.Take(t.Context(), 1, one("key:hot", lim), nil)
				switch {
				case err != nil:
					errs <- err
				case r.Allowed:
					admitted.Add(1)
				default:
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if admitted.Load() != 20 || refused.Load() != 130 {
		t.Fatalf("admitted %d, refused %d of 150: want exactly 20 admitted", admitted.Load(), refused.Load())
	}
}

func TestBucketsExpire(t *testing.T) {
	s := testredis.Start(t)
	c := s.Client(t)
	l := New(c, Options{Prefix: "test:", Timeout: slow})
	lim := ratelimit.Limit{Requests: 2, Window: 200 * time.Millisecond, Algorithm: ratelimit.TokenBucket} // a token per 100 ms
	key := "test:key:e"
	take(t, l, 1, one("key:e", lim))
	// Full again in 100 ms; the key lives a second past that (SLACK).
	if ttl := c.PTTL(t.Context(), key).Val(); ttl <= time.Second || ttl > time.Second+100*time.Millisecond {
		t.Fatalf("PTTL after one token = %v, want in (1s, 1.1s]", ttl)
	}
	take(t, l, 1, one("key:e", lim))
	if ttl := c.PTTL(t.Context(), key).Val(); ttl <= time.Second || ttl > time.Second+200*time.Millisecond {
		t.Fatalf("PTTL after two tokens = %v, want in (1s, 1.2s]", ttl)
	}
	// Once the bucket has refilled, the key is gone by itself.
	deadline := time.Now().Add(5 * time.Second)
	for c.Exists(t.Context(), key).Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s still there 5s after a 200ms window (PTTL %v)", key, c.PTTL(t.Context(), key).Val())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := take(t, l, 1, one("key:e", lim)); !r.Allowed || r.Remaining != 1 {
		t.Fatalf("after expiry: %+v, want a full bucket", r)
	}
	// A refused request writes nothing, so sets no expiry either.
	if r := take(t, l, 3, one("key:never", lim)); r.Allowed {
		t.Fatalf("cost 3 of burst 2 admitted: %+v", r)
	}
	if n := c.Exists(t.Context(), "test:key:never").Val(); n != 0 {
		t.Fatal("a refused request created its bucket")
	}
}

// Redis gone or hung: Take answers an error within its timeout, never a
// Result that admits.
func TestRedisUnavailable(t *testing.T) {
	const timeout = 100 * time.Millisecond
	// Beyond the timeout: scheduling under the race detector on two cores.
	const slack = 400 * time.Millisecond
	for _, tc := range []struct {
		name   string
		direct bool // the client honours context deadlines itself
		hang   bool // SIGSTOP rather than kill
	}{
		{"stopped", false, false},
		{"stopped/context-timeouts", true, false},
		{"hung", false, true},
		{"hung/context-timeouts", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testredis.Start(t)
			c := s.Client(t, func(o *redis.Options) { o.ContextTimeoutEnabled = tc.direct })
			l := New(c, Options{Timeout: timeout})
			if l.direct != tc.direct {
				t.Fatalf("direct = %v, want %v", l.direct, tc.direct)
			}
			// Warm up: a pooled connection, the script cached.
			if _, err := l.Take(t.Context(), 1, one("k", standard), nil); err != nil {
				t.Fatal(err)
			}
			if tc.hang {
				s.Pause(t)
				defer s.Resume(t)
			} else {
				s.Stop()
			}
			for i := range 3 {
				start := time.Now()
				r, err := l.Take(t.Context(), 1, one("k", standard), nil)
				elapsed := time.Since(start)
				if err == nil || r.Allowed {
					t.Fatalf("take %d with Redis down: %+v, %v; want an error and no admission", i, r, err)
				}
				if elapsed > timeout+slack {
					t.Fatalf("take %d took %v with a %v timeout", i, elapsed, timeout)
				}
				if tc.hang && !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("hung Redis: %v, want a deadline error", err)
				}
				t.Logf("take %d: %v after %v", i, err, elapsed)
			}
		})
	}
}

func TestInvalidInput(t *testing.T) {
	// No Redis listens here: answers below must not need one.
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer c.Close()
	l := New(c, Options{})
	ctx := t.Context()
	if _, err := l.Take(ctx, 0, one("k", standard), nil); !errors.Is(err, ratelimit.ErrCost) {
		t.Fatalf("cost 0: %v, want ErrCost", err)
	}
	if r, err := l.Take(ctx, 1, nil, nil); err != nil || !r.Allowed || r.Remaining != -1 {
		t.Fatalf("no charges: %+v %v, want admitted with Remaining -1", r, err)
	}
	for _, lim := range []ratelimit.Limit{
		{Requests: 0, Window: time.Minute},
		{Requests: 1, Window: 0},
		{Requests: 1, Window: time.Minute, Burst: -1},
		{Requests: 2_000_000, Window: time.Second, Algorithm: ratelimit.TokenBucket}, // 500 ns: finer than Redis's microseconds
		{Requests: 1, Window: time.Hour, Burst: 1 << 30, Algorithm: ratelimit.TokenBucket},
		{Requests: 1, Window: 15 * time.Microsecond},   // slots under a microsecond
		{Requests: 1 << 31, Window: 24 * time.Hour},    // over MaxRequests
		{Requests: 1, Window: ratelimit.MaxWindow + 1}, // over MaxWindow
		{Requests: 1, Window: time.Hour, Algorithm: 9}, // no such algorithm
		{Requests: 1 << 30, Window: time.Millisecond},  // finer than a nanosecond

	} {
		if _, err := l.Take(ctx, 1, one("k", lim), nil); !errors.Is(err, ratelimit.ErrLimit) {
			t.Fatalf("limit %+v: %v, want ErrLimit", lim, err)
		}
	}
}

func TestHugeCostRefused(t *testing.T) {
	s := testredis.Start(t)
	l := New(s.Client(t), Options{Timeout: slow})
	r := take(t, l, 1<<40, one("k", standard))
	if r.Allowed || r.Remaining != 100 || r.RetryAfter <= 0 {
		t.Fatalf("cost 2^40: %+v, want refused with the bucket untouched", r)
	}
	if r := take(t, l, 1, one("k", standard)); !r.Allowed || r.Remaining != 99 {
		t.Fatalf("after: %+v", r)
	}
}

// After SCRIPT FLUSH (or a Redis restart) EVALSHA fails with NOSCRIPT and
// Take falls back to EVAL, which caches the script again.
func TestScriptReloaded(t *testing.T) {
	s := testredis.Start(t)
	c := s.Client(t)
	l := New(c, Options{Timeout: slow})
	take(t, l, 1, one("k", standard))
	if err := c.ScriptFlush(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	if r := take(t, l, 1, one("k", standard)); !r.Allowed || r.Remaining != 98 {
		t.Fatalf("after SCRIPT FLUSH: %+v", r)
	}
	if ok := c.ScriptExists(t.Context(), redisScript.Hash()).Val(); len(ok) != 1 || !ok[0] {
		t.Fatal("script not cached again after the fallback to EVAL")
	}
}

// The script and ratelimit.Limiter must agree on every answer. With a
// clock both can be given (microseconds), random sequences of multi-bucket
// takes compare every Result field.
func TestMatchesInProcessLimiter(t *testing.T) {
	s := testredis.Start(t)
	tb := ratelimit.TokenBucket
	limits := map[string]ratelimit.Limit{
		"key:a":    standard,
		"key:b":    {Requests: 10, Window: time.Second, Burst: 3, Algorithm: tb},
		"org:o":    {Requests: 4, Window: time.Second, Algorithm: tb},
		"tenant:t": {Requests: 1000, Window: time.Minute, Burst: 50, Algorithm: tb},
		"tenant:u": {Requests: 5, Window: 10 * time.Millisecond, Burst: 2, Algorithm: tb},
		// Sliding windows, whose slots are whole microseconds.
		"key:s":    {Requests: 100, Window: time.Minute},
		"key:d":    {Requests: 300, Window: 24 * time.Hour},
		"org:s":    {Requests: 4, Window: time.Second},
		"tenant:s": {Requests: 5, Window: 10 * time.Millisecond},
		"user:s":   {Requests: 20, Window: 160 * time.Millisecond},
	}
	names := make([]string, 0, len(limits))
	for n := range limits {
		names = append(names, n)
	}
	// The fake clock never runs slower than the real one: Redis expires
	// keys on its own clock, and a key must not vanish while the fake
	// clock still has its bucket partly empty.
	var skip time.Duration
	now := func() time.Time { return time.Now().Add(skip).Truncate(time.Microsecond) }
	var at time.Time
	l := New(s.Client(t), Options{Prefix: fmt.Sprintf("diff%d:", time.Now().UnixNano()), Timeout: slow})
	l.nowUS = func() int64 { return at.UnixMicro() }
	ref := ratelimit.New[string](nil)

	rng := rand.New(rand.NewPCG(1, 2))
	var admitted, multi, slidingRefusals int
	for step := range 3000 {
		n := 1 + rng.IntN(3)
		charges := make([]ratelimit.Charge[string], n)
		for i := range charges {
			name := names[rng.IntN(len(names))] // repeats allowed: charged once
			charges[i] = ratelimit.Charge[string]{Key: name, Limit: limits[name]}
		}
		cost := 1 + rng.IntN(4)
		if rng.IntN(20) == 0 {
			cost = 60 + rng.IntN(100) // more than some bursts
		}
		skip += time.Duration(rng.IntN(300)) * time.Millisecond / time.Duration(1+rng.IntN(10))
		at = now()
		if step%13 == 0 && skip > time.Second {
			// A clock stepped back, or a request that read it before
			// another's: both count it in the newest slot.
			at = at.Add(-time.Duration(rng.IntN(20_000)) * time.Microsecond)
		}
		wantEach, gotEach := make([]ratelimit.Result, n), make([]ratelimit.Result, n)
		want, werr := ref.TakeEach(at, cost, charges, wantEach)
		got, gerr := l.Take(t.Context(), cost, charges, gotEach)
		if werr != nil || gerr != nil {
			t.Fatalf("step %d: errors %v / %v", step, werr, gerr)
		}
		if got != want || !slices.Equal(gotEach, wantEach) {
			t.Fatalf("step %d: cost %d on %v:\nredis     %+v %+v\nratelimit %+v %+v", step, cost, charges, got, gotEach, want, wantEach)
		}
		if !got.Allowed && charges[got.Index].Limit.Algorithm == ratelimit.SlidingWindow {
			slidingRefusals++
		}
		if got.Allowed {
			admitted++
		}
		if got.Index > 0 {
			multi++
		}
	}
	// The sequence must exercise both answers and other buckets than the
	// first, or it proves little.
	if admitted < 600 || admitted > 2400 || multi < 400 || slidingRefusals < 200 {
		t.Fatalf("%d of 3000 admitted, %d described a later bucket, %d refused by a sliding window: a poor test sequence", admitted, multi, slidingRefusals)
	}
	t.Logf("%d of 3000 admitted, %d described a later bucket, %d refused by a sliding window", admitted, multi, slidingRefusals)
}

// One round trip to a local Redis. With ContextTimeoutEnabled the client
// bounds the read itself; without it Take waits for the call on another
// goroutine, which costs a goroutine hand-off per call.
func BenchmarkTake(b *testing.B) {
	s := testredis.Start(b)
	ctx := context.Background()
	for _, alg := range []ratelimit.Algorithm{ratelimit.TokenBucket, ratelimit.SlidingWindow} {
		charges := one("key:bench:"+alg.String(), ratelimit.Limit{Requests: 1_000_000, Window: time.Second, Algorithm: alg})
		for _, direct := range []bool{false, true} {
			name := "goroutine"
			if direct {
				name = "context-timeouts"
			}
			b.Run(alg.String()+"/"+name, func(b *testing.B) {
				l := New(s.Client(b, func(o *redis.Options) { o.ContextTimeoutEnabled = direct }), Options{})
				b.ReportAllocs()
				for b.Loop() {
					if _, err := l.Take(ctx, 1, charges, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// Key, org and tenant buckets, from parallel goroutines sharing a client,
// as one replica's Checks do.
func BenchmarkTakeThreeBucketsParallel(b *testing.B) {
	s := testredis.Start(b)
	for _, alg := range []ratelimit.Algorithm{ratelimit.TokenBucket, ratelimit.SlidingWindow} {
		b.Run(alg.String(), func(b *testing.B) {
			benchThree(b, New(s.Client(b), Options{Prefix: "b" + alg.String() + ":"}), ratelimit.Limit{Requests: 1_000_000, Window: time.Second, Algorithm: alg})
		})
	}
}

func benchThree(b *testing.B, l *Limiter, lim ratelimit.Limit) {
	var id atomic.Int64
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := id.Add(1)
		charges := []ratelimit.Charge[string]{
			{Key: fmt.Sprintf("key:%d", n), Limit: lim},
			{Key: "org:o", Limit: lim},
			{Key: "tenant:t", Limit: lim},
		}
		for pb.Next() {
			if _, err := l.Take(ctx, 1, charges, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
