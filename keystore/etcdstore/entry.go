package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Each replica owns one entry, replicas/<id>, under a lease of its own: its
// value is the revision the replica has applied ("-": it serves no cache),
// and writers wait on it (waitReplicas). The entry has one writer, the
// tend goroutine, which writes it only if it is exactly as it last left
// it: anything else means another process holds the id, or etcd was
// restored to an older history.

// registration is tend's view of the entry.
type registration struct {
	lease   clientv3.LeaseID // 0: not registered
	rev     int64            // mod revision of the last write to the entry
	value   string           // what that write said
	renewed time.Time        // when the last successful renewal was sent
}

// errHeld: another lease holds the entry this replica would claim.
var errHeld = errors.New("replica entry held under another lease")

// heldEntry remembers since when an entry has been held under one lease,
// to tell a crashed predecessor's entry (its lease runs out) from a live
// replica's (renewed for good).
type heldEntry struct {
	lease clientv3.LeaseID
	since time.Time
}

// claim creates this replica's entry under a new lease if no entry exists.
// An entry under another lease is errHeld until it has been held for
// longer than a lease lives, and ErrReplicaIDInUse after.
func (b *Backend) claim(ctx context.Context, reg *registration, held *heldEntry) error {
	key := b.entryKey()
	for attempt := 0; ; attempt++ {
		began := time.Now()
		if reg.lease == 0 {
			ttl := int64((b.cfg.ReplicaTTL + time.Second - 1) / time.Second)
			l, err := b.cli.Grant(ctx, ttl)
			if err != nil {
				return err
			}
			reg.lease = l.ID
			b.lease.Store(int64(l.ID))
		}
		v := b.ackValue()
		before := b.applied.Load()
		resp, err := b.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, v, clientv3.WithLease(reg.lease))).
			Else(clientv3.OpGet(key)).Commit()
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && attempt == 0 {
			reg.lease = 0
			continue
		}
		if err != nil {
			return err
		}
		if err := b.checkHeader(resp.Header, before); err != nil {
			b.rewind(err)
		}
		if resp.Succeeded {
			b.registered(reg, resp.Header.Revision, v, began)
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			continue // gone since: claim it
		}
		kv := kvs[0]
		if kv.Lease == int64(reg.lease) {
			// Ours already: a restore brought back this replica's entry.
			b.registered(reg, kv.ModRevision, string(kv.Value), began)
			return nil
		}
		if held.lease != clientv3.LeaseID(kv.Lease) || held.since.IsZero() {
			*held = heldEntry{clientv3.LeaseID(kv.Lease), time.Now()}
		}
		if time.Since(held.since) > b.cfg.ReplicaTTL+time.Second {
			return fmt.Errorf("%w: %q is held by etcd lease %x, renewed for over %v: give each replica its own id (store.etcd.replica_id, --replica-id or KEYGATE_REPLICA_ID; in Kubernetes the pod name)",
				ErrReplicaIDInUse, b.cfg.ReplicaID, kv.Lease, b.cfg.ReplicaTTL)
		}
		return errHeld
	}
}

// registered records a successful claim: the lease was renewed when the
// claim was sent.
func (b *Backend) registered(reg *registration, rev int64, value string, began time.Time) {
	reg.rev, reg.value, reg.renewed = rev, value, began
	b.entryRev.Store(rev)
	b.idErr.Store(nil)
	b.armStale(began)
	b.goFresh(&b.leaseUp)
	b.publishedFollowing(value)
}

// unregistered forgets the entry: writers no longer wait for this replica,
// so it must not serve its cache.
func (b *Backend) unregistered(reg *registration, why string) {
	*reg = registration{}
	b.entryRev.Store(0)
	b.staleMu.Lock()
	b.timerGen++ // the stale timer of the lost lease has nothing left to do
	b.staleMu.Unlock()
	b.goStale(&b.leaseUp, why)
}

// tend keeps this replica's entry: it claims it, renews its lease three
// times per TTL, publishes the applied revision whenever it changes, and at
// least once a second checks that the entry is as it left it, which is how
// a restored etcd is noticed even by a replica whose watch never broke.
func (b *Backend) tend(reg registration) {
	defer b.wg.Done()
	tick := time.NewTicker(min(b.cfg.ReplicaTTL/3, time.Second))
	defer tick.Stop()
	var (
		retry backoff
		held  heldEntry
	)
	for b.ctx.Err() == nil {
		err := b.tendOnce(&reg, &held)
		if err == nil || errors.Is(err, errHeld) {
			retry.reset()
			select {
			case <-b.ctx.Done():
			case <-b.ackNow:
			case <-tick.C:
			}
			continue
		}
		if b.ctx.Err() == nil {
			b.log.Debug("etcd store: replica entry", "replica", b.cfg.ReplicaID, "err", err)
		}
		b.sleep(retry.next())
	}
}

func (b *Backend) tendOnce(reg *registration, held *heldEntry) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.ReplicaTTL/3)
	defer cancel()
	if reg.lease == 0 || reg.rev == 0 {
		err := b.claim(ctx, reg, held)
		if errors.Is(err, ErrReplicaIDInUse) {
			if prev := b.idErr.Swap(&err); prev == nil {
				b.log.Error("etcd store: another live replica uses this replica's id; this one serves no cache and reports not ready until the id is free", "replica", b.cfg.ReplicaID, "err", err)
			}
		}
		return err
	}
	if time.Since(reg.renewed) >= b.cfg.ReplicaTTL/3 {
		began := time.Now()
		resp, err := b.cli.KeepAliveOnce(ctx, reg.lease)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			// The lease ran out (etcd was out of reach or stalled for
			// longer than the TTL) or a restore dropped it: writers
			// stopped waiting for this replica.
			b.unregistered(reg, "etcd lease expired")
			return nil
		}
		if err != nil {
			return err
		}
		if err := b.checkCluster(resp.ResponseHeader); err != nil {
			b.rewind(err)
		}
		reg.renewed = began
		b.armStale(began)
		b.goFresh(&b.leaseUp)
	}
	return b.sync(ctx, reg)
}

// sync writes the entry if what it should say changed, and checks it
// either way, in one transaction that succeeds only if the entry is as this
// replica last wrote it.
func (b *Backend) sync(ctx context.Context, reg *registration) error {
	key := b.entryKey()
	v := b.ackValue()
	var then []clientv3.Op
	if v != reg.value {
		then = append(then, clientv3.OpPut(key, v, clientv3.WithLease(reg.lease)))
	}
	before := b.applied.Load()
	resp, err := b.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", reg.rev)).
		Then(then...).Else(clientv3.OpGet(key)).Commit()
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		b.unregistered(reg, "etcd lease expired")
		return nil
	}
	if err != nil {
		return err
	}
	if err := b.checkHeader(resp.Header, before); err != nil {
		b.rewind(err)
		return nil // publish again once the watch starts over
	}
	if resp.Succeeded {
		if len(then) > 0 {
			reg.rev, reg.value = resp.Header.Revision, v
			b.entryRev.Store(reg.rev)
		}
		b.publishedFollowing(reg.value)
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	switch {
	case len(kvs) == 0:
		b.rewind(fmt.Errorf("%w: this replica's entry is gone from etcd", errRewound))
		// Written again (created) by the next pass.
		reg.rev, reg.value = 0, ""
		b.entryRev.Store(0)
		return b.claim(ctx, reg, &heldEntry{})
	case kvs[0].ModRevision > reg.rev && kvs[0].Lease != int64(reg.lease):
		err := fmt.Errorf("%w: %q was written under etcd lease %x at revision %d", ErrReplicaIDInUse, b.cfg.ReplicaID, kvs[0].Lease, kvs[0].ModRevision)
		b.idErr.Store(&err)
		b.log.Error("etcd store: another process wrote this replica's entry; this one serves no cache and reports not ready until the id is free", "replica", b.cfg.ReplicaID, "err", err)
		b.unregistered(reg, "replica id in use")
		return nil
	default:
		b.rewind(fmt.Errorf("%w: this replica's entry was last written at revision %d, etcd has it at %d", errRewound, reg.rev, kvs[0].ModRevision))
		// Take the entry as etcd has it, and write it again (under this
		// replica's lease) on the next pass.
		reg.rev, reg.value = kvs[0].ModRevision, ""
		b.entryRev.Store(reg.rev)
		return nil
	}
}
