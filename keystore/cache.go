package keystore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore/apikey"
)

// numStripes is how many generation counters guard the cache. A write bumps
// the counter of each hash it touches; more stripes mean fewer needless
// re-reads of unrelated keys after a write.
const numStripes = 4096

// cache holds credentials of known hashes and a bounded memory of unknown
// ones, in front of the backend.
//
// Staleness: a lookup that misses notes its hash's generation before it
// reads the backend and stores it with what it read; an entry is served only while
// its generation is still current. A write bumps the generation after its
// commit and before it returns. So a lookup that read the old record while a
// revoke committed stores an entry that is already outdated, whenever
// ristretto gets round to applying the asynchronous Set, and it is never
// served. Ristretto's Del is immediate but its Set is not, so Del alone
// cannot give this guarantee.
type cache struct {
	gens   [numStripes]atomic.Uint64
	pos    *ristretto.Cache[uint64, *entry]
	neg    *ristretto.Cache[uint64, *entry] // nil when disabled
	closed atomic.Bool
	// lifeMu keeps ristretto's Close apart from everything that writes to
	// it (a Set or Del racing Close sends on a closed channel; Clear and
	// Close together both stop its worker). Writers share it; Close and
	// Clear hold it alone. Gets need none: they work on a closed cache.
	lifeMu sync.RWMutex
	// clearing: a clear of every entry is scheduled (invalidateAll).
	clearing atomic.Bool
}

// entry is one cached lookup result; cred is nil for an unknown hash. The
// cache is keyed by 64 bits of the hash, so the full hash is kept and
// compared too.
type entry struct {
	hash apikey.Hash
	gen  uint64
	cred *authz.Credential
}

func newCache(maxBytes, negEntries int64) (*cache, error) {
	// Ristretto wants about ten counters per item it may hold; an entry
	// costs a few hundred bytes.
	items := max(maxBytes/256, 1)
	pos, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters:        items * 10,
		MaxCost:            maxBytes,
		BufferItems:        64,
		IgnoreInternalCost: true,
		ShouldUpdate:       newerEntry,
		Metrics:            true, // sharded counters: cheap, and what /metrics shows
	})
	if err != nil {
		return nil, fmt.Errorf("create cache: %w", err)
	}
	c := &cache{pos: pos}
	if negEntries > 0 {
		c.neg, err = ristretto.NewCache(&ristretto.Config[uint64, *entry]{
			NumCounters:        negEntries * 10,
			MaxCost:            negEntries,
			BufferItems:        64,
			IgnoreInternalCost: true,
			ShouldUpdate:       newerEntry,
			Metrics:            true,
		})
		if err != nil {
			pos.Close()
			return nil, fmt.Errorf("create negative cache: %w", err)
		}
	}
	return c, nil
}

// newerEntry keeps a slower lookup's older read from replacing a newer one.
func newerEntry(cur, prev *entry) bool { return cur.gen >= prev.gen }

func cacheKey(h apikey.Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

func (c *cache) stripe(k uint64) *atomic.Uint64 { return &c.gens[k%numStripes] }

// get returns a current cached result for h: (cred, true) for a known key,
// (nil, true) for a known-unknown hash, (nil, false) on a miss.
func (c *cache) get(h apikey.Hash) (*authz.Credential, bool) {
	k := cacheKey(h)
	gen := c.stripe(k).Load()
	if e, ok := c.pos.Get(k); ok && e.gen == gen && e.hash == h {
		return e.cred, true
	}
	if c.neg != nil {
		if e, ok := c.neg.Get(k); ok && e.gen == gen && e.hash == h {
			return nil, true
		}
	}
	return nil, false
}

// generation is read before a backend read whose result will be filled in.
func (c *cache) generation(h apikey.Hash) uint64 { return c.stripe(cacheKey(h)).Load() }

// fill stores a lookup result read at generation gen.
func (c *cache) fill(h apikey.Hash, gen uint64, cred *authz.Credential) {
	k := cacheKey(h)
	e := &entry{hash: h, gen: gen, cred: cred}
	c.lifeMu.RLock()
	defer c.lifeMu.RUnlock()
	if c.closed.Load() {
		return
	}
	if cred != nil {
		c.pos.Set(k, e, credentialCost(cred))
		return
	}
	if c.neg != nil {
		c.neg.Set(k, e, 1)
	}
}

// invalidateAll makes every cached result outdated, after writes may have
// been missed.
func (c *cache) invalidateAll() {
	for i := range c.gens {
		c.gens[i].Add(1)
	}
	// Outdated entries are never served; clearing only frees their memory.
	// A clear resets ristretto's counters, ten per item the cache may hold
	// (seconds for a large cache under the race detector), and the
	// follower calls this on its one watch goroutine: so it runs aside,
	// once for any number of invalidations while it waits.
	if c.clearing.CompareAndSwap(false, true) {
		go c.clear()
	}
}

func (c *cache) clear() {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	// Reset first: an invalidation during this clear schedules another.
	c.clearing.Store(false)
	if c.closed.Load() {
		return
	}
	c.pos.Clear()
	if c.neg != nil {
		c.neg.Clear()
	}
}

// invalidate makes every cached result for h outdated. It runs after the
// write's commit, before the write returns.
func (c *cache) invalidate(h apikey.Hash) {
	k := cacheKey(h)
	c.stripe(k).Add(1)
	c.lifeMu.RLock()
	defer c.lifeMu.RUnlock()
	if c.closed.Load() {
		return
	}
	c.pos.Del(k)
	if c.neg != nil {
		c.neg.Del(k)
	}
}

func (c *cache) isClosed() bool { return c.closed.Load() }

// Stats are the store's counters since Open, for metrics.
type Stats struct {
	CacheHits    uint64 // known keys served from the cache
	NegativeHits uint64 // unknown keys answered from the negative cache
	CacheMisses  uint64 // lookups that read the backend
	LookupErrors uint64 // lookups that failed (the Check failed closed)
	// Following: the cache may serve (always, with bbolt; with a shared
	// backend, while this replica follows every write).
	Following bool
	// CacheResets counts whole-cache drops after writes may have been
	// missed (a shared backend's replica cut off, or compacted history).
	CacheResets uint64
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	c := s.cache
	st := Stats{
		CacheHits: c.pos.Metrics.Hits(), LookupErrors: s.lookupErrors.Load(),
		Following: s.fresh == nil || s.fresh(), CacheResets: s.resets.Load(),
	}
	if c.neg != nil {
		st.NegativeHits = c.neg.Metrics.Hits()
		st.CacheMisses = c.neg.Metrics.Misses()
	} else {
		st.CacheMisses = c.pos.Metrics.Misses()
	}
	return st
}

func (c *cache) close() {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed.Swap(true) {
		return
	}
	c.pos.Close()
	if c.neg != nil {
		c.neg.Close()
	}
}

// credentialCost estimates the bytes a cached credential holds.
func credentialCost(c *authz.Credential) int64 {
	n := 200 + len(c.ID) + len(c.Name) + len(c.DisplayPrefix) + len(c.TenantID) + len(c.OrgID) +
		len(c.UserID) + len(c.Environment) + len(c.Tier) + 2*len(c.ScopesHeader) + 16*len(c.Scopes) +
		32*len(c.AllowedIPs) + 64*(len(c.Limits)+len(c.UserLimits))
	for _, l := range c.Limits {
		n += len(l.Name)
	}
	for _, l := range c.UserLimits {
		n += len(l.Name)
	}
	return int64(n)
}

// LookupKey implements authz.Lookup: cache first, then the backend. While
// a shared backend's writes are not being followed, the cache is not
// trusted and every lookup reads the backend.
func (s *Store) LookupKey(ctx context.Context, h apikey.Hash) (*authz.Credential, bool, error) {
	if s.cache.isClosed() {
		return nil, false, ErrClosed
	}
	fresh := s.fresh == nil || s.fresh()
	if fresh {
		if cred, ok := s.cache.get(h); ok {
			return cred, cred != nil, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, false, fmt.Errorf("look up key: %w", err)
	}
	gen := s.cache.generation(h)
	cred, err := s.readCredential(ctx, h)
	if err != nil {
		s.lookupErrors.Add(1)
		return nil, false, err
	}
	if s.testHookBeforeFill != nil {
		s.testHookBeforeFill()
	}
	if fresh {
		s.cache.fill(h, gen, cred)
	}
	return cred, cred != nil, nil
}

// readCredential reads the credential for h; nil if unknown.
func (s *Store) readCredential(ctx context.Context, h apikey.Hash) (*authz.Credential, error) {
	l := lookups.Get().(*lookup)
	l.s, l.h = s, h
	err := s.checkView(ctx, l.read)
	cred := l.cred
	*l = lookup{read: l.read}
	lookups.Put(l)
	if err != nil {
		return nil, fmt.Errorf("look up key: %w", err)
	}
	return cred, nil
}

// lookup is one readCredential's state. A cache miss is the Check path's
// slow case, and its closure, the hash it captured and the record it
// decoded into were four allocations of their own: pooled, they are
// none. Nothing of it outlives the read: the credential is built anew,
// its strings those of the record's own decoded copy.
type lookup struct {
	s    *Store
	h    apikey.Hash
	k    storedKey
	cred *authz.Credential
	read func(Tx) error // run, bound once
}

var lookups = sync.Pool{New: func() any {
	l := &lookup{}
	l.read = l.run
	return l
}}

func (l *lookup) run(tx Tx) error {
	s, h, k := l.s, &l.h, &l.k
	l.cred = nil
	v, err := tx.Get(bucketHashes, h[:])
	if v == nil || err != nil {
		return err
	}
	if id, old := s.legacy.id(*h); old && isHashedRecord(v) {
		// An older build wrote the key by id since (legacyWrites),
		// under the id's text.
		found := false
		if v, err = tx.Get(bucketKeys, []byte(id)); err != nil {
			return err
		} else if isRecordByID(v) {
			err, found = decodeKeyRecord(id, nil, v, k), true
		} else {
			found, err = getKeyRecord(tx, id, k)
		}
		if err != nil {
			return err
		}
		if !found || !bytes.Equal(k.Hash, h[:]) {
			return fmt.Errorf("key %s, written by an older build, is not that of its hash", id)
		}
	} else if isHashedRecord(v) {
		// Schema 3: the record itself, one read.
		if err := decodeKeyRecord("", h[:], v, k); err != nil {
			return err
		}
	} else if err := readIndexed(tx, v, k); err != nil {
		return err
	}
	cred := k.credential()
	// Read in the same snapshot as the key, so a credential never pairs
	// a key with a user record of another moment.
	if cred.UserLimits, err = s.userLimits(tx, k.TenantID, k.UserID); err != nil {
		return err
	}
	if cred.Accounts, err = s.accountsOf(tx, k.TenantID, k.OrgID, k.UserID); err != nil {
		return err
	}
	cred.Metered = cred.Metered || len(cred.Accounts) > 0
	l.cred = cred
	return nil
}

// readIndexed reads into k the key a hash index value of before schema 3
// names by its id (a store part way through its upgrade).
func readIndexed(tx Tx, v []byte, k *storedKey) error {
	id, err := decodeIndexID(v)
	if err != nil {
		return err
	}
	found, err := getKeyRecord(tx, id, k)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("hash index names key %s, which is missing", id)
	}
	return nil
}
