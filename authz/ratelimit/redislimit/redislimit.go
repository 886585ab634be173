// Package redislimit owns Keygate's cross-replica rate limiter: the
// buckets of package ratelimit (sliding windows and GCRA token buckets)
// kept in Redis, so that every replica charges the same buckets. It
// implements authz.SharedLimiter and answers exactly as ratelimit.Limiter
// does (same Limit, same Result, same all-or-nothing charging of several
// buckets of either algorithm), except that time has microsecond
// granularity (see below).
//
// # Atomicity
//
// One Lua script does the whole Take: it reads every bucket (a token
// bucket's theoretical arrival time, TAT; a sliding window's slot counts),
// decides, and only if every bucket admits the request writes all of
// them. Redis runs a script to completion before serving any other
// command, so the check and the charge of all buckets are one step for
// every client of that Redis: replicas racing for the last request of a
// window cannot both get it, and a refused request costs nothing anywhere.
// The script is sent by EVALSHA, falling back to EVAL when the server does
// not have it cached yet (after a restart or SCRIPT FLUSH).
//
// # Clock
//
// The script reads Redis's clock (TIME), never the replica's: replicas with
// skewed clocks would otherwise disagree on how full a bucket is, and a
// replica running ahead would refill buckets early for everyone. Durations
// in the Result are relative to that clock, so they need no agreement
// either. Times are integer microseconds since the epoch: Lua numbers are
// doubles, exact only below 2^53, and microseconds stay well below that
// (as do the bounds Take enforces on windows, bursts and costs), where
// nanoseconds would not. A token bucket's interval (Window/Requests) is
// therefore truncated to a whole microsecond, and a limit finer than one
// request per microsecond per bucket is refused with ratelimit.ErrLimit. A
// sliding window's slot is ceil(Window/ratelimit.Slots) rounded up to a
// whole microsecond (the same slot as ratelimit.Limiter's when
// ratelimit.Slots microseconds divide the window), slot indices are
// floor(µs / slot), and a window whose slots would be under a microsecond
// is refused with ratelimit.ErrLimit. A time before a window's newest slot
// (Redis's clock stepped back, or a failover to a primary whose clock is
// behind) counts in that slot, as in ratelimit.Limiter.
//
// # Memory
//
// A token bucket is a string, its TAT; each write sets the key's expiry to
// the time until its TAT (rounded up to the millisecond). A sliding window
// is a hash: field "L", its slot length, and one field per counted slot
// (slot index → cost admitted in it), at most ratelimit.Slots+1 of them
// since each write deletes the slots that have left; each write sets the
// expiry to when its newest slot leaves the count. Either way, once a
// bucket's state equals no state, Redis drops the key by itself: memory
// follows the keys in use. A key of the other kind (a limit switched
// algorithm) or a window of another slot length (a changed Window) reads
// as no state and is replaced by the next admitted request.
//
// # Deployment: one Redis, not a cluster
//
// A multi-key script needs all its keys in one hash slot on Redis Cluster
// (otherwise CROSSSLOT), and Keygate's buckets for one request ("key:<id>",
// "org:<id>", "tenant:<id>") hash to different slots. Keygate therefore
// expects a single Redis, or a primary with replicas behind Sentinel
// (redis.NewFailoverClient / UniversalClient with a master name): the
// script writes, so it runs on the primary. On a cluster, a prefix with a
// hash tag ("keygate:rl:{rl}:") makes every bucket share one slot, which
// works but puts all rate-limit traffic on one shard. Asynchronous
// replication means a failover can lose the last writes (some requests are
// admitted twice), and the new primary's clock may differ from the old
// one's by its skew; both are bounded and brief.
//
// # Failure
//
// Any Redis error is returned, wrapped; the caller's policy (fail closed
// or open) decides. A Take never waits on Redis longer than
// Options.Timeout, even on a client that ignores context deadlines for
// socket reads (go-redis's default): such a call runs on its own goroutine
// and Take stops waiting for it. Setting redis.Options.ContextTimeoutEnabled
// is better: the client then bounds the read itself, frees the connection
// of an abandoned call at once, and saves the goroutine hand-off (a third
// of a loopback round trip in BenchmarkTake). go-redis retries failed
// calls (Options.MaxRetries): against a dead Redis a Take then spends its
// whole timeout redialling, and a call whose reply was lost can charge
// twice, which errs on the side of limiting.
package redislimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
)

var _ authz.SharedLimiter = (*Limiter)(nil)

// Defaults for Options.
const (
	DefaultPrefix  = "keygate:rl:"
	DefaultTimeout = 50 * time.Millisecond
)

// maxSpan bounds, in microseconds (2^51 µs, about 71 years), a bucket's
// capacity and a request's increment, so that the script's sums stay below
// 2^53: now (~2^50.6 µs in this century) + capacity + increment < 2^53.
const maxSpan = int64(1) << 51

// Options configure a Limiter.
type Options struct {
	// Prefix goes before every bucket name to make its Redis key.
	// Empty: DefaultPrefix.
	Prefix string
	// Timeout bounds each Take's wait on Redis: a Check must not hang on
	// a slow or unreachable Redis. Zero: DefaultTimeout. Negative: only
	// the caller's context bounds it.
	Timeout time.Duration
	// Now, when set, replaces Redis's clock, for tests that move time by
	// hand (every Limiter sharing the buckets must then read the same
	// clock). Nil, as in production: Redis's TIME.
	Now func() time.Time
}

// Limiter charges requests to buckets (sliding windows and token buckets)
// held in Redis. It is safe for
// concurrent use, and any number of Limiters (in any number of processes)
// on the same Redis and prefix share the buckets.
type Limiter struct {
	client  redis.UniversalClient
	prefix  string
	timeout time.Duration
	// direct: the client bounds socket reads by the context deadline, so
	// Take need not run the call on another goroutine to stop waiting.
	direct bool
	script *redis.Script
	// nowUS, in tests, replaces Redis's clock (microseconds since the
	// epoch) so that answers can be compared with ratelimit.Limiter's.
	nowUS func() int64
}

// The script's clock is put in front of takeLua: Redis's TIME, or in
// tests a time passed as the last argument. redis.replicate_commands lets
// Redis 3.2 to 4 write after reading TIME (replicating the writes, not the
// script); from Redis 5 on it is the default and the call does nothing.
const (
	redisClock = `if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
`
	argClock = `local now = tonumber(ARGV[#ARGV])
`
)

// script is built once per clock: NewScript hashes the source.
var (
	redisScript = redis.NewScript(redisClock + takeLua)
	argScript   = redis.NewScript(argClock + takeLua)
)

// New returns a Limiter on client. The client's own options (pool size,
// retries, Sentinel) apply; see the package comment on timeouts.
func New(client redis.UniversalClient, opts Options) *Limiter {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	l := &Limiter{client: client, prefix: opts.Prefix, timeout: opts.Timeout, script: redisScript}
	if now := opts.Now; now != nil {
		l.nowUS = func() int64 { return now().UnixMicro() }
	}
	switch c := client.(type) {
	case *redis.Client:
		l.direct = c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		l.direct = c.Options().ContextTimeoutEnabled
	}
	return l
}

// Ping reports whether Redis answers, for readiness: with it gone every
// Take fails. ctx bounds the wait on a client that honours context
// deadlines (see the package comment).
func (l *Limiter) Ping(ctx context.Context) error {
	if err := l.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redislimit: ping: %w", err)
	}
	return nil
}

// The script counts K = 16 slots, as ratelimit.Limiter does: this fails
// to compile if ratelimit.Slots changes without takeLua.
var _ = [1]struct{}{}[ratelimit.Slots-16]

// bucket is one charge as the script sees it, in microseconds.
type bucket struct {
	// slot is a sliding window's slot length L; 0 for a token bucket.
	slot int64
	// A token bucket.
	interval int64 // one token
	tau      int64 // capacity: interval × burst
	inc      int64 // this request: interval × cost, capped just past maxSpan
	burst    int64
	// A sliding window.
	n      int64         // requests
	cost   int64         // this request's, uncapped
	window time.Duration // for the RetryAfter of a cost that never fits
}

// args are the bucket's three arguments to the script.
func (b bucket) args() (any, any, any) {
	if b.slot == 0 {
		return int64(0), b.inc, b.tau
	}
	// A cost above n never fits: n+1 refuses it as well and keeps the
	// script's sums exact.
	return b.slot, b.n, min(b.cost, b.n+1)
}

// replyLen is how many values the script answers for the bucket.
func (b bucket) replyLen() int {
	if b.slot == 0 {
		return 1
	}
	return ratelimit.Slots + 2
}

func prepare(cost int, c ratelimit.Charge[string]) (bucket, error) {
	lim := c.Limit
	if lim.Requests <= 0 || lim.Window <= 0 || lim.Burst < 0 || lim.Window/time.Duration(lim.Requests) <= 0 {
		return bucket{}, ratelimit.ErrLimit
	}
	switch lim.Algorithm {
	case ratelimit.SlidingWindow:
		return prepareSliding(cost, lim)
	case ratelimit.TokenBucket:
	default:
		return bucket{}, fmt.Errorf("%w: %v", ratelimit.ErrLimit, lim.Algorithm)
	}
	interval := int64(lim.Window/time.Duration(lim.Requests)) / int64(time.Microsecond)
	if interval <= 0 {
		return bucket{}, fmt.Errorf("%w: %d requests per %v is finer than a microsecond", ratelimit.ErrLimit, lim.Requests, lim.Window)
	}
	burst := int64(lim.Burst)
	if burst == 0 {
		burst = int64(lim.Requests)
	}
	if burst > maxSpan/interval {
		return bucket{}, fmt.Errorf("%w: burst %d of %v per request is over %v", ratelimit.ErrLimit, burst, time.Duration(interval)*time.Microsecond, time.Duration(maxSpan)*time.Microsecond)
	}
	b := bucket{interval: interval, tau: interval * burst, burst: burst}
	// A cost past maxSpan can never fit a bucket (tau <= maxSpan); capping
	// it keeps the script's arithmetic exact and still refuses it. Only
	// RetryAfter then understates the wait, which is decades anyway.
	if int64(cost) > maxSpan/interval {
		b.inc = maxSpan + 1
	} else {
		b.inc = int64(cost) * interval
	}
	return b, nil
}

// prepareSliding: the slot is ceil(W/Slots) in whole microseconds, the
// same as ratelimit.Limiter's (in nanoseconds) when Slots µs divide W.
// The bounds of ratelimit.Limit.Validate keep every value the script
// computes (slot ends up to now + W + 2 slots) below 2^53 µs.
func prepareSliding(cost int, lim ratelimit.Limit) (bucket, error) {
	if lim.Requests > ratelimit.MaxRequests || lim.Window > ratelimit.MaxWindow {
		return bucket{}, fmt.Errorf("%w: %d requests per %v is over a sliding window's bounds", ratelimit.ErrLimit, lim.Requests, lim.Window)
	}
	w := int64(lim.Window)
	if (w+ratelimit.Slots-1)/ratelimit.Slots < int64(time.Microsecond) {
		return bucket{}, fmt.Errorf("%w: a window of %v has slots shorter than a microsecond", ratelimit.ErrLimit, lim.Window)
	}
	const slotNS = ratelimit.Slots * int64(time.Microsecond)
	return bucket{slot: (w + slotNS - 1) / slotNS, n: int64(lim.Requests), cost: int64(cost), window: lim.Window}, nil
}

// Take charges cost to every bucket in charges, or to none, and describes
// the tightest bucket as ratelimit.Limiter.Take does. Bucket names are
// prefixed to make Redis keys. An error (Redis unreachable, slow past the
// timeout, or answering an error) comes with a zero Result: it never
// admits.
func (l *Limiter) Take(ctx context.Context, cost int, charges []ratelimit.Charge[string], each []ratelimit.Result) (ratelimit.Result, error) {
	// Same order of checks as ratelimit.Limiter.
	if cost < 1 {
		return ratelimit.Result{}, ratelimit.ErrCost
	}
	if len(charges) == 0 {
		return ratelimit.Result{Allowed: true, Remaining: -1}, nil
	}
	var bucketArr [4]bucket
	bs := bucketArr[:0]
	want := 2
	for _, c := range charges {
		b, err := prepare(cost, c)
		if err != nil {
			return ratelimit.Result{}, err
		}
		bs = append(bs, b)
		want += b.replyLen()
	}
	keys := make([]string, len(charges))
	args := make([]any, 0, 3*len(charges)+1)
	for i, c := range charges {
		keys[i] = l.prefix + c.Key
		a, b, d := bs[i].args()
		args = append(args, a, b, d)
	}
	script := l.script
	if l.nowUS != nil {
		script = argScript
		args = append(args, l.nowUS())
	}

	reply, err := l.run(ctx, script, keys, args)
	if err != nil {
		return ratelimit.Result{}, fmt.Errorf("redislimit: take %q: %w", keys[0], err)
	}
	if len(reply) != want {
		return ratelimit.Result{}, fmt.Errorf("redislimit: script answered %d values for %d buckets, want %d", len(reply), len(charges), want)
	}
	r := result(reply[1], reply[2:], bs, each)
	if r.Allowed != (reply[0] == 1) {
		// Same numbers, same comparisons: this would be a bug here or in
		// the script, and the caller must not trust either answer.
		return ratelimit.Result{}, fmt.Errorf("redislimit: script and limiter disagree (script allowed=%d)", reply[0])
	}
	return r, nil
}

// result is ratelimit.Limiter.take's decision and Result, line for line,
// on the script's numbers (microseconds): per bucket, a token bucket's TAT
// or a sliding window's current slot and counts.
func result(now int64, reply []int64, bs []bucket, each []ratelimit.Result) ratelimit.Result {
	best := ratelimit.Result{Allowed: true, Remaining: -1}
	for i, b := range bs {
		var r ratelimit.Result
		if b.slot == 0 {
			r = tokenResult(now, reply[0], b)
		} else {
			r = slidingResult(now, reply[0], reply[1:b.replyLen()], b)
		}
		reply = reply[b.replyLen():]
		r.Index = i
		if len(each) >= len(bs) {
			each[i] = r
		}
		switch {
		case !r.Allowed && (best.Allowed || r.RetryAfter > best.RetryAfter):
			best = r
		case best.Allowed && (best.Remaining < 0 || r.Remaining < best.Remaining):
			best = r
		}
	}
	return best
}

func us(d int64) time.Duration { return time.Duration(d) * time.Microsecond }

func tokenResult(now, tat int64, b bucket) ratelimit.Result {
	next := tat + b.inc
	r := ratelimit.Result{Limit: b.burst, Allowed: next-now <= b.tau}
	if r.Allowed {
		r.Remaining = (b.tau - (next - now)) / b.interval
		r.Reset = us(next - now)
	} else {
		r.Remaining = max(0, (b.tau-(tat-now))/b.interval)
		r.Reset = us(tat - now)
		r.RetryAfter = us(next - b.tau - now)
	}
	return r
}

// slidingResult is ratelimit's admitSliding on the counts of slots cur−K
// to cur, oldest first.
func slidingResult(now, cur int64, counts []int64, b bucket) ratelimit.Result {
	L := b.slot
	start := cur*L - now
	var counted int64
	for _, c := range counts {
		counted += c
	}
	r := ratelimit.Result{Limit: b.n, Allowed: b.cost <= b.n-counted}
	if r.Allowed {
		r.Remaining = b.n - counted - b.cost
		r.Reset = us(start + (ratelimit.Slots+1)*L)
		return r
	}
	r.Remaining = max(0, b.n-counted)
	for i := len(counts) - 1; i >= 0; i-- {
		if counts[i] != 0 {
			r.Reset = us(start + int64(i+1)*L)
			break
		}
	}
	if b.cost > b.n {
		r.RetryAfter = b.window + us(L)
		return r
	}
	left := counted
	for i, c := range counts {
		if left -= c; left <= b.n-b.cost {
			r.RetryAfter = us(start + int64(i+1)*L)
			break
		}
	}
	return r
}

// run runs the script within the timeout. On a client that ignores
// context deadlines for reads, the call runs on its own goroutine and Take
// stops waiting when the time is up; the call then finishes or fails in
// the background (bounded by the client's ReadTimeout) and its answer is
// dropped.
func (l *Limiter) run(ctx context.Context, script *redis.Script, keys []string, args []any) ([]int64, error) {
	if l.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.timeout)
		defer cancel()
	}
	if l.direct {
		return script.Run(ctx, l.client, keys, args...).Int64Slice()
	}
	type reply struct {
		v   []int64
		err error
	}
	done := make(chan reply, 1) // buffered: an abandoned call does not block
	go func() {
		v, err := script.Run(ctx, l.client, keys, args...).Int64Slice()
		done <- reply{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		// A reply that raced the deadline still wins: it is the truth.
		select {
		case r := <-done:
			return r.v, r.err
		default:
		}
		return nil, fmt.Errorf("no answer in time: %w", context.Cause(ctx))
	}
}
