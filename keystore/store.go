package keystore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore/apikey"
)

// Compile-time guards: the store is what the decision core looks keys up in,
// asks which tenant an org belongs to, and tells about key use.
var (
	_ authz.Lookup       = (*Store)(nil)
	_ authz.OrgDirectory = (*Store)(nil)
	_ authz.Recorder     = (*Store)(nil)
)

// Sentinel errors callers branch on; each is wrapped with context.
var (
	// ErrNotFound: no tenant, org or key with that id.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: a field of the request is not acceptable.
	ErrInvalid = errors.New("invalid")
	// ErrConflict: the change contradicts stored state (a key that is
	// already imported, a revoked key that cannot change).
	ErrConflict = errors.New("conflict")
	// ErrOrgKeyLimit: the org already has its maximum of active keys.
	ErrOrgKeyLimit = errors.New("organization key limit reached")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
)

// Schema: one bucket per entity, a hash index, and index buckets whose keys
// are "<parent id>/<key id>" so that listing by tenant or org and counting
// an org's keys read only that parent's entries.
var (
	bucketMeta         = []byte("meta")
	bucketTenants      = []byte("tenants")
	bucketOrgs         = []byte("orgs")
	bucketKeys         = []byte("keys")           // key id -> storedKey JSON
	bucketHashes       = []byte("key_hashes")     // sha256 -> key id
	bucketKeysByTenant = []byte("keys_by_tenant") // tenant id/key id -> nil
	bucketKeysByOrg    = []byte("keys_by_org")    // org id/key id -> nil
	bucketSlots        = []byte("slots")          // tenant id/org id/slot -> key id

	metaSchemaVersion = []byte("schema_version")
	schemaVersion     = []byte("1")
)

// Options configures a Store. The zero value of each field means its default.
type Options struct {
	// Format is the key format new keys are generated in. Zero: prefix "ak".
	Format apikey.Format
	// MaxOrgKeys is how many active keys one org may hold. Zero: 5.
	// Negative: no limit.
	MaxOrgKeys int
	// Tiers lists the rate-limit tiers a key may name; the first is the
	// default for new keys. Nil: standard, enterprise.
	Tiers []string
	// CacheMaxBytes bounds the memory of cached credentials. Zero: 64 MiB.
	CacheMaxBytes int64
	// NegativeCacheEntries bounds how many unknown hashes are remembered.
	// Zero: 100,000. Negative: no negative cache.
	NegativeCacheEntries int64
	// LastUsedFlush is how often batched last-used times are written; it is
	// also the most a crash can lose of them. Zero: 10 s.
	LastUsedFlush time.Duration
	// OpenTimeout is how long Open waits for another process's lock on the
	// file. Zero: 1 s.
	OpenTimeout time.Duration
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// ReadOnly opens an existing store for lookups only (`keygate check`):
	// every write fails, and the file is not created or changed. It still
	// waits for a running server's exclusive lock.
	ReadOnly bool
}

func (o Options) withDefaults() Options {
	if o.Format == (apikey.Format{}) {
		o.Format = apikey.MustFormat(apikey.DefaultPrefix)
	}
	if o.MaxOrgKeys == 0 {
		o.MaxOrgKeys = 5
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
	if o.OpenTimeout == 0 {
		o.OpenTimeout = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Store is the key store: bbolt on disk, a cache in front for the Check path.
// It is safe for concurrent use.
type Store struct {
	db    *bolt.DB
	path  string
	opts  Options
	cache *cache
	usage *usage
	// ledger holds live credit balances (see credits.go).
	ledger *ledger
	// lookupErrors counts failed lookups, for metrics.
	lookupErrors atomic.Uint64
	// orgTenants maps org id to tenant id for OrgTenant; see there.
	orgTenants sync.Map

	// testHookBeforeFill runs between a cache miss's bbolt read and its
	// cache fill, so a test can commit a write in exactly that gap.
	testHookBeforeFill func()

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the store at path.
func Open(path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	for _, t := range opts.Tiers {
		if err := ValidTierName(t); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open store %s read-only: %w", path, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.OpenTimeout, ReadOnly: opts.ReadOnly})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: locked by another process: %w", path, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := initSchema(db, opts.ReadOnly); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	c, err := newCache(opts.CacheMaxBytes, opts.NegativeCacheEntries)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db, path: path, opts: opts, cache: c, ledger: newLedger()}
	s.usage = startUsage(s, opts.LastUsedFlush)
	return s, nil
}

func initSchema(db *bolt.DB, readOnly bool) error {
	if readOnly {
		return db.View(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketMeta, bucketTenants, bucketOrgs, bucketKeys, bucketHashes, bucketKeysByTenant, bucketKeysByOrg, bucketSlots} {
				if tx.Bucket(b) == nil {
					return fmt.Errorf("bucket %s missing: not a keygate store", b)
				}
			}
			if v := tx.Bucket(bucketMeta).Get(metaSchemaVersion); !bytes.Equal(v, schemaVersion) {
				return fmt.Errorf("schema version %s, this build reads %s", v, schemaVersion)
			}
			return nil
		})
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketTenants, bucketOrgs, bucketKeys, bucketHashes, bucketKeysByTenant, bucketKeysByOrg, bucketSlots} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(metaSchemaVersion); {
		case v == nil:
			return meta.Put(metaSchemaVersion, schemaVersion)
		case !bytes.Equal(v, schemaVersion):
			return fmt.Errorf("schema version %s, this build reads %s", v, schemaVersion)
		}
		return nil
	})
}

func (s *Store) now() time.Time { return s.opts.Now().UTC() }

// Path returns the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close flushes pending last-used times and closes the file. Lookups after
// Close fail with ErrClosed, cached keys included.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cache.close()
		flushErr := s.usage.stop()
		s.closeErr = errors.Join(flushErr, s.db.Close())
	})
	return s.closeErr
}

// Flush writes pending last-used times now.
func (s *Store) Flush() error { return s.usage.flush() }

// update runs fn in a write transaction and, once it has committed,
// invalidates the cache for every hash fn touched, before returning: the next
// lookup of those keys reads the committed state.
func (s *Store) update(fn func(tx *bolt.Tx, touch func(apikey.Hash)) error) error {
	if s.cache.isClosed() {
		return ErrClosed
	}
	var touched []apikey.Hash
	err := s.db.Update(func(tx *bolt.Tx) error {
		touched = touched[:0]
		return fn(tx, func(h apikey.Hash) { touched = append(touched, h) })
	})
	if err != nil {
		return err
	}
	for _, h := range touched {
		s.cache.invalidate(h)
	}
	return nil
}

func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	if s.cache.isClosed() {
		return ErrClosed
	}
	return s.db.View(fn)
}

func getJSON(b *bolt.Bucket, id string, v any) (bool, error) {
	raw := b.Get([]byte(id))
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("decode record %s: %w", id, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, id string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", id, err)
	}
	return b.Put([]byte(id), raw)
}

// Ping reports whether the file can be read (readiness).
func (s *Store) Ping() error {
	return s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketKeys) == nil {
			return errors.New("keys bucket missing")
		}
		return nil
	})
}
