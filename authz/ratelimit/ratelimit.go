// Package ratelimit owns Keygate's in-process rate limiter: GCRA buckets
// (the token bucket, kept as one timestamp per key) with a rate, a window
// and a burst, charged a cost per request, exact under concurrency, and
// forgetting keys whose bucket has refilled so memory follows the keys in
// use rather than every key ever seen.
//
// A request can be charged to several buckets at once (a key, its org, its
// tenant): it is admitted only if every bucket admits it, and then all are
// charged, in one step, so a refused request costs nothing anywhere.
package ratelimit

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Limit is a rate: Requests per Window, with up to Burst requests at once
// (a full bucket). Burst zero means Requests: "100 requests/minute" admits
// 100 at once and then one every 600 ms.
type Limit struct {
	Requests int
	Window   time.Duration
	// Burst applies to TokenBucket only.
	Burst     int
	Algorithm Algorithm
}

// Validate reports a limit that cannot work.
func (l Limit) Validate() error {
	switch {
	case l.Requests <= 0:
		return fmt.Errorf("requests %d: want at least 1", l.Requests)
	case l.Window <= 0:
		return fmt.Errorf("window %v: want a positive duration", l.Window)
	case l.Burst < 0:
		return fmt.Errorf("burst %d: want 0 (same as requests) or more", l.Burst)
	case l.Window/time.Duration(l.Requests) <= 0:
		return fmt.Errorf("%d requests per %v is finer than a nanosecond", l.Requests, l.Window)
	}
	return nil
}

func (l Limit) burst() int64 {
	if l.Burst == 0 {
		return int64(l.Requests)
	}
	return int64(l.Burst)
}

// interval is the time one token takes to come back.
func (l Limit) interval() int64 { return int64(l.Window) / int64(l.Requests) }

// Charge is one bucket a request is charged to. K identifies buckets: any
// comparable type, so callers key by a struct of ids or by a netip.Addr
// without building a string per request.
type Charge[K comparable] struct {
	Key   K
	Limit Limit
}

// Result says whether a request was admitted and how much is left, for
// the rate-limit response headers. With several buckets it describes the
// tightest one (the one that refused, or the one with least left).
type Result struct {
	Allowed bool
	// Index of the Charge this result describes.
	Index int
	// Limit is the burst of that bucket: requests that fit at once.
	Limit int64
	// Remaining is what the bucket still admits now.
	Remaining int64
	// Reset is when the bucket will be full again.
	Reset time.Duration
	// RetryAfter, on a refusal, is when this request's cost will fit.
	RetryAfter time.Duration
}

// Errors for input Take cannot work with (Validate limits at config time).
var (
	ErrCost  = errors.New("ratelimit: cost must be at least 1")
	ErrLimit = errors.New("ratelimit: invalid limit")
)

const numShards = 64

// Limiter holds bucket state. It is safe for concurrent use.
type Limiter[K comparable] struct {
	seed   maphash.Seed
	shards [numShards]shard[K]
	now    func() time.Time
	size   atomic.Int64 // buckets holding state, across shards
}

type shard[K comparable] struct {
	mu    sync.Mutex
	tat   map[K]int64 // theoretical arrival time, unix ns
	sweep int         // takes since the last sweep
}

// New returns a Limiter reading the clock now (nil: time.Now).
func New[K comparable](now func() time.Time) *Limiter[K] {
	if now == nil {
		now = time.Now
	}
	l := &Limiter[K]{seed: maphash.MakeSeed(), now: now}
	for i := range l.shards {
		l.shards[i].tat = map[K]int64{}
	}
	return l
}

func (l *Limiter[K]) shardOf(key K) int {
	return int(maphash.Comparable(l.seed, key) % numShards)
}

// Take charges cost to every bucket in charges, or to none.
func (l *Limiter[K]) Take(cost int, charges ...Charge[K]) (Result, error) {
	return l.take(l.now(), cost, true, charges, nil)
}

// TakeEach is TakeAt that also describes every bucket: when each is at
// least as long as charges, each[i] is charges[i]'s Result (for headers
// that report every limit, not only the tightest).
func (l *Limiter[K]) TakeEach(now time.Time, cost int, charges []Charge[K], each []Result) (Result, error) {
	return l.take(now, cost, true, charges, each)
}

// TakeAt is Take at a moment the caller has already read from the clock
// (a Check reads it once).
func (l *Limiter[K]) TakeAt(now time.Time, cost int, charges ...Charge[K]) (Result, error) {
	return l.take(now, cost, true, charges, nil)
}

// Peek answers as Take would, without charging anything.
func (l *Limiter[K]) Peek(cost int, charges ...Charge[K]) (Result, error) {
	return l.take(l.now(), cost, false, charges, nil)
}

// PeekAt is Peek at a given moment.
func (l *Limiter[K]) PeekAt(now time.Time, cost int, charges ...Charge[K]) (Result, error) {
	return l.take(now, cost, false, charges, nil)
}

// Now reads the limiter's clock.
func (l *Limiter[K]) Now() time.Time { return l.now() }

// Empty reports whether no bucket holds state, without taking a lock:
// then every bucket is full, and a Peek would admit anything a burst
// allows. A caller that only needs to know "is this key limited at all"
// skips the lock on the common path.
func (l *Limiter[K]) Empty() bool { return l.size.Load() == 0 }

func (l *Limiter[K]) take(at time.Time, cost int, commit bool, charges []Charge[K], each []Result) (Result, error) {
	if cost < 1 {
		return Result{}, ErrCost
	}
	if len(charges) == 0 {
		return Result{Allowed: true, Remaining: -1}, nil
	}
	for _, c := range charges {
		if c.Limit.Requests <= 0 || c.Limit.interval() <= 0 || c.Limit.Burst < 0 {
			return Result{}, ErrLimit
		}
	}
	now := at.UnixNano()
	// Lock every shard involved, in index order so that concurrent
	// multi-bucket takes cannot deadlock; then decide and commit at once.
	var idx [8]int
	shards := idx[:0]
	for _, c := range charges {
		shards = append(shards, l.shardOf(c.Key))
	}
	var lockIdx [8]int
	locked := append(lockIdx[:0], shards...)
	sort.Ints(locked)
	for i, s := range locked {
		if i == 0 || s != locked[i-1] {
			l.shards[s].mu.Lock()
		}
	}
	defer func() {
		for i, s := range locked {
			if i == 0 || s != locked[i-1] {
				l.shards[s].mu.Unlock()
			}
		}
	}()

	var newTATs [8]int64
	tats := newTATs[:0]
	best := Result{Allowed: true, Remaining: -1}
	for i, c := range charges {
		interval := c.Limit.interval()
		tau := interval * c.Limit.burst()
		tat, ok := l.shards[shards[i]].tat[c.Key]
		if !ok || tat < now {
			tat = now
		}
		next := tat + int64(cost)*interval
		r := Result{Index: i, Limit: c.Limit.burst(), Allowed: next-now <= tau}
		if r.Allowed {
			r.Remaining = (tau - (next - now)) / interval
			r.Reset = time.Duration(next - now)
		} else {
			r.Remaining = max(0, (tau-(tat-now))/interval)
			r.Reset = time.Duration(tat - now)
			r.RetryAfter = time.Duration(next - tau - now)
		}
		tats = append(tats, next)
		if len(each) >= len(charges) {
			each[i] = r
		}
		switch {
		case !r.Allowed && (best.Allowed || r.RetryAfter > best.RetryAfter):
			best = r
		case best.Allowed && (best.Remaining < 0 || r.Remaining < best.Remaining):
			best = r
		}
	}
	if best.Allowed && commit {
		for i, c := range charges {
			sh := &l.shards[shards[i]]
			if _, ok := sh.tat[c.Key]; !ok {
				l.size.Add(1)
			}
			sh.tat[c.Key] = tats[i]
			l.size.Add(-int64(sh.maybeSweep(now)))
		}
	}
	return best, nil
}

// sweepEvery bounds the work of forgetting idle keys: a shard is swept once
// per this many takes, so each take pays for at most a share of a sweep.
const sweepEvery = 1024

// maybeSweep forgets buckets that have refilled: their state is the same as
// no state, so forgetting changes no answer. Callers hold the lock.
func (s *shard[K]) maybeSweep(now int64) (forgot int) {
	if s.sweep++; s.sweep < sweepEvery {
		return 0
	}
	s.sweep = 0
	return s.forget(now)
}

func (s *shard[K]) forget(now int64) (n int) {
	for k, tat := range s.tat {
		if tat <= now {
			delete(s.tat, k)
			n++
		}
	}
	return n
}

// Sweep forgets every refilled bucket now. Takes sweep their shard as they
// go; a server also calls Sweep periodically so that shards that see no
// takes do not keep what they hold.
func (l *Limiter[K]) Sweep() {
	now := l.now().UnixNano()
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		l.size.Add(-int64(s.forget(now)))
		s.mu.Unlock()
	}
}

// Len is how many buckets hold state.
func (l *Limiter[K]) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.tat)
		s.mu.Unlock()
	}
	return n
}
