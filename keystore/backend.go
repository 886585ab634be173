package keystore

import (
	"context"
	"encoding/json"
	"fmt"
)

// Backend is where the store's records live: the embedded bbolt file
// (OpenBolt) or a store shared by many replicas (keystore/etcdstore). The
// store sees named buckets of sorted byte keys and nothing else, so that
// every lifecycle rule is written once, above both.
type Backend interface {
	// View runs fn on a consistent snapshot.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn and commits its writes atomically. fn may run more than
	// once (a backend with optimistic concurrency retries it on conflict),
	// so it must not change anything outside the transaction; callers apply
	// such effects after Update returns. When Update returns nil the write
	// is durable and, for a shared backend, visible to every replica's next
	// lookup.
	Update(ctx context.Context, fn func(Tx) error) error
	// Batch is Update for bookkeeping writes (last-used times, credit
	// spending) that no cached credential depends on: a shared backend need
	// not wait for other replicas to apply them.
	Batch(ctx context.Context, fn func(Tx) error) error
	// Ping reports whether the backend answers (readiness).
	Ping(ctx context.Context) error
	// String names the backend for logs and errors, without credentials.
	String() string
	Close() error
}

// Shared is a Backend that other processes write to as well. The store
// follows their writes to keep its cache and in-memory views true.
type Shared interface {
	Backend
	// Follow starts delivering every committed write, from any process, to
	// f, in commit order. It is called once, before the store serves.
	Follow(f Follower) error
	// Fresh reports whether writes are still being followed: while it is
	// false, lookups bypass the cache and read the backend, which fails
	// closed if the backend cannot be reached.
	Fresh() bool
}

// Readier is a Backend that knows better than Ping whether the store can
// decide correctly now (a shared backend that still trusts its cache while
// its server is out of reach).
type Readier interface {
	Ready(ctx context.Context) error
}

// Degraded marks err as a readiness problem the store can still decide
// correctly under: ready, but degraded.
func Degraded(err error) error { return degradedError{err} }

type degradedError struct{ err error }

func (e degradedError) Error() string  { return e.err.Error() }
func (e degradedError) Unwrap() error  { return e.err }
func (e degradedError) Degraded() bool { return true }

// Follower receives the writes a Shared backend follows.
type Follower interface {
	// Changed reports that key in bucket now holds value (nil: deleted);
	// prev is the value before, when the backend knows it.
	Changed(bucket string, key, value, prev []byte)
	// Reset reports that writes may have been missed (a compacted history, a
	// lost connection): everything derived from earlier reads must go.
	Reset()
}

// Tx is one transaction over the buckets. Slices it returns are valid
// only until fn returns.
type Tx interface {
	// Get returns the value of key, nil if absent.
	Get(bucket string, key []byte) ([]byte, error)
	Put(bucket string, key, value []byte) error
	Delete(bucket string, key []byte) error
	// Scan calls fn with each key of bucket that starts with prefix, in key
	// order, from the first key at or after start (nil: the prefix),
	// until fn returns false or an error.
	Scan(bucket string, prefix, start []byte, fn func(k, v []byte) (bool, error)) error
}

// Buckets of the schema: one per entity, a hash index, and index buckets
// whose keys are "<parent id>/<key id>" so that listing by tenant or org and
// counting an org's keys read only that parent's entries.
const (
	bucketMeta         = "meta"
	bucketTenants      = "tenants"
	bucketOrgs         = "orgs"
	bucketKeys         = "keys"           // key id -> storedKey (keycodec.go)
	bucketHashes       = "key_hashes"     // sha256 -> key id (encodeIndexID)
	bucketKeysByTenant = "keys_by_tenant" // tenant id/key id -> empty
	bucketKeysByOrg    = "keys_by_org"    // org id/key id -> empty
	bucketSlots        = "slots"          // tenant id/org id/slot -> key id
	bucketUsers        = "users"          // tenant id/user id -> User JSON
	// Admin tokens: records by id, and the index of their hashes (hex).
	bucketAdminTokens      = "admin_tokens"       // token id -> record JSON
	bucketAdminTokenHashes = "admin_token_hashes" // hex sha256 -> token id
	// The audit log, in time order: "<unix ns, 20 digits>/<writer>/<seq>".
	bucketAudit = "audit"
	// Per-key usage: "<key id>/<hour, unix s>/<writer>" -> that writer's
	// totals for the hour (absolute, so a retried write counts once).
	bucketUsage = "usage"
	// Credit accounts of tenants, orgs and users: "tenant/<id>",
	// "org/<id>", "user/<tenant id>/<user id>" -> Account JSON.
	bucketAccounts = "accounts"
)

// HashIndexBucket is the bucket whose keys are raw SHA-256 digests of API
// keys (32 bytes, not text). A backend whose keys are shown to people or
// printed in its logs (etcd) encodes them.
const HashIndexBucket = bucketHashes

// Buckets lists every bucket of the schema, for backends that create them
// and for Copy.
var Buckets = []string{bucketMeta, bucketTenants, bucketOrgs, bucketKeys, bucketHashes, bucketKeysByTenant, bucketKeysByOrg, bucketSlots, bucketUsers,
	bucketAdminTokens, bucketAdminTokenHashes, bucketAudit, bucketUsage, bucketAccounts}

// addedBuckets are buckets added to schema version 1 after its first
// release. A file written before holds none of them until a writable open
// creates them; a read-only open (keygate check) reads them as empty
// rather than refuse a store that was valid when it was written.
var addedBuckets = map[string]bool{bucketUsers: true, bucketAdminTokens: true, bucketAdminTokenHashes: true, bucketAudit: true, bucketUsage: true, bucketAccounts: true}

func getJSON(tx Tx, bucket, id string, v any) (bool, error) {
	raw, err := tx.Get(bucket, []byte(id))
	if err != nil {
		return false, err
	}
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("decode record %s: %w", id, err)
	}
	return true, nil
}

func putJSON(tx Tx, bucket, id string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", id, err)
	}
	return tx.Put(bucket, []byte(id), raw)
}

// scanIDs calls fn with the key id of each index entry under parent.
func (s *Store) scanIDs(tx Tx, bucket, parent string, fn func(id string) error) error {
	prefix := s.indexPrefix(parent)
	return tx.Scan(bucket, prefix, nil, func(k, _ []byte) (bool, error) {
		id, err := s.indexID(k[len(prefix):])
		if err != nil {
			return false, err
		}
		return true, fn(id)
	})
}

// indexPrefix is the prefix of parent's entries in an index bucket (keys
// by tenant, by org): as schema 3 writes them, or in the text form of
// before when the store was opened read-only without being upgraded.
func (s *Store) indexPrefix(parent string) []byte {
	if s.textIndex.Load() {
		return []byte(parent + "/")
	}
	return parentKey(parent)
}

// idKeyOf is id as the keys bucket and the index entries hold it.
func (s *Store) idKeyOf(id string) []byte {
	if s.textIndex.Load() {
		return []byte(id)
	}
	return idKey(id)
}

// indexID reads the key id at the end of an index entry (after its
// parent's prefix), or of a key of the keys bucket.
func (s *Store) indexID(tail []byte) (string, error) {
	if s.textIndex.Load() {
		return string(tail), nil
	}
	return decodeIndexID(tail)
}

func forEachJSON[T any](tx Tx, bucket string, fn func(*T)) error {
	return tx.Scan(bucket, nil, nil, func(k, v []byte) (bool, error) {
		var x T
		if err := json.Unmarshal(v, &x); err != nil {
			return false, fmt.Errorf("decode record %s: %w", k, err)
		}
		fn(&x)
		return true, nil
	})
}
