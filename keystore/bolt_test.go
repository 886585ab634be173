//go:build unix

package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/syncbuf"
	"github.com/keygate/keygate/keystore/apikey"
)

const replacedLog = "store file was deleted or replaced under the running server: writes refused, restart Keygate once the file is restored"

// fileStore is a Store on a real bbolt file whose backend logs into logs.
type fileStore struct {
	s    *Store
	path string
	logs *syncbuf.Buffer
	ten  Tenant
	key  CreatedKey
}

func openFileStore(t *testing.T, path string) *fileStore {
	t.Helper()
	fs := &fileStore{path: path, logs: &syncbuf.Buffer{}}
	b, err := OpenBoltWith(path, BoltOptions{Logger: slog.New(slog.NewTextHandler(fs.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// An hour between flushes: the tests flush when they mean to.
	if fs.s, err = New(b, Options{LastUsedFlush: time.Hour}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.s.Close() })
	return fs
}

// newFileStore opens a store at dir/keygate.db holding a tenant and a
// metered key.
func newFileStore(t *testing.T, dir string) *fileStore {
	t.Helper()
	fs := openFileStore(t, filepath.Join(dir, "keygate.db"))
	var err error
	if fs.ten, err = fs.s.CreateTenant(t.Context(), "Acme"); err != nil {
		t.Fatal(err)
	}
	if fs.key, err = fs.s.CreateKey(t.Context(), KeySpec{TenantID: fs.ten.ID, Name: "k", CreditsRemaining: new(int64(10))}); err != nil {
		t.Fatal(err)
	}
	return fs
}

// wantRefused checks that every kind of write fails with ErrFileReplaced
// (an ErrUnavailable, so the admin API answers 503), that readiness fails,
// and that lookups still answer from the held file, cached or not.
func (fs *fileStore) wantRefused(t *testing.T) {
	t.Helper()
	if _, err := fs.s.CreateTenant(t.Context(), "Lost"); !errors.Is(err, ErrFileReplaced) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("CreateTenant after the file went: %v, want ErrFileReplaced (an ErrUnavailable)", err)
	}
	if _, err := fs.s.CreateKey(t.Context(), KeySpec{TenantID: fs.ten.ID, Name: "lost"}); !errors.Is(err, ErrFileReplaced) {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, err := fs.s.RevokeKey(t.Context(), fs.key.ID); !errors.Is(err, ErrFileReplaced) {
		t.Fatalf("RevokeKey: %v", err)
	}
	fs.s.KeyUsed(&authz.Credential{ID: fs.key.ID}, time.Now())
	if err := fs.s.Flush(); !errors.Is(err, ErrFileReplaced) {
		t.Fatalf("Flush: %v", err)
	}
	if err := fs.s.Ping(); !errors.Is(err, ErrFileReplaced) {
		t.Fatalf("Ping: %v, want ErrFileReplaced", err)
	}
	fs.s.cache.invalidateAll()
	c, found, err := fs.s.LookupKey(context.Background(), apikey.HashOf(fs.key.Secret.Reveal()))
	if err != nil || !found || c.ID != fs.key.ID {
		t.Fatalf("uncached lookup from the held file: %+v %v %v", c, found, err)
	}
	if _, err := fs.s.Key(t.Context(), fs.key.ID); err != nil {
		t.Fatalf("Key from the held file: %v", err)
	}
	if _, err := fs.s.ListKeys(t.Context(), ListFilter{TenantID: fs.ten.ID}); err != nil {
		t.Fatalf("ListKeys from the held file: %v", err)
	}
}

func (fs *fileStore) wantWorking(t *testing.T) {
	t.Helper()
	if err := fs.s.Ping(); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if _, err := fs.s.CreateTenant(t.Context(), "Fine"); err != nil {
		t.Fatalf("CreateTenant: %v", err)
	}
	fs.s.KeyUsed(&authz.Credential{ID: fs.key.ID}, time.Now())
	if err := fs.s.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func (fs *fileStore) logged(t *testing.T, want int) {
	t.Helper()
	if n := strings.Count(fs.logs.String(), replacedLog); n != want {
		t.Fatalf("%d log lines saying the file was replaced, want %d:\n%s", n, want, fs.logs)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestBoltFileDeleted: `rm keygate.db` under the server. Nothing written
// after it is acknowledged, readiness fails, Checks go on, and the operator
// is told once.
func TestBoltFileDeleted(t *testing.T) {
	fs := newFileStore(t, t.TempDir())
	held := inode(t, fs.path)
	fs.wantWorking(t)
	fs.logged(t, 0)

	if err := os.Remove(fs.path); err != nil {
		t.Fatal(err)
	}
	fs.wantRefused(t)
	fs.wantRefused(t)
	fs.logged(t, 1)
	log := fs.logs.String()
	for _, want := range []string{"level=ERROR", "path=" + fs.path, fmt.Sprintf("held_inode=%d", held), "path_missing=true", "restart Keygate once the file is restored"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	_, err := fs.s.CreateTenant(t.Context(), "x")
	if want := fmt.Sprintf("no file at %s (the server holds device", fs.path); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if _, err := os.Stat(fs.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused write created the file again: %v", err)
	}
}

// TestBoltFileReplacedByCopy: a copy of the very same bytes (a backup
// restored under the running server) is another file: a check comparing
// names, sizes or contents would pass, one comparing inodes does not.
func TestBoltFileReplacedByCopy(t *testing.T) {
	fs := newFileStore(t, t.TempDir())
	held := inode(t, fs.path)
	raw, err := os.ReadFile(fs.path)
	if err != nil {
		t.Fatal(err)
	}
	tmp := fs.path + ".restore"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, fs.path); err != nil {
		t.Fatal(err)
	}
	now := inode(t, fs.path)
	if now == held {
		t.Fatalf("the copy has the held inode %d: the test proves nothing", held)
	}
	fs.wantRefused(t)
	fs.logged(t, 1)
	if want := fmt.Sprintf("path_inode=%d", now); !strings.Contains(fs.logs.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, fs.logs)
	}
	_, err = fs.s.CreateTenant(t.Context(), "x")
	if want := fmt.Sprintf("inode %d, the server holds device", now); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v does not say %q", err, want)
	}
}

// TestBoltFileIntact: the same inode under a new directory entry (a hard
// link renamed onto the path: new name, new ctime) is the held file, so
// nothing changes; and when nothing happens nothing is logged.
func TestBoltFileIntact(t *testing.T) {
	fs := newFileStore(t, t.TempDir())
	held := inode(t, fs.path)
	for range 20 {
		fs.wantWorking(t)
	}
	link := fs.path + ".link"
	if err := os.Link(fs.path, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(fs.path); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link, fs.path); err != nil {
		t.Fatal(err)
	}
	if inode(t, fs.path) != held {
		t.Fatal("the relinked file has another inode")
	}
	fs.wantWorking(t)
	fs.logged(t, 0)
}

// TestBoltFileMovedAndBack: a file moved away and back is the held file
// again; spending and last-used times a refused flush kept in memory are
// written then, exactly once.
func TestBoltFileMovedAndBack(t *testing.T) {
	dir := t.TempDir()
	fs := newFileStore(t, dir)
	c, _, err := fs.s.LookupKey(context.Background(), apikey.HashOf(fs.key.Secret.Reveal()))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := fs.s.Spend(context.Background(), c, 3); !ok || err != nil {
		t.Fatalf("Spend: %v %v", ok, err)
	}
	away := filepath.Join(dir, "elsewhere.db")
	if err := os.Rename(fs.path, away); err != nil {
		t.Fatal(err)
	}
	fs.wantRefused(t)
	if err := fs.s.Flush(); !errors.Is(err, ErrFileReplaced) {
		t.Fatalf("Flush while away: %v", err)
	}
	if err := os.Rename(away, fs.path); err != nil {
		t.Fatal(err)
	}
	fs.wantWorking(t)
	fs.logged(t, 1)
	if !strings.Contains(fs.logs.String(), "store file is back at its path") {
		t.Errorf("no notice that the file is back:\n%s", fs.logs)
	}
	// Away again: a second transition, a second line.
	if err := os.Rename(fs.path, away); err != nil {
		t.Fatal(err)
	}
	fs.wantRefused(t)
	fs.logged(t, 1+1)
	if err := os.Rename(away, fs.path); err != nil {
		t.Fatal(err)
	}
	if err := fs.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	re := openFileStore(t, fs.path)
	k, err := re.s.Key(t.Context(), fs.key.ID)
	if err != nil {
		t.Fatal(err)
	}
	if *k.CreditsRemaining != 7 {
		t.Fatalf("after restart the key holds %d credits, want 10-3 = 7: spending kept through the refused flushes was lost or written twice", *k.CreditsRemaining)
	}
	if k.LastUsedAt == nil {
		t.Fatal("the last-used time kept through the refused flushes was lost")
	}
}

// TestBoltFileGoneDuringCommit: a file that goes while a write commits
// (after the check at the start of the transaction) leaves the write in the
// held file only; it is not acknowledged.
func TestBoltFileGoneDuringCommit(t *testing.T) {
	fs := newFileStore(t, t.TempDir())
	err := fs.s.b.Update(context.Background(), func(tx Tx) error {
		if err := tx.Put(bucketMeta, []byte("probe"), []byte("1")); err != nil {
			return err
		}
		return os.Remove(fs.path)
	})
	if !errors.Is(err, ErrFileReplaced) || !strings.Contains(err.Error(), "a restart will not read") {
		t.Fatalf("write whose file went during the commit: %v, want ErrFileReplaced", err)
	}
	fs.logged(t, 1)
}

// TestBoltFileDirectoryRenamed: the store's directory renamed, with the
// configured path relative to the working directory, which a restart finds
// by name.
func TestBoltFileDirectoryRenamed(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(root)
	fs := openFileStore(t, filepath.Join("data", "keygate.db"))
	if _, err := fs.s.CreateTenant(t.Context(), "Acme"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir, filepath.Join(root, "data.old")); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.s.CreateTenant(t.Context(), "Lost"); !errors.Is(err, ErrFileReplaced) {
		t.Fatalf("write after the directory was renamed: %v", err)
	}
	if err := fs.s.Ping(); !errors.Is(err, ErrFileReplaced) {
		t.Fatalf("Ping: %v", err)
	}
	fs.logged(t, 1)
}

// TestBoltFileSymlink: a path that is a symlink names the file it points
// at; pointing it elsewhere replaces the file.
func TestBoltFileSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.db")
	other := filepath.Join(dir, "other.db")
	fs := openFileStore(t, filepath.Join(dir, "keygate.db"))
	fs.s.Close()
	if err := os.Rename(fs.path, real); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, fs.path); err != nil {
		t.Fatal(err)
	}
	fs = openFileStore(t, fs.path)
	if _, err := fs.s.CreateTenant(t.Context(), "Acme"); err != nil {
		t.Fatalf("write through a symlink: %v", err)
	}
	if err := fs.s.Ping(); err != nil {
		t.Fatalf("Ping through a symlink: %v", err)
	}
	raw, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := fs.path + ".new"
	if err := os.Symlink(other, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, fs.path); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.s.CreateTenant(t.Context(), "Lost"); !errors.Is(err, ErrFileReplaced) {
		t.Fatalf("write after the symlink was pointed elsewhere: %v", err)
	}
}

// TestBoltFileReadOnly: `keygate check` and `store migrate --from-bbolt`
// open the file read-only; they write nothing, so they do not look at the
// path, and keep reading the file they opened.
func TestBoltFileReadOnly(t *testing.T) {
	fs := newFileStore(t, t.TempDir())
	if err := fs.s.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(fs.path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := os.Remove(fs.path); err != nil {
		t.Fatal(err)
	}
	if c, found, err := ro.LookupKey(context.Background(), apikey.HashOf(fs.key.Secret.Reveal())); err != nil || !found || c.ID != fs.key.ID {
		t.Fatalf("read-only lookup: %+v %v %v", c, found, err)
	}
	if err := ro.Ping(); err != nil {
		t.Fatalf("read-only Ping: %v", err)
	}
}

// TestBoltFileGoneUnderLoad: writers and probes racing the deletion; the
// operator is told once, and no write after it is acknowledged.
func TestBoltFileGoneUnderLoad(t *testing.T) {
	fs := newFileStore(t, t.TempDir())
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		removed bool
		late    []string // tenants acknowledged after the removal returned
	)
	start := make(chan struct{})
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for j := range 50 {
				mu.Lock()
				gone := removed
				mu.Unlock()
				if i%2 == 0 {
					fs.s.Ping()
					continue
				}
				tn, err := fs.s.CreateTenant(t.Context(), fmt.Sprint("t", i, "-", j))
				if err == nil && gone {
					mu.Lock()
					late = append(late, tn.ID)
					mu.Unlock()
				}
				if err != nil && !errors.Is(err, ErrFileReplaced) {
					t.Errorf("CreateTenant: %v", err)
				}
			}
		}()
	}
	close(start)
	time.Sleep(2 * time.Millisecond)
	mu.Lock()
	if err := os.Remove(fs.path); err != nil {
		t.Fatal(err)
	}
	removed = true
	mu.Unlock()
	wg.Wait()
	if len(late) > 0 {
		t.Fatalf("%d writes acknowledged after the file was removed", len(late))
	}
	if _, err := fs.s.CreateTenant(t.Context(), "after"); !errors.Is(err, ErrFileReplaced) {
		t.Fatalf("CreateTenant: %v", err)
	}
	fs.logged(t, 1)
}

// BenchmarkBoltPathCheck is what a write and a readiness probe pay.
func BenchmarkBoltPathCheck(b *testing.B) {
	be, err := OpenBolt(filepath.Join(b.TempDir(), "k.db"), false, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	bb := be.(*boltBackend)
	for b.Loop() {
		if err := bb.check("bench"); err != nil {
			b.Fatal(err)
		}
	}
}
