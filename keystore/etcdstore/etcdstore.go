package etcdstore

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/keygate/keygate/keystore"
)

var _ keystore.Shared = (*Backend)(nil)

// Sentinel errors callers branch on.
var (
	// ErrUnreachable: etcd did not answer within the dial timeout.
	ErrUnreachable = errors.New("etcd unreachable")
	// ErrConflicts: a transaction kept meeting concurrent writes.
	ErrConflicts = errors.New("etcd transaction: too many conflicting writes")
	// ErrReplicaIDInUse: a live replica holds this replica's id. Two
	// processes under one id would share one entry of the write barrier, so
	// a write could return before one of them applied it.
	ErrReplicaIDInUse = errors.New("replica id in use by another live replica")
)

// Config says how to reach etcd and how replicas keep in step.
type Config struct {
	// Endpoints are etcd's client URLs (http://host:2379 or https://...).
	Endpoints []string
	// Prefix is the key prefix Keygate owns in etcd. Empty: "/keygate/".
	Prefix string
	// DialTimeout bounds connecting and every check at startup. Zero: 5 s.
	DialTimeout time.Duration
	// TLS, when set, is used for the client connections.
	TLS *tls.Config
	// Username and Password, when set, authenticate to etcd.
	Username, Password string
	// ReplicaTTL is how long a replica that can no longer reach etcd keeps
	// answering from its cache, and so also how long a write waits for a
	// replica that stopped answering. Zero: 10 s.
	ReplicaTTL time.Duration
	// ReplicaID names this replica among the others. Empty: the host name
	// and a random suffix.
	ReplicaID string
	// Logger receives watch and lease trouble. Nil: slog.Default().
	Logger *slog.Logger
	// StartWithoutEtcd lets Open and Follow succeed while etcd does not
	// answer: the replica then keeps trying, with backoff, and until it
	// follows the store every read fails (fail closed). A server wants
	// this (a replica that exits is restarted in a loop, and one that runs
	// can say it is not ready); a one-shot command does not.
	StartWithoutEtcd bool
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Endpoints) == 0 {
		return c, errors.New("no etcd endpoints")
	}
	if c.Prefix == "" {
		c.Prefix = "/keygate/"
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.ReplicaTTL == 0 {
		c.ReplicaTTL = 10 * time.Second
	}
	if c.ReplicaTTL < 2*time.Second {
		return c, fmt.Errorf("replica TTL %v: etcd leases last at least 2s", c.ReplicaTTL)
	}
	if c.ReplicaID == "" {
		host, _ := os.Hostname()
		var b [4]byte
		if _, err := crand.Read(b[:]); err != nil {
			return c, err
		}
		c.ReplicaID = host + "-" + hex.EncodeToString(b[:])
	}
	if strings.Contains(c.ReplicaID, "/") {
		return c, fmt.Errorf("replica id %q contains '/'", c.ReplicaID)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Backend is the etcd backend. Open it, then hand it to keystore.New.
type Backend struct {
	cfg      Config
	cli      *clientv3.Client
	data     string // prefix of the buckets
	replicas string // prefix of the replicas' applied revisions
	log      *slog.Logger

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Following (see follow.go).
	follower  keystore.Follower
	watchUp   atomic.Bool
	leaseUp   atomic.Bool
	published atomic.Bool  // the entry says this replica follows: writers wait for it
	applied   atomic.Int64 // highest revision whose writes were applied
	lease     atomic.Int64
	entryRev  atomic.Int64 // mod revision of this replica's last write to its entry
	committed atomic.Int64 // revision of the last commit through this replica (Sync)
	ackNow    chan struct{}
	staleMu   sync.Mutex // orders going stale against coming back
	timer     *time.Timer
	timerGen  uint64
	up        chan struct{} // closed once the replica first follows writes
	upOnce    sync.Once

	// History checks (see history.go).
	clusterID   atomic.Uint64 // etcd's cluster id, from the first answer
	resync      atomic.Bool   // the watch must start over from the present
	rewoundAt   atomic.Int64  // unix nanoseconds of the last rewind seen; 0: none
	watchMu     sync.Mutex
	watchCancel context.CancelFunc
	idErr       atomic.Pointer[error] // why this replica cannot hold its id; nil: it can

	// peersChanged is closed and replaced whenever a replica's entry
	// changes, waking writers waiting for confirmations.
	peersMu      sync.Mutex
	peersChanged chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Open connects to etcd and checks that it answers; an etcd that does not
// answer within the dial timeout fails Open, unless cfg.StartWithoutEtcd
// says to keep trying.
func Open(cfg Config) (*Backend, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open etcd store: %w", err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         cfg.TLS,
		Username:    cfg.Username,
		Password:    cfg.Password,
		// Keygate logs through slog; the client's own zap logging would
		// repeat every reconnection attempt.
		Logger: zap.NewNop(),
		// Detect a dead connection well within a replica TTL.
		DialKeepAliveTime:    cfg.ReplicaTTL / 3,
		DialKeepAliveTimeout: cfg.ReplicaTTL / 3,
	})
	if err != nil {
		return nil, fmt.Errorf("open etcd store %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	b := &Backend{
		cfg: cfg, cli: cli, log: cfg.Logger,
		data: cfg.Prefix + "data/", replicas: cfg.Prefix + "replicas/",
		ackNow: make(chan struct{}, 1), peersChanged: make(chan struct{}), up: make(chan struct{}),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	ctx, cancel := context.WithTimeout(b.ctx, cfg.DialTimeout)
	defer cancel()
	resp, err := cli.Get(ctx, b.data, clientv3.WithCountOnly())
	switch {
	case err == nil:
		b.clusterID.Store(resp.Header.ClusterId)
	case cfg.StartWithoutEtcd:
		b.log.Warn("etcd store: etcd does not answer; every Check fails closed (503) and the replica reports not ready until it does", "store", b.String(), "err", err)
	default:
		b.cancel()
		cli.Close()
		return nil, fmt.Errorf("open store %s: %w (waited %v): %v", b, ErrUnreachable, cfg.DialTimeout, err)
	}
	return b, nil
}

// String names the backend: its endpoints and prefix.
func (b *Backend) String() string {
	return "etcd " + strings.Join(b.cfg.Endpoints, ",") + " " + b.cfg.Prefix
}

// ReplicaID is this replica's name among the others.
func (b *Backend) ReplicaID() string { return b.cfg.ReplicaID }

// maxAttempts bounds the retries of one conflicting transaction.
const maxAttempts = 16

// View runs fn on one snapshot: the revision of its first read, which is
// linearizable. It is not retried (read closures collect as they go), so a
// scan long enough to outlive etcd's compaction of its revision fails.
func (b *Backend) View(ctx context.Context, fn func(keystore.Tx) error) error {
	if b.ctx.Err() != nil {
		return keystore.ErrClosed
	}
	return b.closedErr(fn(newTx(ctx, b.cli, b.data, false)))
}

// Update commits fn's writes if nothing fn read has changed meanwhile,
// running fn again otherwise, and returns once every live replica has
// applied the commit.
func (b *Backend) Update(ctx context.Context, fn func(keystore.Tx) error) error {
	// A write must not be confirmed against replicas that follow a
	// history etcd no longer has: look before writing.
	if b.follower != nil {
		if err := b.verify(ctx); errors.Is(err, errRewound) {
			b.rewind(err)
		}
	}
	rev, err := b.commit(ctx, fn)
	if err != nil || rev == 0 {
		return err
	}
	return b.waitReplicas(ctx, rev)
}

// Batch is Update without waiting for the other replicas.
func (b *Backend) Batch(ctx context.Context, fn func(keystore.Tx) error) error {
	_, err := b.commit(ctx, fn)
	return err
}

var _ keystore.Syncer = (*Backend)(nil)

// Sync returns once every live replica has applied every write this
// replica committed before it was called (writes made with Batch,
// confirmed together): it checks etcd's history as Update does before it
// writes, then waits as Update waits after, for the last of those
// commits.
func (b *Backend) Sync(ctx context.Context) error {
	if b.ctx.Err() != nil {
		return keystore.ErrClosed
	}
	rev := b.committed.Load()
	if rev == 0 {
		return nil
	}
	if b.follower != nil {
		if err := b.verify(ctx); errors.Is(err, errRewound) {
			b.rewind(err)
		}
	}
	return b.closedErr(b.waitReplicas(ctx, rev))
}

// commit returns the revision of the commit, 0 when fn wrote nothing.
func (b *Backend) commit(ctx context.Context, fn func(keystore.Tx) error) (int64, error) {
	if b.ctx.Err() != nil {
		return 0, keystore.ErrClosed
	}
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		t := newTx(ctx, b.cli, b.data, true)
		if err := fn(t); err != nil {
			if retryable(err) {
				continue
			}
			return 0, b.closedErr(err)
		}
		if len(t.order) == 0 {
			return 0, nil
		}
		before := b.applied.Load()
		resp, err := b.cli.Txn(ctx).If(t.compares()...).Then(t.ops()...).Commit()
		if err != nil {
			return 0, b.closedErr(fmt.Errorf("%w: etcd commit: %w", keystore.ErrUnavailable, err))
		}
		if err := b.checkHeader(resp.Header, before); err != nil {
			b.rewind(err)
		}
		if resp.Succeeded {
			rev := resp.Header.Revision
			for last := b.committed.Load(); last < rev && !b.committed.CompareAndSwap(last, rev); last = b.committed.Load() {
			}
			return rev, nil
		}
		// Someone wrote what this attempt read: back off a little, so
		// that writers contending for one record take turns.
		select {
		case <-time.After(time.Duration(rand.IntN(attempt*2)+1) * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return 0, ErrConflicts
}

func (b *Backend) closedErr(err error) error {
	if err != nil && b.ctx.Err() != nil {
		return keystore.ErrClosed
	}
	return err
}

// Ping reads from etcd (a linearizable read, so a member cut off from the
// quorum fails it).
func (b *Backend) Ping(ctx context.Context) error {
	before := b.applied.Load()
	resp, err := b.cli.Get(ctx, b.data+"meta/", clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("%w: etcd %s: %w", keystore.ErrUnavailable, strings.Join(b.cfg.Endpoints, ","), err)
	}
	if err := b.checkHeader(resp.Header, before); err != nil {
		b.rewind(err)
	}
	return nil
}

// Ready reports whether this replica decides correctly now: it holds its
// replica id, and either etcd answers (a replica that is not following
// writes reads etcd for every lookup, which is slower but right) or it
// still follows every write, so its cache is trusted for the rest of its
// TTL (then it is ready but degraded: keys it has not cached fail closed).
func (b *Backend) Ready(ctx context.Context) error {
	if err := b.idErr.Load(); err != nil {
		return *err
	}
	// Answer before the caller gives up: a Ping that times out still
	// leaves the cache to say whether the replica is ready.
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-time.Until(d)/5))
		defer cancel()
	}
	err := b.Ping(ctx)
	if err != nil && b.Fresh() {
		return keystore.Degraded(err)
	}
	return err
}

// Close stops following, withdraws this replica (writers stop waiting for
// it at once) and closes the connection.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		if id := b.lease.Load(); id != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = b.cli.Revoke(ctx, clientv3.LeaseID(id))
			cancel()
		}
		b.cancel()
		b.wg.Wait()
		b.staleMu.Lock()
		if b.timer != nil {
			b.timer.Stop()
		}
		b.staleMu.Unlock()
		b.closeErr = b.cli.Close()
	})
	return b.closeErr
}
