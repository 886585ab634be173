// Package ratelimit owns Keygate's in-process rate limiter: buckets charged
// a cost per request, exact under concurrency, and forgotten once their
// state equals no state, so memory follows the keys in use rather than
// every key ever seen.
//
// # Algorithms
//
// SlidingWindow, the default, promises what "100 requests/minute" says:
// at most Requests in any rolling Window. It keeps a conservative slotted
// window: the window W is cut into Slots slots of L = ceil(W/Slots),
// aligned to the epoch, and a bucket keeps the cost admitted in each. At
// time t it counts the current slot and the Slots before it, the oldest
// counted whole although only part of it is still inside the rolling
// window. So it never admits more than Requests in any window of length
// W, and refuses early by at most L: a request is counted for between W
// and W+L (W/16, 3.75 s for a minute). See admitSliding for the proof.
//
// TokenBucket is GCRA (one timestamp per key): Requests per Window on
// average and up to Burst at once, for operators who want bursts above
// the average. A client paced just under the average can get Burst plus
// Requests in one rolling window.
//
// A request can be charged to several buckets at once (a key, its org, its
// tenant), of either algorithm: it is admitted only if every bucket admits
// it, and then all are charged, in one step, so a refused request costs
// nothing anywhere.
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

// Limit is a rate: Requests per Window. With SlidingWindow (the zero
// Algorithm) that is at most Requests in any rolling Window; with
// TokenBucket, Requests per Window on average and up to Burst at once
// (a full bucket), Burst zero meaning Requests.
type Limit struct {
	Requests int
	Window   time.Duration
	// Burst applies to TokenBucket only.
	Burst     int
	Algorithm Algorithm
}

// Sliding-window bounds.
const (
	// Slots is how many slots a window is cut into: a request is counted
	// for between Window and Window+Window/Slots. More slots refuse less
	// early and cost 4 bytes a bucket each.
	Slots = 16
	// MaxRequests bounds a sliding window's Requests, so that a slot's
	// count is a uint32 and no sum overflows.
	MaxRequests = 1<<31 - 1
	// MaxWindow bounds a sliding window's Window (about 146 years), so
	// that every sum of times and slots fits an int64.
	MaxWindow = time.Duration(1) << 62
)

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
	switch l.Algorithm {
	case TokenBucket:
	case SlidingWindow:
		switch {
		case l.Burst > 0:
			return fmt.Errorf("burst %d: burst applies to %s, a sliding window admits at most requests in any window", l.Burst, NameTokenBucket)
		case l.Requests > MaxRequests:
			return fmt.Errorf("requests %d: a sliding window holds at most %d", l.Requests, MaxRequests)
		case l.Window > MaxWindow:
			return fmt.Errorf("window %v: a sliding window is at most %v", l.Window, MaxWindow)
		}
	default:
		return fmt.Errorf("%v: want %s or %s", l.Algorithm, NameSlidingWindow, NameTokenBucket)
	}
	return nil
}

// usable is what Take needs of a limit: Validate's checks that keep its
// arithmetic sound. A Burst on a sliding window, which Validate refuses
// at config time, is ignored here rather than failing every request.
func (l Limit) usable() bool {
	if l.Requests <= 0 || l.Window <= 0 || l.Burst < 0 || l.interval() <= 0 {
		return false
	}
	switch l.Algorithm {
	case TokenBucket:
		return true
	case SlidingWindow:
		return l.Requests <= MaxRequests && l.Window <= MaxWindow
	}
	return false
}

// slot is a sliding window's slot length L = ceil(W/Slots), in ns: Slots
// slots cover at least the whole window.
func (l Limit) slot() int64 { return (int64(l.Window) + Slots - 1) / Slots }

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
	// Limit is what fits at once in an empty bucket: a token bucket's
	// burst, a sliding window's requests.
	Limit int64
	// Remaining is what the bucket still admits now.
	Remaining int64
	// Reset is when the bucket will be full again: every token back, or
	// every counted request out of the window.
	Reset time.Duration
	// RetryAfter, on a refusal, is when this request's cost will fit, if
	// nothing else is charged meanwhile. A cost that can never fit a
	// sliding window gets Window plus a slot.
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
	tat   map[K]int64 // token buckets: theoretical arrival time, unix ns
	win   map[K]*window
	sweep int // takes since the last sweep
}

// window is a sliding-window bucket: the cost admitted in each of the
// Slots+1 counted slots, oldest first, ending at slot last. A pointer in
// the map, so that a Take updates it in place without allocating.
type window struct {
	slot   int64 // L, ns: a changed limit starts the bucket afresh
	last   int64 // index of the newest slot, floor(unix ns / L)
	counts [Slots + 1]uint32
}

// New returns a Limiter reading the clock now (nil: time.Now).
func New[K comparable](now func() time.Time) *Limiter[K] {
	if now == nil {
		now = time.Now
	}
	l := &Limiter[K]{seed: maphash.MakeSeed(), now: now}
	for i := range l.shards {
		l.shards[i].tat = map[K]int64{}
		l.shards[i].win = map[K]*window{}
	}
	return l
}

func (l *Limiter[K]) shardOf(key K) int {
	return int(maphash.Comparable(l.seed, key) % numShards)
}

// Take charges cost to every bucket in charges, or to none. It reads the
// clock once it holds the buckets, so that each bucket sees its takes in
// the order of their times.
func (l *Limiter[K]) Take(cost int, charges ...Charge[K]) (Result, error) {
	return l.take(time.Time{}, cost, true, charges, nil)
}

// TakeEach is TakeAt that also describes every bucket: when each is at
// least as long as charges, each[i] is charges[i]'s Result (for headers
// that report every limit, not only the tightest).
func (l *Limiter[K]) TakeEach(now time.Time, cost int, charges []Charge[K], each []Result) (Result, error) {
	return l.take(now, cost, true, charges, each)
}

// TakeAt is Take at a moment the caller has already read from the clock
// (a Check reads it once). Another Take may come between that read and
// this one's: a sliding window then counts this one in its newest slot
// (see admitSliding), which keeps the promise.
func (l *Limiter[K]) TakeAt(now time.Time, cost int, charges ...Charge[K]) (Result, error) {
	return l.take(now, cost, true, charges, nil)
}

// Peek answers as Take would, without charging anything.
func (l *Limiter[K]) Peek(cost int, charges ...Charge[K]) (Result, error) {
	return l.take(time.Time{}, cost, false, charges, nil)
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

// take runs at the time at, or, if at is zero, at the clock's time once
// the buckets are locked.
func (l *Limiter[K]) take(at time.Time, cost int, commit bool, charges []Charge[K], each []Result) (Result, error) {
	if cost < 1 {
		return Result{}, ErrCost
	}
	if len(charges) == 0 {
		return Result{Allowed: true, Remaining: -1}, nil
	}
	for _, c := range charges {
		if !c.Limit.usable() {
			return Result{}, ErrLimit
		}
	}
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
	if at.IsZero() {
		at = l.now()
	}
	now := at.UnixNano()

	var planArr [8]plan
	plans := planArr[:0]
	best := Result{Allowed: true, Remaining: -1}
	for i, c := range charges {
		sh := &l.shards[shards[i]]
		var r Result
		var p plan
		if c.Limit.Algorithm == TokenBucket {
			r, p = admitToken(sh.tat[c.Key], c.Limit, now, cost)
		} else {
			r, p = admitSliding(sh.win[c.Key], c.Limit, now, cost)
		}
		r.Index = i
		plans = append(plans, p)
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
			if c.Limit.Algorithm == TokenBucket {
				if _, ok := sh.tat[c.Key]; !ok {
					l.size.Add(1)
				}
				sh.tat[c.Key] = plans[i].next
			} else {
				w := sh.win[c.Key]
				if w == nil {
					w = &window{}
					sh.win[c.Key] = w
					l.size.Add(1)
				}
				w.charge(plans[i])
			}
			l.size.Add(-int64(sh.maybeSweep(now)))
		}
	}
	return best, nil
}

// plan is what a charge writes if the request is admitted, decided before
// anything is written so that a refusal writes nothing. Writing a plan is
// idempotent: a bucket named twice in one Take is charged once.
type plan struct {
	next  int64  // token bucket: the new TAT; sliding window: the newest slot
	slot  int64  // sliding window: L
	count uint32 // sliding window: the newest slot's count after the charge
}

// maxInc caps a token bucket's cost × interval: a cost that large never
// fits, and the cap keeps tat + inc from overflowing.
const maxInc = int64(1) << 62

// admitToken is GCRA on a bucket whose TAT is tat (0: no state).
func admitToken(tat int64, lim Limit, now int64, cost int) (Result, plan) {
	interval := lim.interval()
	tau := interval * lim.burst()
	if tat < now {
		tat = now
	}
	inc := maxInc
	if int64(cost) <= maxInc/interval {
		inc = int64(cost) * interval
	}
	next := tat + inc
	r := Result{Limit: lim.burst(), Allowed: next-now <= tau}
	if r.Allowed {
		r.Remaining = (tau - (next - now)) / interval
		r.Reset = time.Duration(next - now)
	} else {
		r.Remaining = max(0, (tau-(tat-now))/interval)
		r.Reset = time.Duration(tat - now)
		r.RetryAfter = time.Duration(next - tau - now)
	}
	return r, plan{next: next}
}

// admitSliding decides a sliding-window charge of cost at now (unix ns) on
// w (nil: no state). Slot s (of length L) holds the requests admitted at
// times in [s·L, (s+1)·L); at time t in slot c the counted slots are c−K
// to c, K = Slots, and a request is admitted iff counted + cost <= N.
//
// Why no rolling window (t−W, t] ever holds more than N: it lies inside
// slots c−K to c, since t−W >= c·L − K·L (as W <= K·L) and (t−W, t] thus
// starts in slot c−K or later. Take r, the last request admitted inside
// it, in slot c_r <= c: every earlier one inside it sits in a slot from
// c−K to c_r (slots only move forward), all among r's counted slots c_r−K
// to c_r, and r was admitted only if they and r sum to at most N. Later
// requests inside it do not exist. And a request is
// refused early by at most a slot: it is counted for at most (K+1)·L,
// which is W+L when K divides W (and less than W+L+K ns otherwise).
//
// A time before the bucket's newest slot (a clock read before another
// Take's, a clock stepped back) is counted in that newest slot: slots only
// move forward, which the argument above needs.
func admitSliding(w *window, lim Limit, now int64, cost int) (Result, plan) {
	L := lim.slot()
	n := int64(lim.Requests)
	cur := floorDiv(now, L)
	// src is the counted slots holding counts, oldest (cur−K) first; the
	// slots after it, up to cur, are empty.
	var src []uint32
	if w != nil && w.slot == L {
		if w.last > cur {
			cur = w.last
		}
		if d := cur - w.last; d <= Slots {
			src = w.counts[d:]
		}
	}
	var counted int64
	for _, c := range src {
		counted += int64(c)
	}
	var atCur int64 // the newest slot's count
	if len(src) == Slots+1 {
		atCur = int64(src[Slots])
	}
	// Times relative to now: cur·L <= now unless clamped, and the offsets
	// below stay under (K+1)·L, so nothing overflows.
	start := cur*L - now
	r := Result{Limit: n, Allowed: int64(cost) <= n-counted}
	if r.Allowed {
		r.Remaining = n - counted - int64(cost)
		r.Reset = time.Duration(start + (Slots+1)*L)
		return r, plan{next: cur, slot: L, count: uint32(atCur + int64(cost))}
	}
	r.Remaining = max(0, n-counted)
	// Slot cur−K+i leaves the count at (cur+i+1)·L.
	for i := len(src) - 1; i >= 0; i-- {
		if src[i] != 0 {
			r.Reset = time.Duration(start + int64(i+1)*L)
			break
		}
	}
	if int64(cost) > n {
		r.RetryAfter = lim.Window + time.Duration(L)
		return r, plan{}
	}
	left := counted
	for i, c := range src {
		if left -= int64(c); left <= n-int64(cost) {
			r.RetryAfter = time.Duration(start + int64(i+1)*L)
			break
		}
	}
	return r, plan{}
}

// charge writes an admitted plan: it moves the window forward to the
// plan's slot and sets that slot's count.
func (w *window) charge(p plan) {
	if w.slot != p.slot {
		*w = window{slot: p.slot, last: p.next}
	}
	if d := p.next - w.last; d > Slots {
		w.counts = [Slots + 1]uint32{}
	} else if d > 0 {
		copy(w.counts[:], w.counts[d:])
		clear(w.counts[Slots+1-d:])
	}
	w.last = p.next
	w.counts[Slots] = p.count
}

// gone reports whether every counted slot has left: then the window's
// state equals no state.
func (w *window) gone(now int64) bool { return w.last+Slots < floorDiv(now, w.slot) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
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
	for k, w := range s.win {
		if w.gone(now) {
			delete(s.win, k)
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
		n += len(s.tat) + len(s.win)
		s.mu.Unlock()
	}
	return n
}
