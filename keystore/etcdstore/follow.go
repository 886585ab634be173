package etcdstore

import (
	"context"
	"errors"
	"fmt"
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

// Follow registers this replica, starts following writes from the current
// revision and returns once the watch is established, so that the store
// serves from its cache only while it is told about every write.
func (b *Backend) Follow(f keystore.Follower) error {
	if b.follower != nil {
		return errors.New("etcd store: already followed")
	}
	b.follower = f
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.DialTimeout)
	defer cancel()
	resp, err := b.cli.Get(ctx, b.data, clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("follow etcd: %w: %v", ErrUnreachable, err)
	}
	// The store has read nothing yet: everything up to here it will read
	// fresh, and the watch delivers everything after.
	b.applied.Store(resp.Header.Revision)
	began := time.Now()
	if err := b.register(ctx); err != nil {
		return fmt.Errorf("follow etcd: register replica %s: %w", b.cfg.ReplicaID, err)
	}
	b.leaseUp.Store(true)
	b.armStale(began)
	up := make(chan struct{})
	b.wg.Add(4)
	go b.watchData(resp.Header.Revision+1, up)
	go b.keepAlive()
	go b.ack()
	go b.watchPeers()
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("follow etcd: watch not established within %v: %w", b.cfg.DialTimeout, ErrUnreachable)
	}
}

// Fresh reports whether this replica is following every write now.
func (b *Backend) Fresh() bool { return b.watchUp.Load() && b.leaseUp.Load() }

// register grants a lease and publishes this replica under it.
func (b *Backend) register(ctx context.Context) error {
	ttl := int64((b.cfg.ReplicaTTL + time.Second - 1) / time.Second)
	l, err := b.cli.Grant(ctx, ttl)
	if err != nil {
		return err
	}
	b.lease.Store(int64(l.ID))
	_, err = b.cli.Put(ctx, b.replicas+b.cfg.ReplicaID, b.ackValue(), clientv3.WithLease(l.ID))
	return err
}

func (b *Backend) ackValue() string {
	if !b.Fresh() {
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

// goStale takes one of the two conditions of freshness away and, if that
// ends freshness, forgets everything cached: writes made while this replica
// did not follow them are then read from etcd, never served from memory.
func (b *Backend) goStale(cond *atomic.Bool, why string) {
	b.staleMu.Lock()
	defer b.staleMu.Unlock()
	wasFresh := b.Fresh()
	if !cond.Swap(false) || !wasFresh {
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
	wasFresh := b.Fresh()
	cond.Store(true)
	if !wasFresh && b.Fresh() {
		b.log.Info("etcd store: following writes again", "replica", b.cfg.ReplicaID)
	}
	b.staleMu.Unlock()
	b.signalAck()
}

func (b *Backend) signalAck() {
	select {
	case b.ackNow <- struct{}{}:
	default:
	}
}

func (b *Backend) sleep(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-b.ctx.Done():
		return false
	}
}

// watchData follows the buckets from revision from on, for good.
//
// A watch that breaks is resumed where it stopped, and meanwhile the cache
// stays trusted: a write committed in the gap does not return before this
// replica has applied it (the barrier waits for its acknowledgement) or
// its lease has expired (and it went stale before that). Only a gap it
// cannot resume, or one that lasts, makes it forget its cache.
func (b *Backend) watchData(from int64, up chan struct{}) {
	defer b.wg.Done()
	next := from
	var gap *time.Timer
	for b.ctx.Err() == nil {
		// WithRequireLeader ends the watch when its member loses the
		// quorum, instead of leaving it open and silent.
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(b.ctx))
		wch := b.cli.Watch(wctx, b.data, clientv3.WithPrefix(), clientv3.WithRev(next),
			clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
		why := "watch closed"
		for resp := range wch {
			if resp.Created {
				if gap != nil {
					gap.Stop()
					gap = nil
				}
				b.goFresh(&b.watchUp)
				if up != nil {
					close(up)
					up = nil
				}
				continue
			}
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				why = "watch history compacted"
				next = 0
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
		cancel()
		if next == 0 {
			// The history this replica missed is gone: forget all of it
			// and start again from the present.
			b.goStale(&b.watchUp, why)
		} else if gap == nil {
			gap = time.AfterFunc(b.cfg.ReplicaTTL/3, func() { b.goStale(&b.watchUp, why+" and not resumed") })
		}
		if !b.sleep(200 * time.Millisecond) {
			break
		}
		if next != 0 {
			next = b.applied.Load() + 1
			continue
		}
		ctx, cancel2 := context.WithTimeout(b.ctx, b.cfg.DialTimeout)
		resp, err := b.cli.Get(ctx, b.data, clientv3.WithCountOnly())
		cancel2()
		if err == nil {
			b.applied.Store(resp.Header.Revision)
			next = resp.Header.Revision + 1
		}
	}
	if gap != nil {
		gap.Stop()
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

// keepAlive renews the lease three times per TTL. A lease that expired
// meanwhile (etcd was down longer than the TTL) is replaced.
func (b *Backend) keepAlive() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.ReplicaTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		began := time.Now()
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.ReplicaTTL/3)
		_, err := b.cli.KeepAliveOnce(ctx, clientv3.LeaseID(b.lease.Load()))
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			err = b.register(ctx)
		}
		cancel()
		if err != nil {
			if b.ctx.Err() == nil {
				b.log.Debug("etcd store: lease renewal failed", "replica", b.cfg.ReplicaID, "err", err)
			}
			continue
		}
		b.armStale(began)
		b.goFresh(&b.leaseUp)
	}
}

// ack publishes the applied revision (or that this replica serves no
// cache) whenever it changes.
func (b *Backend) ack() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.ReplicaTTL / 3)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.ackNow:
		case <-t.C:
		}
		v := b.ackValue()
		if v == last {
			continue
		}
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.ReplicaTTL/3)
		_, err := b.cli.Put(ctx, b.replicas+b.cfg.ReplicaID, v, clientv3.WithLease(clientv3.LeaseID(b.lease.Load())))
		cancel()
		if err == nil {
			last = v
		}
	}
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
// the TTL, after which the write reports keystore.ErrUnconfirmed.
func (b *Backend) waitReplicas(ctx context.Context, rev int64) error {
	deadline := time.NewTimer(2 * b.cfg.ReplicaTTL)
	defer deadline.Stop()
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		b.peersMu.Lock()
		changed := b.peersChanged
		b.peersMu.Unlock()
		resp, err := b.cli.Get(ctx, b.replicas, clientv3.WithPrefix())
		if err != nil {
			return fmt.Errorf("%w: list replicas: %v", keystore.ErrUnconfirmed, err)
		}
		var waiting []string
		for _, kv := range resp.Kvs {
			id := strings.TrimPrefix(string(kv.Key), b.replicas)
			if id == b.cfg.ReplicaID || string(kv.Value) == notServing {
				continue
			}
			if applied, err := strconv.ParseInt(string(kv.Value), 10, 64); err != nil || applied < rev {
				waiting = append(waiting, id)
			}
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
