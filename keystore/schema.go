package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// Schema versions. Version 1 stored key records as JSON; version 2
// stores them in the binary form of keycodec.go. A writable open of a
// version 1 store upgrades it; a read-only open (keygate check, backups)
// reads it as it is, since the decoder reads both forms.
var (
	metaSchemaVersion = []byte("schema_version")
	schemaVersion     = []byte("2")
	schemaVersion1    = []byte("1")
)

// upgradeBatch is how many key records one transaction of the upgrade
// rewrites: on bbolt one fsync each; on a shared backend (etcd) a
// transaction carries at most 128 operations by default, in compares (one
// per record read) and in writes each.
const (
	upgradeBatchBolt   = 10_000
	upgradeBatchShared = 100
)

// checkSchema fails unless the backend holds a schema this build reads;
// with create, an empty backend is given this build's, and a version 1
// store is upgraded first. log (nil: none) hears of an upgrade.
func checkSchema(ctx context.Context, b Backend, create bool, log *slog.Logger) error {
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
	case string(v) == string(schemaVersion1) && !create:
		return nil
	case string(v) == string(schemaVersion1):
		return upgradeSchema1(ctx, b, log)
	}
	return fmt.Errorf("schema version %s, this build reads %s and %s", v, schemaVersion1, schemaVersion)
}

// recordUpgrade turns the records of one bucket from their schema 1
// form into schema 2's.
type recordUpgrade struct {
	bucket string
	// old reports a value still in the schema 1 form.
	old func(v []byte) bool
	// convert returns v in the schema 2 form; an error leaves it as it is.
	convert func(k, v []byte) ([]byte, error)
}

// schema1Upgrades are the changes from schema 1 to 2: key records from
// JSON to binary, and the hash index's values from the key id's text to
// its 16 bytes.
var schema1Upgrades = []recordUpgrade{
	{bucketKeys, isJSONRecord, func(k, v []byte) ([]byte, error) {
		var sk storedKey
		if err := decodeKeyRecord(string(k), v, &sk); err != nil {
			return nil, err
		}
		return encodeKeyRecord(nil, &sk), nil
	}},
	{bucketHashes, isTextIndexID, func(_, v []byte) ([]byte, error) { return encodeIndexID(string(v)), nil }},
}

// upgradeSchema1 rewrites every record of a version 1 store that schema 2
// stores differently (schema1Upgrades), in batches of one transaction
// each, and sets the schema version last: a crash half way leaves a
// version 1 store whose records are partly in the new form, which this
// build reads, and the next open finishes the upgrade. Each batch reads
// its records again inside its transaction and rewrites only those still
// in the old form, so a retried transaction, a concurrent write through
// this build, or two processes upgrading at once change nothing twice. A
// record that cannot be decoded is left as it is (a lookup of it fails
// closed, as before) and counted.
//
// Processes of the schema 1 build cannot read the new forms: on a shared
// backend they must be stopped before the first process of this build
// opens it.
func upgradeSchema1(ctx context.Context, b Backend, log *slog.Logger) error {
	batch := upgradeBatchBolt
	if _, shared := b.(Shared); shared {
		batch = upgradeBatchShared
	}
	// Each batch has its own deadline: the whole upgrade of a large store
	// takes longer than one operation may.
	base := context.WithoutCancel(ctx)
	step := func(fn func(context.Context) error) error {
		if errors.Is(ctx.Err(), context.Canceled) {
			return ctx.Err()
		}
		sctx, cancel := context.WithTimeout(base, opTimeout)
		defer cancel()
		return fn(sctx)
	}
	counts := []any{"store", b.String(), "schema_version", string(schemaVersion)}
	rewrote := false
	for _, u := range schema1Upgrades {
		n, bad, err := upgradeBucket(step, b, u, batch)
		if err != nil {
			return fmt.Errorf("upgrade to schema %s: %s: %w", schemaVersion, u.bucket, err)
		}
		counts, rewrote = append(counts, u.bucket, n), rewrote || n > 0
		if bad > 0 {
			counts = append(counts, u.bucket+"_unreadable_left", bad)
		}
	}
	set := false
	err := step(func(ctx context.Context) error {
		return b.Update(ctx, func(tx Tx) error {
			set = false
			cur, err := tx.Get(bucketMeta, metaSchemaVersion)
			switch {
			case err != nil:
				return err
			case string(cur) == string(schemaVersion):
				return nil // another process finished first
			case string(cur) != string(schemaVersion1):
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
					if u.old(v) {
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
					if !u.old(v) {
						continue // gone, or rewritten meanwhile
					}
					nv, err := u.convert(k, v)
					if err != nil {
						failed++
						continue
					}
					if err := tx.Put(u.bucket, k, nv); err != nil {
						return err
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
