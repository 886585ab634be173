package keystore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
)

// Backuper is a Backend that writes its own consistent copy, as a bbolt
// file of this schema, without stopping writes. A backend that is not one
// is copied by Backup through one View, which must then be one snapshot
// (etcd's View reads at one revision).
type Backuper interface {
	Backup(ctx context.Context, w io.Writer) (int64, error)
}

// BackupSizer is a writer Backup tells the exact size of the copy before
// its first byte: an HTTP handler sends it as Content-Length, so that a
// copy cut short is seen as such by whoever reads it.
type BackupSizer interface {
	BackupSize(n int64)
}

// Backup writes a consistent copy of the store to w while it serves: a
// bbolt file of this schema, whatever the backend, that `keygate serve`
// opens as its store and Copy (store migrate) moves into etcd. It returns
// the bytes written.
//
// Pending last-used times and usage counts are flushed first, so the copy
// holds them. Credit slices a server holds in memory are not: the copy
// shows the balances of the records, with credits_reserved naming the
// holders, as a crash would leave them, and a server started on it never
// spends more than those balances.
func (s *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	if s.cache.isClosed() {
		return 0, ErrClosed
	}
	if err := s.notOpen(); err != nil {
		return 0, err
	}
	if !s.opts.ReadOnly {
		// Best effort: what a failed flush keeps pending is what a crash
		// would lose, and a backup is still worth having without it (a
		// file replaced under the server refuses the flush, and its held
		// copy is then exactly what an operator wants out).
		_ = s.usage.flush()
	}
	if b, ok := s.b.(Backuper); ok {
		return b.Backup(ctx, w)
	}
	return backupVia(ctx, s.b, w)
}

// Backup writes the file as one read transaction sees it: bbolt's readers
// never block its writer, so the server keeps serving. A write that must
// grow the file waits for the copy to end, since bbolt cannot remap the
// file under a reader.
func (b *boltBackend) Backup(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	err := closedErr(b.db.View(func(tx *bolt.Tx) error {
		if sz, ok := w.(BackupSizer); ok {
			sz.BackupSize(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(ctxWriter{ctx, w})
		return err
	}))
	if err != nil {
		return n, fmt.Errorf("back up %s: %w", b, err)
	}
	return n, nil
}

// ctxWriter stops a long copy once its caller has gone.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// backupChunk is how many records one commit of backupVia writes: the
// temporary file is written without fsync, so commits are cheap, and
// bounded ones keep a large store's dirty pages out of memory.
const backupChunk = 10_000

// backupVia copies src, read in one View, into a temporary bbolt file and
// streams that: a file, and its size, exist only once it is complete.
func backupVia(ctx context.Context, src Backend, w io.Writer) (int64, error) {
	if _, err := checkSchema(ctx, src, false, nil); err != nil {
		return 0, fmt.Errorf("back up %s: %w", src, err)
	}
	dir, err := os.MkdirTemp("", "keygate-backup-")
	if err != nil {
		return 0, fmt.Errorf("back up %s: %w", src, err)
	}
	defer os.RemoveAll(dir)
	path := dir + string(os.PathSeparator) + "backup.db"
	if err := writeBoltCopy(ctx, path, src); err != nil {
		return 0, fmt.Errorf("back up %s: %w", src, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("back up %s: %w", src, err)
	}
	defer f.Close()
	if sz, ok := w.(BackupSizer); ok {
		fi, err := f.Stat()
		if err != nil {
			return 0, fmt.Errorf("back up %s: %w", src, err)
		}
		sz.BackupSize(fi.Size())
	}
	n, err := io.Copy(ctxWriter{ctx, w}, f)
	if err != nil {
		return n, fmt.Errorf("back up %s: %w", src, err)
	}
	return n, nil
}

// writeBoltCopy writes every bucket of src, in one View, to a new bbolt
// file at path.
func writeBoltCopy(ctx context.Context, path string, src Backend) (err error) {
	// No fsync while writing: a crash loses a temporary file nobody reads.
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	dtx, err := db.Begin(true)
	if err != nil {
		return err
	}
	defer func() { _ = dtx.Rollback() }()
	n := 0
	err = src.View(ctx, func(tx Tx) error {
		return scanAll(tx, true, nil, func(bucket string, k, v []byte) error {
			bk, err := dtx.CreateBucketIfNotExists([]byte(bucket))
			if err != nil {
				return err
			}
			// Keys come in order: pages filled full make a compact file.
			bk.FillPercent = 1
			// bbolt keeps what Put is given until the commit; src's slices
			// are valid only during this call.
			if err := bk.Put(bytes.Clone(k), bytes.Clone(v)); err != nil {
				return err
			}
			if n++; n%backupChunk == 0 {
				if err := dtx.Commit(); err != nil {
					return err
				}
				if dtx, err = db.Begin(true); err != nil {
					return err
				}
			}
			return ctx.Err()
		})
	})
	if err != nil {
		return err
	}
	for _, name := range Buckets {
		if _, err := dtx.CreateBucketIfNotExists([]byte(name)); err != nil {
			return err
		}
	}
	if err := dtx.Commit(); err != nil {
		return err
	}
	return db.Sync()
}

// VerifyBackup checks that the bbolt file at path is whole (bbolt's own
// consistency check over every page) and holds this build's schema: what
// a copy that was cut short or damaged on its way fails.
func VerifyBackup(ctx context.Context, path string) error {
	b, err := OpenBolt(path, true, 0)
	if err != nil {
		return err
	}
	defer b.Close()
	bb, ok := b.(*boltBackend)
	if !ok {
		return fmt.Errorf("verify %s: not a bbolt backend", path)
	}
	err = bb.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	if _, err := checkSchema(ctx, b, false, nil); err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	return nil
}
