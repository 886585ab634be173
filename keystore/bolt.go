package keystore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// boltBackend is the embedded default: one bbolt file, one process.
type boltBackend struct {
	db   *bolt.DB
	path string
}

// OpenBolt opens (creating it and its buckets unless readOnly) the bbolt
// file at path; New and Copy check the schema version it holds. timeout bounds the wait for another process's lock; zero: 1 s.
func OpenBolt(path string, readOnly bool, timeout time.Duration) (Backend, error) {
	if timeout == 0 {
		timeout = time.Second
	}
	if dir := filepath.Dir(path); dir != "" && !readOnly {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	if readOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open store %s read-only: %w", path, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: readOnly})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: locked by another process: %w", path, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	b := &boltBackend{db: db, path: path}
	if !readOnly {
		err = db.Update(func(tx *bolt.Tx) error {
			for _, name := range Buckets {
				if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
					return fmt.Errorf("create bucket %s: %w", name, err)
				}
			}
			return nil
		})
	} else {
		err = db.View(func(tx *bolt.Tx) error {
			for _, name := range Buckets {
				if tx.Bucket([]byte(name)) == nil {
					return fmt.Errorf("bucket %s missing: not a keygate store", name)
				}
			}
			return nil
		})
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return b, nil
}

func (b *boltBackend) String() string { return b.path }

func (b *boltBackend) View(_ context.Context, fn func(Tx) error) error {
	return closedErr(b.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) }))
}

func (b *boltBackend) Update(_ context.Context, fn func(Tx) error) error {
	return closedErr(b.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) }))
}

func (b *boltBackend) Batch(ctx context.Context, fn func(Tx) error) error { return b.Update(ctx, fn) }

func (b *boltBackend) Ping(ctx context.Context) error {
	return b.View(ctx, func(tx Tx) error {
		_, err := tx.Get(bucketMeta, metaSchemaVersion)
		return err
	})
}

func (b *boltBackend) Close() error { return b.db.Close() }

func closedErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) bucket(name string) (*bolt.Bucket, error) {
	b := t.tx.Bucket([]byte(name))
	if b == nil {
		return nil, fmt.Errorf("bucket %s missing", name)
	}
	return b, nil
}

func (t boltTx) Get(bucket string, key []byte) ([]byte, error) {
	b, err := t.bucket(bucket)
	if err != nil {
		return nil, err
	}
	return b.Get(key), nil
}

func (t boltTx) Put(bucket string, key, value []byte) error {
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	return b.Put(key, value)
}

func (t boltTx) Delete(bucket string, key []byte) error {
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	return b.Delete(key)
}

func (t boltTx) Scan(bucket string, prefix, start []byte, fn func(k, v []byte) (bool, error)) error {
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	if start == nil || bytes.Compare(start, prefix) < 0 {
		start = prefix
	}
	c := b.Cursor()
	for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		more, err := fn(k, v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}
