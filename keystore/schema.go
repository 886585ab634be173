package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/keygate/keygate/keystore/apikey"
)

// Schema versions. Version 1 stored key records as JSON under their ids;
// version 2 in the binary form of keycodec.go; version 3 stores each under
// its key's hash, where a Check reads it in one read, and maps ids to
// hashes. A writable open of a version 1 or 2 store upgrades it; a
// read-only open (keygate check, backups) reads it as it is, since the
// readers take every form.
var (
	metaSchemaVersion = []byte("schema_version")
	schemaVersion     = []byte("3")
	// olderSchemas are the versions this build reads and upgrades.
	olderSchemas = []string{"1", "2"}
)

// upgradeBatch is how many key records one transaction of the upgrade
// rewrites: on bbolt one fsync each; on a shared backend (etcd) a
// transaction carries at most 128 operations by default, in compares (two
// per record: the record and its hash's entry) and in writes (three: the
// record, the id's reference, the id's old key) each.
const (
	upgradeBatchBolt   = 10_000
	upgradeBatchShared = 40
)

// checkSchema fails unless the backend holds a schema this build reads;
// with create, an empty backend is given this build's, and a version 1
// store is upgraded first. log (nil: none) hears of an upgrade.
//
// older reports a store left in an older schema (read-only): its index
// entries and ids are in their text form.
func checkSchema(ctx context.Context, b Backend, create bool, log *slog.Logger) (older bool, err error) {
	return older, checkSchemaVersion(ctx, b, create, log, &older)
}

func checkSchemaVersion(ctx context.Context, b Backend, create bool, log *slog.Logger, older *bool) error {
	var v []byte
	err := b.View(ctx, func(tx Tx) error {
		raw, err := tx.Get(bucketMeta, metaSchemaVersion)
		v = append([]byte(nil), raw...)
		if raw == nil {
			v = nil
		}
		return err
	})
	if err != nil {
		return err
	}
	switch {
	case v == nil && create:
		return b.Update(ctx, func(tx Tx) error {
			cur, err := tx.Get(bucketMeta, metaSchemaVersion)
			switch {
			case err != nil:
				return err
			case cur == nil:
				return tx.Put(bucketMeta, metaSchemaVersion, schemaVersion)
			case string(cur) != string(schemaVersion):
				// Another process created the store meanwhile, with
				// another build.
				return fmt.Errorf("schema version %s, this build reads %s", cur, schemaVersion)
			}
			return nil
		})
	case v == nil:
		return fmt.Errorf("no schema version: not a keygate store")
	case string(v) == string(schemaVersion):
		return nil
	case slices.Contains(olderSchemas, string(v)) && !create:
		*older = true
		return nil
	case slices.Contains(olderSchemas, string(v)):
		return upgradeSchema(ctx, b, string(v), log)
	}
	return fmt.Errorf("schema version %s, this build reads %s and %s", v, strings.Join(olderSchemas, ", "), schemaVersion)
}

// recordUpgrade moves the records of one bucket from the forms of older
// schemas to this one's.
type recordUpgrade struct {
	bucket string
	// old reports a record (key k, value v) still in an older form.
	old func(k, v []byte) bool
	// convert writes, in tx, the record k holding v in its new form. A
	// record it cannot convert it leaves as it is, and tx as it was,
	// reporting false; an error is the backend's, and ends the upgrade.
	convert func(tx Tx, k, v []byte) (bool, error)
}

// schemaUpgrades are the changes from schemas 1 and 2 to 3: each key
// record, JSON (1) or binary by id (2), is written under its hash in the
// binary form of schema 3, and its id (in 16 bytes) then names that hash.
// The hash index's entries, which named the id, are overwritten by the
// records. The index entries of tenants' and orgs' keys take their
// binary form (indexKey).
var schemaUpgrades = []recordUpgrade{
	{bucketKeys, func(_, v []byte) bool { return isRecordByID(v) }, moveUnderHash},
	{bucketKeysByTenant, isOldIndexEntry, rewriteIndexEntry(bucketKeysByTenant)},
	{bucketKeysByOrg, isOldIndexEntry, rewriteIndexEntry(bucketKeysByOrg)},
}

// isRecordByID reports a value of the keys bucket that is a key record
// (schemas 1 and 2), not a reference to one.
func isRecordByID(v []byte) bool {
	return len(v) > 0 && (v[0] == '{' || v[0] == keyRecordV1)
}

func isOldIndexEntry(k, _ []byte) bool { return isTextIndexKey(k) }

// rewriteIndexEntry writes an index entry of bucket in the form of schema
// 3 in place of its text form.
func rewriteIndexEntry(bucket string) func(tx Tx, k, v []byte) (bool, error) {
	return func(tx Tx, k, _ []byte) (bool, error) {
		parent, id, ok := splitTextIndexKey(k)
		if !ok {
			return false, nil
		}
		if err := tx.Put(bucket, indexKey(parent, id), []byte{}); err != nil {
			return false, err
		}
		return true, tx.Delete(bucket, k)
	}
}

// moveUnderHash writes the record of key id, v in a form of schema 1 or
// 2, under its hash. The hash's entry must name this key: a record
// claiming a hash whose entry names another key, or none, is left where
// it is, and both keys read as they did.
func moveUnderHash(tx Tx, id, v []byte) (bool, error) {
	k, err := moveRecord(tx, id, v)
	return k != nil, err
}

// moveRecord is moveUnderHash, returning the key as it is stored now (nil:
// left where it was).
func moveRecord(tx Tx, id, v []byte) (*storedKey, error) {
	var sk storedKey
	if decodeKeyRecord(string(id), nil, v, &sk) != nil || sk.ID != string(id) ||
		len(sk.Hash) != len(apikey.Hash{}) || recordTimesInRange(&sk) != nil {
		return nil, nil
	}
	cur, err := tx.Get(bucketHashes, sk.Hash)
	if err != nil {
		return nil, err
	}
	switch {
	case cur == nil:
		// No Check found this key before: moving it would let one.
		return nil, nil
	case isHashedRecord(cur):
		// Moved before, and written by id since by an older build
		// (legacyWrites): the record by id is the newer.
		var there storedKey
		if decodeKeyRecord("", sk.Hash, cur, &there) != nil || there.ID != string(id) {
			return nil, nil
		}
	default:
		if other, err := decodeIndexID(cur); err != nil || other != string(id) {
			return nil, nil
		}
	}
	sk.place = placeByID
	return &sk, putKeyRecord(tx, string(id), &sk)
}

// upgradeSchema rewrites every record of a store of version from that
// this schema stores differently (schemaUpgrades), in batches of one
// transaction each, and sets the schema version last: a crash half way leaves a
// store of the old version whose records are partly in the new form,
// which this build reads, and the next open finishes the upgrade. Each batch reads
// its records again inside its transaction and rewrites only those still
// in the old form, so a retried transaction, a concurrent write through
// this build, or two processes upgrading at once change nothing twice. A
// record that cannot be decoded is left as it is (a lookup of it fails
// closed, as before) and counted.
//
// Processes of older builds cannot read the new forms: on a shared
// backend they must be stopped before the first process of this build
// opens it.
func upgradeSchema(ctx context.Context, b Backend, from string, log *slog.Logger) error {
	step := upgradeStep(ctx)
	counts := []any{"store", b.String(), "from_schema_version", from, "schema_version", string(schemaVersion)}
	rewrote, err := upgradeRecords(step, b, &counts)
	if err != nil {
		return fmt.Errorf("upgrade to schema %s: %w", schemaVersion, err)
	}
	set := false
	err = step(func(ctx context.Context) error {
		return b.Update(ctx, func(tx Tx) error {
			set = false
			cur, err := tx.Get(bucketMeta, metaSchemaVersion)
			switch {
			case err != nil:
				return err
			case string(cur) == string(schemaVersion):
				return nil // another process finished first
			case !slices.Contains(olderSchemas, string(cur)):
				return fmt.Errorf("schema version changed to %q during the upgrade", cur)
			}
			set = true
			return tx.Put(bucketMeta, metaSchemaVersion, schemaVersion)
		})
	})
	if err != nil {
		return fmt.Errorf("upgrade to schema %s: %w", schemaVersion, err)
	}
	// Another process may have done it all meanwhile: only the one that
	// did something says so.
	if log != nil && (set || rewrote) {
		log.Info("key store upgraded", counts...)
	}
	return nil
}

// upgradeStep runs each step of an upgrade under a deadline of its own:
// the whole upgrade of a large store takes longer than one operation may.
// Cancelling ctx stops the next step.
func upgradeStep(ctx context.Context) func(func(context.Context) error) error {
	base := context.WithoutCancel(ctx)
	return func(fn func(context.Context) error) error {
		if errors.Is(ctx.Err(), context.Canceled) {
			return ctx.Err()
		}
		sctx, cancel := context.WithTimeout(base, opTimeout)
		defer cancel()
		return fn(sctx)
	}
}

// upgradeRecords rewrites every record of b in an older form
// (schemaUpgrades), and appends to counts, per bucket, how many it
// rewrote and how many it left unreadable. Copy runs it too, on the
// records it copied.
func upgradeRecords(step func(func(context.Context) error) error, b Backend, counts *[]any) (rewrote bool, err error) {
	batch := upgradeBatchBolt
	if _, shared := b.(Shared); shared {
		batch = upgradeBatchShared
	}
	for _, u := range schemaUpgrades {
		n, bad, err := upgradeBucket(step, b, u, batch)
		if err != nil {
			return rewrote, fmt.Errorf("%s: %w", u.bucket, err)
		}
		*counts, rewrote = append(*counts, u.bucket, n), rewrote || n > 0
		if bad > 0 {
			*counts = append(*counts, u.bucket+"_unreadable_left", bad)
		}
	}
	return rewrote, nil
}

// upgradeBucket rewrites the records of u.bucket still in the old form,
// batch at a time, and counts those rewritten and those left unreadable.
func upgradeBucket(step func(func(context.Context) error) error, b Backend, u recordUpgrade, batch int) (n, bad int, err error) {
	var after []byte
	for {
		var keys [][]byte
		var last []byte
		err := step(func(ctx context.Context) error {
			keys, last = keys[:0], nil
			return b.View(ctx, func(tx Tx) error {
				return tx.Scan(u.bucket, nil, after, func(k, v []byte) (bool, error) {
					if after != nil && string(k) == string(after) {
						return true, nil
					}
					last = append(last[:0], k...)
					if u.old(k, v) {
						keys = append(keys, append([]byte(nil), k...))
					}
					return len(keys) < batch, nil
				})
			})
		})
		if err != nil || last == nil {
			return n, bad, err
		}
		var done, failed int
		err = step(func(ctx context.Context) error {
			return b.Update(ctx, func(tx Tx) error {
				done, failed = 0, 0
				for _, k := range keys {
					v, err := tx.Get(u.bucket, k)
					if err != nil {
						return err
					}
					if v == nil || !u.old(k, v) {
						continue // gone, or rewritten meanwhile
					}
					ok, err := u.convert(tx, k, v)
					switch {
					case err != nil:
						return err
					case !ok:
						failed++
						continue
					}
					done++
				}
				return nil
			})
		})
		if err != nil {
			return n, bad, err
		}
		n, bad, after = n+done, bad+failed, last
	}
}

// isJSONRecord reports a key record in the JSON form of schema 1.
func isJSONRecord(v []byte) bool { return len(v) > 0 && v[0] == '{' }
