package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/vizerror"
	"github.com/keygate/keygate/keystore/apikey"
)

// Compile-time guards: the store is what the decision core looks keys up in,
// asks which tenant an org belongs to, and tells about key use.
var (
	_ authz.Lookup       = (*Store)(nil)
	_ authz.OrgDirectory = (*Store)(nil)
	_ authz.Recorder     = (*Store)(nil)
)

// Sentinel errors callers branch on; each is wrapped with context. A
// refused request (ErrNotFound, ErrInvalid, ErrConflict, ErrOrgKeyLimit,
// ErrNotMetered) also carries what was wrong as a message for the client,
// which internal/vizerror's As finds (see refuse).
var (
	// ErrNotFound: no tenant, org or key with that id.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: a field of the request is not acceptable.
	ErrInvalid = errors.New("invalid")
	// ErrConflict: the change contradicts stored state (a key that is
	// already imported, a revoked key that cannot change).
	ErrConflict = errors.New("conflict")
	// ErrOrgKeyLimit: the org already has its maximum of usable keys.
	ErrOrgKeyLimit = errors.New("organization key limit reached")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
	// ErrUnavailable: a shared backend could not be reached.
	ErrUnavailable = errors.New("key store unavailable")
	// ErrUnconfirmed: a write committed, but some replica did not confirm
	// it in time (a shared backend; see etcdstore).
	ErrUnconfirmed = errors.New("write committed but not confirmed by every replica")
)

// refuse returns an error of kind (ErrInvalid, ErrConflict, ErrOrgKeyLimit,
// ErrNotMetered) that says why a request was refused. Its text is
// "<kind>: <why>", for logs and wrapping; the why alone is marked as the
// message a client may see (vizerror), without the kind or the operations
// that wrap it ("rotate key: invalid: "). It names fields, ids and values
// the request gave, never a key, a hash or an internal cause.
func refuse(kind error, format string, args ...any) error {
	why := fmt.Sprintf(format, args...)
	return vizerror.WrapWithMessage(fmt.Errorf("%w: %s", kind, why), why)
}

// notFound returns ErrNotFound for the record of kind what ("key",
// "tenant", "org") with id, shown to a client as `key "x" not found`.
func notFound(what, id string) error {
	return vizerror.WrapWithMessage(fmt.Errorf("%s %q: %w", what, id, ErrNotFound), fmt.Sprintf("%s %q not found", what, id))
}

// DefaultMaxRotationGrace is Options.MaxRotationGrace's default.
const DefaultMaxRotationGrace = 7 * 24 * time.Hour

// Options configures a Store. The zero value of each field means its default.
type Options struct {
	// Format is the key format new keys are generated in. Zero: prefix "ak".
	Format apikey.Format
	// MaxOrgKeys is how many usable keys one org may hold: active ones,
	// including a rotated key still in its grace period. Zero: 5.
	// Negative: no limit.
	MaxOrgKeys int
	// MaxRotationGrace bounds the grace period of a rotation, during which
	// the old key keeps working beside its successor. Zero: 7 days.
	// Negative: no maximum.
	//
	// A grace period only has to outlast the roll-out of the new key to
	// whatever holds the old one: a week covers a weekly release train with
	// a weekend nobody deploys on. Any longer, and rotating away a key that
	// leaked leaves it working for as long, and rotation becomes a way to
	// keep two keys where one was given.
	MaxRotationGrace time.Duration
	// Tiers lists the rate-limit tiers a key may name; the first is the
	// default for new keys. Nil: standard, enterprise.
	Tiers []string
	// TierRefills gives the keys of a tier, created with no balance or
	// schedule of their own, a balance starting at the refill's amount and
	// refilled on its schedule (a tier's monthly allowance of credits).
	TierRefills map[string]Refill
	// AccountGrants opens a credit account for every tenant, org or user
	// (by kind: AccountTenant, AccountOrg, AccountUser) created from now
	// on, with the grant's amount (and refill schedule), in the
	// transaction that creates it: once per owner, exactly. Owners created
	// before keep what they have. See accounts.go.
	AccountGrants map[string]Grant
	// CacheMaxBytes bounds the memory of cached credentials. Zero: 64 MiB.
	CacheMaxBytes int64
	// NegativeCacheEntries bounds how many unknown hashes are remembered.
	// Zero: 100,000. Negative: no negative cache.
	NegativeCacheEntries int64
	// LastUsedFlush is how often batched last-used times are written; it is
	// also the most a crash can lose of them. Zero: 10 s.
	LastUsedFlush time.Duration
	// UsageRetention is how long per-key usage counts are kept; older
	// hours are deleted about hourly. Zero: 90 days. Negative: forever.
	UsageRetention time.Duration
	// OpenTimeout is how long Open waits for another process's lock on the
	// file. Zero: 1 s.
	OpenTimeout time.Duration
	// LookupTimeout bounds a Check's read of the backend on a cache miss,
	// whatever deadline the caller has (Istio's is 600 s): a shared backend
	// out of reach then fails the Check closed quickly. Zero: 1 s.
	LookupTimeout time.Duration
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// ReadOnly opens an existing store for lookups only (`keygate check`):
	// every write fails, and the file is not created or changed. It still
	// waits for a running server's exclusive lock.
	ReadOnly bool
	// StartUnavailable, for a shared backend, lets New return while the
	// backend does not answer: the store then retries in the background,
	// with backoff, and until it has opened every lookup and write fails
	// with ErrUnavailable (fail closed) and Ready says why.
	StartUnavailable bool
	// Logger receives what the store does in the background (opening a
	// store that was unavailable). Nil: slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Format == (apikey.Format{}) {
		o.Format = apikey.MustFormat(apikey.DefaultPrefix)
	}
	if o.MaxOrgKeys == 0 {
		o.MaxOrgKeys = 5
	}
	if o.MaxRotationGrace == 0 {
		o.MaxRotationGrace = DefaultMaxRotationGrace
	}
	if o.Tiers == nil {
		o.Tiers = []string{"standard", "enterprise"}
	}
	if o.CacheMaxBytes == 0 {
		o.CacheMaxBytes = 64 << 20
	}
	if o.NegativeCacheEntries == 0 {
		o.NegativeCacheEntries = 100_000
	}
	if o.LastUsedFlush == 0 {
		o.LastUsedFlush = 10 * time.Second
	}
	if o.UsageRetention == 0 {
		o.UsageRetention = DefaultUsageRetention
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = time.Second
	}
	if o.LookupTimeout == 0 {
		o.LookupTimeout = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Store is the key store: a Backend, with a cache in front for the Check
// path. It is safe for concurrent use.
type Store struct {
	b     Backend
	opts  Options
	cache *cache
	usage *usage
	// fresh, for a shared backend, reports whether the cache may be served
	// (see Shared.Fresh); nil for bbolt, whose every write passes here.
	fresh func() bool
	// ledger holds live credit balances (see credits.go).
	ledger *ledger
	// anyAccounts: whether the store holds a credit account (accountsOf);
	// anyUsers, a user record (userLimits).
	anyAccounts, anyUsers seen
	// legacy: keys an older build wrote by id (shared backends only).
	legacy legacyWrites
	// textIndex: the store's index entries and ids are in the text form
	// of before schema 3 (a read-only open of an older store).
	textIndex atomic.Bool
	// lookupErrors counts failed lookups, for metrics.
	lookupErrors atomic.Uint64
	// resets counts whole-cache drops a shared backend asked for.
	resets atomic.Uint64
	// orgTenants maps org id to tenant id for OrgTenant; see there.
	orgTenants sync.Map
	// opening, while a store started unavailable has not opened yet,
	// holds why (see Options.StartUnavailable); nil once open.
	opening  atomic.Pointer[error]
	stopOpen context.CancelFunc

	// testHookBeforeFill runs between a cache miss's read and its cache
	// fill, so a test can commit a write in exactly that gap.
	testHookBeforeFill func()

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the bbolt store at path.
func Open(path string, opts Options) (*Store, error) {
	b, err := OpenBolt(path, opts.ReadOnly, opts.OpenTimeout)
	if err != nil {
		return nil, err
	}
	s, err := New(b, opts)
	if err != nil {
		b.Close()
		return nil, err
	}
	return s, nil
}

// New serves the records of backend b, which the store then owns (Close
// closes it). For a Shared backend it follows other processes' writes from
// here on.
func New(b Backend, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	for _, t := range opts.Tiers {
		if err := ValidTierName(t); err != nil {
			return nil, fmt.Errorf("open store %s: %w", b, err)
		}
	}
	for t, r := range opts.TierRefills {
		if !slices.Contains(opts.Tiers, t) {
			return nil, fmt.Errorf("open store %s: refill of tier %q, which is not a tier", b, t)
		}
		if _, err := validRefill(r); err != nil {
			return nil, fmt.Errorf("open store %s: refill of tier %q: %w", b, t, err)
		}
	}
	if err := validGrants(opts.AccountGrants); err != nil {
		return nil, fmt.Errorf("open store %s: %w", b, err)
	}
	c, err := newCache(opts.CacheMaxBytes, opts.NegativeCacheEntries)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", b, err)
	}
	s := &Store{b: b, opts: opts, cache: c, ledger: newLedger(), stopOpen: func() {}}
	fail := func(err error) (*Store, error) {
		c.close()
		return nil, fmt.Errorf("open store %s: %w", b, err)
	}
	sh, shared := b.(Shared)
	follow := func() error {
		if !shared {
			return nil
		}
		s.fresh = sh.Fresh
		return sh.Follow(follower{s})
	}
	// A store that may start unavailable follows first (Follow does not
	// need the backend to answer) and checks its schema in the background
	// until the backend answers.
	later := shared && opts.StartUnavailable
	timeout := opTimeout
	if later {
		if err := follow(); err != nil {
			return fail(err)
		}
		timeout = startTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if older, err := checkSchema(ctx, b, !opts.ReadOnly, opts.Logger); err != nil {
		if !later || !errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
			return fail(err)
		}
		s.notOpenYet(err)
		bg, stop := context.WithCancel(context.Background())
		s.stopOpen = stop
		go s.openLater(bg)
	} else {
		s.textIndex.Store(older)
		if !later {
			if err := follow(); err != nil {
				return fail(err)
			}
		}
	}
	s.usage = startUsage(s, opts.LastUsedFlush)
	return s, nil
}

// startTimeout bounds New's first look at a shared backend that may be
// unavailable (Options.StartUnavailable).
const startTimeout = 3 * time.Second

// openLater checks the schema of a store that was unavailable at New until
// it answers. A schema this build cannot read is logged, and the store
// stays unavailable.
func (s *Store) openLater(ctx context.Context) {
	delay := 200 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
		cctx, cancel := context.WithTimeout(ctx, opTimeout)
		older, err := checkSchema(cctx, s.b, !s.opts.ReadOnly, s.opts.Logger)
		cancel()
		if err == nil {
			s.textIndex.Store(older)
			s.opening.Store(nil)
			s.opts.Logger.Info("key store opened", "store", s.b.String())
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.notOpenYet(err)
		level := slog.LevelDebug
		if !errors.Is(err, ErrUnavailable) {
			level = slog.LevelError // answers, but cannot be read by this build
		}
		s.opts.Logger.Log(ctx, level, "key store not opened yet", "store", s.b.String(), "err", err)
	}
}

// notOpenYet records why the store cannot serve yet.
func (s *Store) notOpenYet(cause error) {
	err := fmt.Errorf("%w: store %s not opened yet: %w", ErrUnavailable, s.b, cause)
	s.opening.Store(&err)
}

// notOpen is why the store cannot serve yet; nil once it can.
func (s *Store) notOpen() error {
	if p := s.opening.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *Store) now() time.Time { return s.opts.Now().UTC() }

// Backend names where the records live (a file path, etcd endpoints).
func (s *Store) Backend() string { return s.b.String() }

// Close flushes pending last-used times and closes the backend. Lookups
// after Close fail with ErrClosed, cached keys included.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stopOpen()
		s.legacy.close()
		s.cache.close()
		flushErr := s.usage.stop()
		s.closeErr = errors.Join(flushErr, s.b.Close())
	})
	return s.closeErr
}

// Flush writes pending last-used times and usage counts and gives unspent
// credit slices back now, so the records show what was used and spent.
func (s *Store) Flush() error { return errors.Join(s.usage.flush(), s.returnAll(false)) }

// opTimeout bounds one admin write or read, whatever the caller's context
// allows: a shared backend that stops answering must not hang the admin API.
const opTimeout = 10 * time.Second

// update runs fn in a write transaction bounded by ctx and opTimeout and,
// once it has committed, invalidates the cache for every hash fn touched,
// before returning: the next lookup of those keys reads the committed state.
func (s *Store) update(ctx context.Context, fn func(tx Tx, touch func(apikey.Hash)) error) error {
	return s.commit(ctx, s.b.Update, fn)
}

// commit is update through write, the backend's Update or Batch.
func (s *Store) commit(ctx context.Context, write func(context.Context, func(Tx) error) error, fn func(tx Tx, touch func(apikey.Hash)) error) error {
	if s.cache.isClosed() {
		return ErrClosed
	}
	if err := s.notOpen(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var touched []apikey.Hash
	err := write(ctx, func(tx Tx) error {
		touched = touched[:0]
		return fn(tx, func(h apikey.Hash) { touched = append(touched, h) })
	})
	// Even a failed write may have committed (a replica that did not
	// confirm it, a store file replaced during the commit): dropping a
	// cache entry is always safe, serving one a commit outdated is not.
	for _, h := range touched {
		s.cache.invalidate(h)
	}
	return err
}

// view runs fn on a snapshot, bounded by ctx and opTimeout.
func (s *Store) view(ctx context.Context, fn func(tx Tx) error) error {
	if s.cache.isClosed() {
		return ErrClosed
	}
	if err := s.notOpen(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	return s.b.View(ctx, fn)
}

// checkView is view for the Check path, bounded by checkBound.
func (s *Store) checkView(ctx context.Context, fn func(tx Tx) error) error {
	if err := s.notOpen(); err != nil {
		return err
	}
	ctx, cancel := s.checkBound(ctx)
	defer cancel()
	return s.b.View(ctx, fn)
}

// checkBound bounds ctx by LookupTimeout for the Check path's work on a
// shared backend (a read, a credit reservation), whatever the caller's
// deadline, so that a backend out of reach fails the Check closed quickly.
// A local file answers or fails at once, and a caller's deadline already
// sooner needs no second one: neither pays for a timer.
func (s *Store) checkBound(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); s.fresh == nil || ok && time.Until(d) <= s.opts.LookupTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.LookupTimeout)
}

// Ping reports whether the backend can be read, waiting at most 5 s.
// Readiness asks Ready, which knows more for a shared backend.
func (s *Store) Ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.cache.isClosed() {
		return ErrClosed
	}
	if err := s.notOpen(); err != nil {
		return err
	}
	return s.b.Ping(ctx)
}

// Ready reports whether the store decides correctly now (readiness): it
// has opened, and its backend answers, or (for a shared backend that
// still trusts its cache) an error that Degraded marks.
func (s *Store) Ready(ctx context.Context) error {
	if s.cache.isClosed() {
		return ErrClosed
	}
	if err := s.notOpen(); err != nil {
		return err
	}
	if r, ok := s.b.(Readier); ok {
		return r.Ready(ctx)
	}
	return s.b.Ping(ctx)
}
