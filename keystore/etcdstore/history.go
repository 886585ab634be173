package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
)

// errRewound: etcd's history is not the one this replica followed. An
// operator restored etcd from a snapshot (its revisions went back, and a
// restore as a new cluster changes the cluster id too), or this replica's
// own entry is older than its last write to it. Writes made after the
// snapshot are gone from etcd, and a watch resumed at a revision the
// restored store has not reached yet would stay silent while new writes
// pass below it: everything cached must go, and the watch starts over.
var errRewound = errors.New("etcd history rewound (restored from a snapshot?)")

// checkHeader compares what an answer says about etcd with what this
// replica has seen: the cluster (checkCluster) and the revision. Only
// answers of linearizable requests (reads by default, transactions) may be
// given: a member's own revision lags the cluster's, and so does a lease
// renewal's (the leader's applied revision), and would look like a rewind.
// before is b.applied as loaded before the request was sent: the watch
// may apply revisions newer than the answer while the answer travels, and
// only a revision this replica had applied before asking is one etcd must
// still be at.
func (b *Backend) checkHeader(h *etcdserverpb.ResponseHeader, before int64) error {
	if err := b.checkCluster(h); err != nil || h == nil {
		return err
	}
	if h.Revision < before {
		return fmt.Errorf("%w: etcd is at revision %d, below revision %d this replica applied", errRewound, h.Revision, before)
	}
	return nil
}

// checkCluster records etcd's cluster id from any answer, and reports a
// change: a restore as a new cluster.
func (b *Backend) checkCluster(h *etcdserverpb.ResponseHeader) error {
	if h == nil || h.ClusterId == 0 {
		return nil
	}
	if prev := b.clusterID.Swap(h.ClusterId); prev != 0 && prev != h.ClusterId {
		return fmt.Errorf("%w: etcd cluster id changed from %x to %x", errRewound, prev, h.ClusterId)
	}
	return nil
}

// verify checks, with one linearizable read of this replica's entry, that
// etcd still has the history this replica follows.
func (b *Backend) verify(ctx context.Context) error {
	// Loaded before the read: the entry only moves forward, so a write
	// made meanwhile makes the read newer than want, never older.
	want := b.entryRev.Load()
	before := b.applied.Load()
	resp, err := b.cli.Get(ctx, b.entryKey())
	if err != nil {
		return err
	}
	if err := b.checkHeader(resp.Header, before); err != nil {
		return err
	}
	if want == 0 {
		return nil
	}
	if len(resp.Kvs) == 0 {
		// Its lease expired (then this replica stopped trusting its
		// cache before, and writers stopped waiting for it), or etcd was
		// restored from before this replica registered.
		return fmt.Errorf("%w: this replica's entry is gone from etcd", errRewound)
	}
	if got := resp.Kvs[0].ModRevision; got < want {
		return fmt.Errorf("%w: this replica's entry was last written at revision %d, etcd has it at %d", errRewound, want, got)
	}
	return nil
}

// rewind drops everything this replica derived from etcd and makes its
// watch start over from etcd's present. Until then the replica reads etcd
// for every lookup, and publishes that writers need not wait for it.
// Writes through this replica wait a whole replica TTL from now (see
// waitReplicas): by then every other replica has either looked at etcd's
// history itself or stopped trusting its cache.
func (b *Backend) rewind(why error) {
	if b.follower == nil {
		return
	}
	b.rewoundAt.Store(time.Now().UnixNano())
	first := !b.resync.Swap(true)
	b.staleMu.Lock()
	b.watchUp.Store(false)
	b.published.Store(false)
	b.staleMu.Unlock()
	// Reset even if the cache was not trusted: it may be trusted again
	// before the watch starts over.
	b.follower.Reset()
	if first && b.ctx.Err() == nil {
		b.log.Warn("etcd store: cache dropped; every Check reads etcd until this replica follows the store as it is now",
			"reason", why.Error(), "replica", b.cfg.ReplicaID)
	}
	b.watchMu.Lock()
	if b.watchCancel != nil {
		b.watchCancel()
	}
	b.watchMu.Unlock()
	b.signalAck()
}

// holdAfterRewind is how long writes still have to wait after this
// replica saw a rewind.
func (b *Backend) holdAfterRewind() time.Duration {
	at := b.rewoundAt.Load()
	if at == 0 {
		return 0
	}
	return max(b.cfg.ReplicaTTL-time.Since(time.Unix(0, at)), 0)
}
