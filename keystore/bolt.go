package keystore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrFileReplaced: the bbolt file the server holds is no longer the file
// at its path (deleted, moved away, or replaced by another file such as a
// backup restored under the running server), so a write to it would be
// lost at the next start. It wraps ErrUnavailable: callers that answer a
// store out of reach with a 503 answer this one too.
var ErrFileReplaced = fmt.Errorf("%w: the store file was deleted or replaced under the running server", ErrUnavailable)

// ErrLocked: another process holds the bbolt file (a running keygate), and
// it stayed locked for the open's whole timeout. One file, one process: a
// caller that only reads can be pointed at a copy instead.
var ErrLocked = errors.New("locked by another process")

// boltBackend is the embedded default: one bbolt file, one process.
//
// A file deleted or replaced under the running server stays readable
// through the descriptor bbolt holds, and bbolt keeps committing to it:
// every write would be acknowledged and then lost at restart, which opens
// whatever is at the path then. So writes (Update and Batch) are refused
// with ErrFileReplaced while the path does not name the held file, checked
// inside the write transaction before anything is written and again after
// the commit, so that a write whose file vanished while it committed is not
// acknowledged. Ping fails the same way (readiness). Lookups keep answering
// from the held file: what it holds is what the server acknowledged, so a
// Check loses nothing by reading it, and the Check path pays no stat.
type boltBackend struct {
	db   *bolt.DB
	path string
	// abs is path made absolute at open: a restart resolves the configured
	// path by name, so a renamed working directory moves the file away
	// from it, which a relative path would not show.
	abs string
	// held is the fstat of the file bbolt holds; nil for a read-only open,
	// which writes nothing and so has nothing to lose.
	held os.FileInfo
	// heldFD names the held descriptor, for the log line that tells the
	// operator where its data can still be copied from.
	heldFD uintptr
	log    *slog.Logger

	// lost is whether the last look found the path not naming held; the
	// transitions are made, and logged, under mu, so each is logged once
	// however many writes and probes see it.
	mu   sync.Mutex
	lost atomic.Bool
}

// BoltOptions configures OpenBoltWith.
type BoltOptions struct {
	// ReadOnly opens an existing file for lookups only; it is not created
	// or changed.
	ReadOnly bool
	// Timeout bounds the wait for another process's lock. Zero: 1 s.
	Timeout time.Duration
	// Logger receives the error logged when the file is deleted or replaced
	// under the running server, and the notice when it is back. Nil:
	// slog.Default().
	Logger *slog.Logger
}

// OpenBolt opens (creating it and its buckets unless readOnly) the bbolt
// file at path; New and Copy check the schema version it holds. timeout bounds the wait for another process's lock; zero: 1 s.
func OpenBolt(path string, readOnly bool, timeout time.Duration) (Backend, error) {
	return OpenBoltWith(path, BoltOptions{ReadOnly: readOnly, Timeout: timeout})
}

// OpenBoltWith is OpenBolt with a logger.
func OpenBoltWith(path string, o BoltOptions) (Backend, error) {
	readOnly, timeout := o.ReadOnly, o.Timeout
	if timeout == 0 {
		timeout = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
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
	b := &boltBackend{path: path, abs: abs, log: o.Logger}
	var statErr error
	opts := &bolt.Options{Timeout: timeout, ReadOnly: readOnly}
	if !readOnly {
		// The identity is taken from the very descriptor bbolt holds: a stat
		// of the path after Open could already see a different file. bbolt
		// calls OpenFile again only for Tx.CopyFile, which this backend does
		// not use, and Tx.WriteTo with a WriteFlag, which Backup does not
		// set (it reads the held descriptor); the first file opened is the
		// one held.
		var once sync.Once
		opts.OpenFile = func(name string, flag int, mode os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, mode)
			if err != nil {
				return nil, err
			}
			once.Do(func() {
				b.held, statErr = f.Stat()
				b.heldFD = f.Fd()
			})
			return f, nil
		}
	}
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: %w: %w", path, ErrLocked, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if statErr != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: stat the open file: %w", path, statErr)
	}
	b.db = db
	if !readOnly {
		// Checked before the first write: a file swapped while it was being
		// opened is refused at once.
		err = b.update(func(tx *bolt.Tx) error {
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
				if tx.Bucket([]byte(name)) == nil && !addedBuckets[name] {
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

// View does not look at the path: see boltBackend.
func (b *boltBackend) View(_ context.Context, fn func(Tx) error) error {
	return closedErr(b.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) }))
}

func (b *boltBackend) Update(_ context.Context, fn func(Tx) error) error {
	return b.update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// update refuses to write unless the path names the held file, both when
// the transaction starts, holding bbolt's writer lock (so no other write
// commits between the check and this one), and after the commit.
func (b *boltBackend) update(fn func(*bolt.Tx) error) error {
	err := closedErr(b.db.Update(func(tx *bolt.Tx) error {
		if err := b.check("write refused"); err != nil {
			return err
		}
		return fn(tx)
	}))
	if err != nil {
		return err
	}
	// The commit went to the held file; if the path no longer names it, a
	// restart will not read the write, so it is not acknowledged. Like a
	// write cut off by a crash, it may yet turn out to have landed, if the
	// file is put back where it was.
	return b.check("write committed to a file a restart will not read")
}

// Batch is Update: a flush of last-used times and credit spending refused
// here keeps them pending in memory (see usage.flush), to be written by a
// later flush if the file is put back, and reported in the error of the
// final flush at Close if it never is (a restart on another file loses
// them, as it loses everything the held file has). A flush whose file went
// during its commit stays pending too although the held file took it: if
// that file is then put back, that spending is subtracted twice, which
// charges credits twice and never lets a key overspend.
func (b *boltBackend) Batch(ctx context.Context, fn func(Tx) error) error { return b.Update(ctx, fn) }

// Ping fails while the path does not name the held file: the server still
// answers Checks, but a replica that would lose every change made through
// it is not ready.
func (b *boltBackend) Ping(ctx context.Context) error {
	if err := b.check("not ready"); err != nil {
		return err
	}
	return b.View(ctx, func(tx Tx) error {
		_, err := tx.Get(bucketMeta, metaSchemaVersion)
		return err
	})
}

func (b *boltBackend) Close() error { return b.db.Close() }

// check returns an error wrapping ErrFileReplaced, prefixed with what, unless
// the path names the held file (same device and inode; a symlink at the
// path is followed, as a restart would). One stat of the path, a few
// microseconds against a write's fsync of milliseconds, paid by writes and
// readiness probes only.
func (b *boltBackend) check(what string) error {
	if b.held == nil {
		return nil
	}
	cur, statErr := os.Stat(b.abs)
	ok := statErr == nil && os.SameFile(b.held, cur)
	if steady := ok != b.lost.Load(); steady {
		if ok {
			return nil
		}
		return b.replacedErr(what, cur, statErr)
	}
	// A transition. Looked at again under mu, so that a look taken before
	// it, by a call that lost the race for mu, cannot undo it.
	b.mu.Lock()
	defer b.mu.Unlock()
	cur, statErr = os.Stat(b.abs)
	ok = statErr == nil && os.SameFile(b.held, cur)
	if ok == b.lost.Load() {
		b.lost.Store(!ok)
		b.logTransition(ok, cur, statErr)
	}
	if ok {
		return nil
	}
	return b.replacedErr(what, cur, statErr)
}

func (b *boltBackend) replacedErr(what string, cur os.FileInfo, statErr error) error {
	hd, hi := fileID(b.held)
	if statErr != nil {
		if errors.Is(statErr, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w: no file at %s (the server holds device %d inode %d)", what, ErrFileReplaced, b.abs, hd, hi)
		}
		return fmt.Errorf("%s: %w: cannot tell which file is at %s (the server holds device %d inode %d): %w", what, ErrFileReplaced, b.abs, hd, hi, statErr)
	}
	cd, ci := fileID(cur)
	return fmt.Errorf("%s: %w: %s is device %d inode %d, the server holds device %d inode %d", what, ErrFileReplaced, b.abs, cd, ci, hd, hi)
}

func (b *boltBackend) logTransition(ok bool, cur os.FileInfo, statErr error) {
	hd, hi := fileID(b.held)
	attrs := []slog.Attr{slog.String("path", b.abs), slog.Uint64("held_device", hd), slog.Uint64("held_inode", hi)}
	if ok {
		b.log.LogAttrs(context.Background(), slog.LevelWarn, "store file is back at its path: writes accepted again", attrs...)
		return
	}
	switch {
	case errors.Is(statErr, fs.ErrNotExist):
		attrs = append(attrs, slog.Bool("path_missing", true))
	case statErr != nil:
		attrs = append(attrs, slog.String("stat_error", statErr.Error()))
	default:
		cd, ci := fileID(cur)
		attrs = append(attrs, slog.Uint64("path_device", cd), slog.Uint64("path_inode", ci))
	}
	attrs = append(attrs, slog.String("checks", "still answered from the held file"))
	if runtime.GOOS == "linux" {
		// The held file has every acknowledged write and, with writes
		// refused, no longer changes: a copy of it put at the path before
		// the restart loses none of them.
		attrs = append(attrs, slog.String("held_copy", fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), b.heldFD)))
	}
	b.log.LogAttrs(context.Background(), slog.LevelError,
		"store file was deleted or replaced under the running server: writes refused, restart Keygate once the file is restored",
		attrs...)
}

func closedErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

type boltTx struct{ tx *bolt.Tx }

// bucketNames holds each bucket's name as bytes, made once: bbolt takes
// names as []byte, and converting one on every Get cost a lookup an
// allocation.
var bucketNames = func() map[string][]byte {
	m := make(map[string][]byte, len(Buckets))
	for _, n := range Buckets {
		m[n] = []byte(n)
	}
	return m
}()

// open returns bucket, or nil when it is absent from a file opened
// read-only that was written before the bucket was added to the schema
// (it reads as empty).
func (t boltTx) open(name string) (*bolt.Bucket, error) {
	key, ok := bucketNames[name]
	if !ok {
		key = []byte(name)
	}
	if b := t.tx.Bucket(key); b != nil {
		return b, nil
	}
	if addedBuckets[name] && !t.tx.Writable() {
		return nil, nil
	}
	return nil, fmt.Errorf("bucket %s missing", name)
}

func (t boltTx) bucket(name string) (*bolt.Bucket, error) {
	b, err := t.open(name)
	if b == nil && err == nil {
		err = fmt.Errorf("bucket %s missing", name)
	}
	return b, err
}

func (t boltTx) Get(bucket string, key []byte) ([]byte, error) {
	b, err := t.open(bucket)
	if b == nil {
		return nil, err
	}
	return b.Get(key), nil
}

func (t boltTx) Put(bucket string, key, value []byte) error {
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	if f, ok := appendFill[bucket]; ok {
		b.FillPercent = f
	}
	return b.Put(key, value)
}

// appendFill is how full bbolt fills a page it splits, for buckets whose
// new keys sort after the keys near them: key ids are UUIDv7 (time
// ordered), audit entries start with their time, and a tenant's or an
// org's index entries (its id, then the key's) grow at the end of its
// range. bbolt's
// default, half full, suits keys that land anywhere (the hash index); for
// appends it leaves every page but the last half empty for good. Measured
// with 200,000 keys of 20 tenants imported in turn: 1,342 bytes of file
// per key with the default, 750 with this.
var appendFill = map[string]float64{bucketKeys: 0.95, bucketAudit: 0.95, bucketKeysByTenant: 0.95, bucketKeysByOrg: 0.95}

func (t boltTx) Delete(bucket string, key []byte) error {
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	return b.Delete(key)
}

func (t boltTx) Scan(bucket string, prefix, start []byte, fn func(k, v []byte) (bool, error)) error {
	b, err := t.open(bucket)
	if b == nil {
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
