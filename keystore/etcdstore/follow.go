package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keygate/keygate/keystore"
)

// notServing is what a replica publishes while it trusts no cache: writers
// need not wait for it.
const notServing = "-"

// Follow claims this replica's id, starts following writes from the
// current revision and returns once the replica follows them, so that the
// store serves from its cache only while it is told about every write.
//
// A live replica holding the same id fails Follow with ErrReplicaIDInUse
// (after waiting a TTL for a crashed predecessor's entry to expire). An
// etcd that does not answer fails it with ErrUnreachable, unless
// Config.StartWithoutEtcd: then Follow returns at once and the replica
// keeps trying in the background, reading etcd (and so failing closed)
// for every lookup until it follows.
func (b *Backend) Follow(f keystore.Follower) error {
	if b.follower != nil {
		return errors.New("etcd store: already followed")
	}
	b.follower = f
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.DialTimeout)
	defer cancel()
	rev, err := b.present(ctx)
	if err != nil {
		if !b.cfg.StartWithoutEtcd {
			return fmt.Errorf("follow etcd: %w: %v", ErrUnreachable, err)
		}
		b.start(0, registration{})
		return nil
	}
	// Everything up to rev the store reads fresh, and the watch delivers
	// everything after.
	b.applied.Store(rev)
	var reg registration
	claimCtx, cancelClaim := context.WithTimeout(b.ctx, b.cfg.DialTimeout+b.cfg.ReplicaTTL+2*time.Second)
	defer cancelClaim()
	var held heldEntry
	for {
		err = b.claim(claimCtx, &reg, &held)
		if !errors.Is(err, errHeld) {
			break
		}
		if !b.sleep(500 * time.Millisecond) {
			return keystore.ErrClosed
		}
	}
	switch {
	case errors.Is(err, ErrReplicaIDInUse):
		return fmt.Errorf("follow etcd: %w", err)
	case err != nil && !b.cfg.StartWithoutEtcd:
		return fmt.Errorf("follow etcd: register replica %s: %w: %v", b.cfg.ReplicaID, ErrUnreachable, err)
	}
	b.start(rev+1, reg)
	upCtx, cancelUp := context.WithTimeout(b.ctx, b.cfg.DialTimeout)
	defer cancelUp()
	select {
	case <-b.up:
		return nil
	case <-upCtx.Done():
		if b.cfg.StartWithoutEtcd {
			return nil
		}
		return fmt.Errorf("follow etcd: not following writes within %v: %w", b.cfg.DialTimeout, ErrUnreachable)
	}
}

func (b *Backend) start(next int64, reg registration) {
	b.wg.Add(3)
	go b.watchData(next)
	go b.tend(reg)
	go b.watchPeers()
}

// present reads etcd's current revision (linearizably), from which a
// replica follows without trusting anything it cached: a revision below
// one applied is expected here, a new cluster is not.
func (b *Backend) present(ctx context.Context) (int64, error) {
	resp, err := b.cli.Get(ctx, b.data, clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	if err := b.checkCluster(resp.Header); err != nil {
		b.rewind(err)
	}
	return resp.Header.Revision, nil
}

// Fresh reports whether this replica is following every write now, and
// says so to writers.
func (b *Backend) Fresh() bool { return b.following() && b.published.Load() }

// following: the watch is up and the lease renewed in time. Writers are
// told only after (Fresh), so that no write returns without waiting for a
// replica that serves its cache.
func (b *Backend) following() bool { return b.watchUp.Load() && b.leaseUp.Load() }

func (b *Backend) entryKey() string { return b.replicas + b.cfg.ReplicaID }

func (b *Backend) ackValue() string {
	if !b.following() {
		return notServing
	}
	return strconv.FormatInt(b.applied.Load(), 10)
}

// armStale makes the replica stop trusting its cache a little before its
// lease, renewed by a request sent at began, can expire: writers stop
// waiting for it only then. The fifth of the TTL kept in hand covers a
// timer that fires late on a busy machine and clocks that run apart.
func (b *Backend) armStale(began time.Time) {
	b.staleMu.Lock()
	defer b.staleMu.Unlock()
	b.timerGen++
	gen := b.timerGen
	if b.timer != nil {
		b.timer.Stop()
	}
	b.timer = time.AfterFunc(b.cfg.ReplicaTTL*8/10-time.Since(began), func() {
		b.staleMu.Lock()
		current := gen == b.timerGen
		b.staleMu.Unlock()
		if current {
			b.goStale(&b.leaseUp, "etcd lease not renewed in time")
		}
	})
}

// goStale takes one of the conditions of freshness away and, if that ends
// freshness, forgets everything cached: writes made while this replica did
// not follow them are then read from etcd, never served from memory.
func (b *Backend) goStale(cond *atomic.Bool, why string) {
	b.staleMu.Lock()
	defer b.staleMu.Unlock()
	wasFresh := b.Fresh()
	if !cond.Swap(false) {
		return
	}
	b.published.Store(false)
	if !wasFresh {
		return
	}
	if b.ctx.Err() == nil {
		b.log.Warn("etcd store: not following writes; every Check reads etcd until this recovers", "reason", why, "replica", b.cfg.ReplicaID)
	}
	b.follower.Reset()
	b.signalAck()
}

func (b *Backend) goFresh(cond *atomic.Bool) {
	b.staleMu.Lock()
	cond.Store(true)
	b.staleMu.Unlock()
	b.signalAck()
}

// publishedFollowing records what the entry now says: that this replica
// follows writes (then it is Fresh) or that it does not.
func (b *Backend) publishedFollowing(value string) {
	b.staleMu.Lock()
	wasFresh := b.Fresh()
	b.published.Store(value != notServing && b.following())
	fresh := b.Fresh()
	b.staleMu.Unlock()
	if fresh && !wasFresh {
		b.upOnce.Do(func() { close(b.up) })
		b.log.Debug("etcd store: following writes", "replica", b.cfg.ReplicaID, "revision", value)
	}
}

func (b *Backend) signalAck() {
	select {
	case b.ackNow <- struct{}{}:
	default:
	}
}

func (b *Backend) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.ctx.Done():
		return false
	}
}

// backoff spaces out retries against an etcd that does not answer: from
// 200 ms, doubling to 5 s, with jitter so that replicas do not retry in
// step.
type backoff struct{ n int }

func (r *backoff) next() time.Duration {
	d := 200 * time.Millisecond << min(r.n, 5)
	r.n++
	d = min(d, 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

func (r *backoff) reset() { r.n = 0 }

// watchData follows the buckets for good, from revision next (0: from the
// present, trusting nothing cached).
//
// A watch that breaks is resumed where it stopped, and meanwhile the cache
// stays trusted: a write committed in the gap does not return before this
// replica has applied it (the barrier waits for its acknowledgement) or
// its lease has expired (and it went stale before that). Before resuming,
// the replica checks that etcd still has the history it follows (see
// history.go); a gap it cannot resume, or one that lasts, makes it forget
// its cache.
func (b *Backend) watchData(next int64) {
	defer b.wg.Done()
	var (
		gap     *time.Timer
		retry   backoff
		resumed bool // next continues a watch this replica applied
	)
	defer func() {
		if gap != nil {
			gap.Stop()
		}
	}()
	for b.ctx.Err() == nil {
		if b.resync.Swap(false) {
			next = 0
		}
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.DialTimeout)
		var err error
		switch {
		case next == 0:
			var rev int64
			if rev, err = b.present(ctx); err == nil {
				b.applied.Store(rev)
				next = rev + 1
			}
		case resumed:
			if err = b.verify(ctx); errors.Is(err, errRewound) {
				b.rewind(err)
			}
		}
		cancel()
		if err != nil {
			if !b.sleep(retry.next()) {
				return
			}
			continue
		}
		// WithRequireLeader ends the watch when its member loses the
		// quorum, instead of leaving it open and silent.
		wctx, cancelWatch := context.WithCancel(clientv3.WithRequireLeader(b.ctx))
		b.watchMu.Lock()
		b.watchCancel = cancelWatch
		b.watchMu.Unlock()
		if b.resync.Load() {
			cancelWatch() // a rewind seen since the check above
		}
		wch := b.cli.Watch(wctx, b.data, clientv3.WithPrefix(), clientv3.WithRev(next),
			clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
		why := "watch closed"
		for resp := range wch {
			if resp.Created {
				if resp.Header.Revision < next-1 {
					// A member's own revision may lag; a linearizable
					// read tells a rewind from that.
					vctx, vcancel := context.WithTimeout(b.ctx, b.cfg.DialTimeout)
					err := b.verify(vctx)
					vcancel()
					if err != nil {
						if errors.Is(err, errRewound) {
							b.rewind(err)
						}
						why = err.Error()
						break
					}
				}
				if gap != nil {
					gap.Stop()
					gap = nil
				}
				retry.reset()
				b.goFresh(&b.watchUp)
				continue
			}
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				// The history this replica missed is gone: forget all of
				// it and start again from the present.
				why = "watch history compacted"
				b.resync.Store(true)
				break
			}
			if err := resp.Err(); err != nil {
				why = err.Error()
				break
			}
			for _, ev := range resp.Events {
				b.apply(ev)
			}
			if len(resp.Events) > 0 {
				b.applied.Store(resp.Events[len(resp.Events)-1].Kv.ModRevision)
				b.signalAck()
			}
		}
		cancelWatch()
		resumed = true
		if b.resync.Load() {
			b.goStale(&b.watchUp, why)
		} else if gap == nil {
			gap = time.AfterFunc(b.cfg.ReplicaTTL/3, func() { b.goStale(&b.watchUp, why+" and not resumed") })
		}
		if !b.resync.Load() {
			next = b.applied.Load() + 1
		}
		if !b.sleep(200 * time.Millisecond) {
			return
		}
	}
}

func (b *Backend) apply(ev *clientv3.Event) {
	rest, ok := strings.CutPrefix(string(ev.Kv.Key), b.data)
	if !ok {
		return
	}
	bucket, rawKey, ok := strings.Cut(rest, "/")
	if !ok {
		return
	}
	key, ok := decodeKey(bucket, rawKey)
	if !ok {
		return
	}
	var value, prev []byte
	if ev.Type == mvccpb.PUT {
		value = ev.Kv.Value
		if value == nil {
			value = []byte{}
		}
	}
	if ev.PrevKv != nil {
		prev = ev.PrevKv.Value
	}
	b.follower.Changed(bucket, key, value, prev)
}

// watchPeers wakes waiting writers whenever a replica's entry changes.
func (b *Backend) watchPeers() {
	defer b.wg.Done()
	for b.ctx.Err() == nil {
		for range b.cli.Watch(clientv3.WithRequireLeader(b.ctx), b.replicas, clientv3.WithPrefix()) {
			b.wakeWriters()
		}
		b.wakeWriters()
		if !b.sleep(200 * time.Millisecond) {
			return
		}
	}
}

func (b *Backend) wakeWriters() {
	b.peersMu.Lock()
	close(b.peersChanged)
	b.peersChanged = make(chan struct{})
	b.peersMu.Unlock()
}

// waitReplicas returns once every other live replica has applied revision
// rev or serves no cache. A replica that stops answering is waited for
// until its lease expires; one that answers but never confirms, for twice
// the TTL, after which the write reports keystore.ErrUnconfirmed. A
// confirmation counts only if it was written in the history etcd has now
// (an entry never names a revision above its own), and for a TTL after
// this replica saw etcd's history rewind, writes wait that TTL out too.
func (b *Backend) waitReplicas(ctx context.Context, rev int64) error {
	deadline := time.NewTimer(2 * b.cfg.ReplicaTTL)
	defer deadline.Stop()
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		b.peersMu.Lock()
		changed := b.peersChanged
		b.peersMu.Unlock()
		before := b.applied.Load()
		resp, err := b.cli.Get(ctx, b.replicas, clientv3.WithPrefix())
		if err != nil {
			return fmt.Errorf("%w: list replicas: %v", keystore.ErrUnconfirmed, err)
		}
		if err := b.checkHeader(resp.Header, before); err != nil {
			b.rewind(err)
		}
		var waiting []string
		for _, kv := range resp.Kvs {
			id := strings.TrimPrefix(string(kv.Key), b.replicas)
			if id == b.cfg.ReplicaID || string(kv.Value) == notServing {
				continue
			}
			if applied, err := strconv.ParseInt(string(kv.Value), 10, 64); err != nil || applied < rev || applied >= kv.ModRevision {
				waiting = append(waiting, id)
			}
		}
		if hold := b.holdAfterRewind(); hold > 0 {
			waiting = append(waiting, fmt.Sprintf("(etcd history rewound: %v more)", hold.Round(time.Millisecond)))
		}
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-poll.C:
		case <-deadline.C:
			return fmt.Errorf("%w: revision %d not applied by %s within %v", keystore.ErrUnconfirmed, rev, strings.Join(waiting, ", "), 2*b.cfg.ReplicaTTL)
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", keystore.ErrUnconfirmed, ctx.Err())
		}
	}
}
