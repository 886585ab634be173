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

// upgradeSchema1 rewrites every JSON key record of a version 1 store in
// the binary form, in batches of one transaction each, and sets the
// schema version last: a crash half way leaves a version 1 store whose
// records are partly binary, which this build reads and the next open
// finishes upgrading. Each batch reads its records again inside its
// transaction and rewrites only those still in JSON, so a retried
// transaction, a concurrent write through this build, or two processes
// upgrading at once change nothing twice. A record that cannot be decoded
// is left as it is (a lookup of it fails closed, as before) and counted.
//
// Processes of the schema 1 build cannot read binary records: on a
// shared backend they must be stopped before the first process of this
// build opens it.
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
	var (
		after             []byte
		upgraded, damaged int
	)
	for {
		var ids [][]byte
		var last []byte
		err := step(func(ctx context.Context) error {
			ids, last = ids[:0], nil
			return b.View(ctx, func(tx Tx) error {
				return tx.Scan(bucketKeys, nil, after, func(k, v []byte) (bool, error) {
					if after != nil && string(k) == string(after) {
						return true, nil
					}
					last = append(last[:0], k...)
					if isJSONRecord(v) {
						ids = append(ids, append([]byte(nil), k...))
					}
					return len(ids) < batch, nil
				})
			})
		})
		if err != nil {
			return fmt.Errorf("upgrade to schema %s: %w", schemaVersion, err)
		}
		if last == nil {
			break
		}
		var n, bad int
		err = step(func(ctx context.Context) error {
			return b.Update(ctx, func(tx Tx) error {
				n, bad = 0, 0
				for _, id := range ids {
					v, err := tx.Get(bucketKeys, id)
					if err != nil {
						return err
					}
					if !isJSONRecord(v) {
						continue // gone, or rewritten meanwhile
					}
					var k storedKey
					if decodeKeyRecord(string(id), v, &k) != nil {
						bad++
						continue
					}
					if err := putKeyRecord(tx, string(id), &k); err != nil {
						return err
					}
					n++
				}
				return nil
			})
		})
		if err != nil {
			return fmt.Errorf("upgrade to schema %s: %w", schemaVersion, err)
		}
		upgraded, damaged = upgraded+n, damaged+bad
		after = last
	}
	err := step(func(ctx context.Context) error {
		return b.Update(ctx, func(tx Tx) error {
			cur, err := tx.Get(bucketMeta, metaSchemaVersion)
			switch {
			case err != nil:
				return err
			case string(cur) == string(schemaVersion):
				return nil // another process finished first
			case string(cur) != string(schemaVersion1):
				return fmt.Errorf("schema version changed to %q during the upgrade", cur)
			}
			return tx.Put(bucketMeta, metaSchemaVersion, schemaVersion)
		})
	})
	if err != nil {
		return fmt.Errorf("upgrade to schema %s: %w", schemaVersion, err)
	}
	if log != nil {
		log.Info("key store upgraded", "store", b.String(), "schema_version", string(schemaVersion), "key_records", upgraded, "unreadable_left", damaged)
	}
	return nil
}

// isJSONRecord reports a key record in the JSON form of schema 1.
func isJSONRecord(v []byte) bool { return len(v) > 0 && v[0] == '{' }
