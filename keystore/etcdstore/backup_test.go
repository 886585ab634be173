package etcdstore_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testetcd"
	"github.com/keygate/keygate/keystore"
)

// listKeyIDs lists every key id of s.
func listKeyIDs(t *testing.T, s *keystore.Store) map[string]keystore.Key {
	t.Helper()
	out := map[string]keystore.Key{}
	f := keystore.ListFilter{Limit: 1000}
	for {
		p, err := s.ListKeys(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range p.Keys {
			out[k.ID] = k
		}
		if !p.HasMore {
			return out
		}
		f.Cursor = p.NextCursor
	}
}

// TestBackupWhileWriting copies an etcd store while a writer creates keys
// one after another, and opens the copy as a bbolt store: it holds every
// key created before the copy began, with its state, and of the keys
// created meanwhile exactly a first few (one revision, not a mix); copied
// into an empty etcd, it is that store again.
func TestBackupWhileWriting(t *testing.T) {
	srv := testetcd.Start(t)
	r := mustOpenOn(t, srv, "a")
	ctx := t.Context()
	tn, err := r.s.CreateTenant(ctx, "Acme")
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]keystore.Key{}
	for i := range 30 {
		spec := keystore.KeySpec{TenantID: tn.ID, Name: "before", Scopes: []string{"read"}}
		if i%2 == 0 {
			spec.CreditsRemaining = new(int64(100 + i))
		}
		ck, err := r.s.CreateKey(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		k := ck.Key
		if i%7 == 0 {
			if k, err = r.s.RevokeKey(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
		before[k.ID] = k
	}

	var (
		mu     sync.Mutex
		during []string // in creation order
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			ck, err := r.s.CreateKey(ctx, keystore.KeySpec{TenantID: tn.ID, Name: "during"})
			if err != nil {
				t.Errorf("create during the backup: %v", err)
				return
			}
			mu.Lock()
			during = append(during, ck.ID)
			mu.Unlock()
		}
	})
	for started := time.Now(); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		n := len(during)
		mu.Unlock()
		if n >= 3 || time.Since(started) > 10*time.Second {
			break
		}
	}
	var buf bytes.Buffer
	n, err := r.s.Backup(ctx, &buf)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || n == 0 {
		t.Fatalf("Backup returned %d, wrote %d", n, buf.Len())
	}

	path := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := keystore.VerifyBackup(ctx, path); err != nil {
		t.Fatal(err)
	}
	restored, err := keystore.Open(path, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	got := listKeyIDs(t, restored)
	for id, want := range before {
		k, ok := got[id]
		if !ok {
			t.Errorf("key %s missing from the copy", id)
			continue
		}
		if k.Status != want.Status || !slices.Equal(k.Scopes, want.Scopes) || (k.CreditsRemaining == nil) != (want.CreditsRemaining == nil) ||
			k.CreditsRemaining != nil && *k.CreditsRemaining != *want.CreditsRemaining {
			t.Errorf("key %s in the copy: %+v, want %+v", id, k, want)
		}
	}
	// One revision: the keys made meanwhile that the copy holds are the
	// first ones made, none missing in between.
	mu.Lock()
	defer mu.Unlock()
	seen := 0
	for seen < len(during) {
		if _, ok := got[during[seen]]; !ok {
			break
		}
		seen++
	}
	for _, id := range during[seen:] {
		if _, ok := got[id]; ok {
			t.Errorf("the copy holds key %s but not the one created before it, %s", id, during[seen])
		}
	}
	if extra := len(got) - len(before) - seen; extra != 0 {
		t.Errorf("the copy holds %d keys nobody created", extra)
	}

	// Restored into an empty etcd as `store migrate --from-bbolt` does.
	if err := restored.Close(); err != nil {
		t.Fatal(err)
	}
	fresh := mustOpenOn(t, testetcd.Start(t), "b")
	src, err := keystore.OpenBolt(path, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := keystore.Copy(ctx, fresh.b, src); err != nil {
		t.Fatal(err)
	}
	inEtcd := listKeyIDs(t, fresh.s)
	if len(inEtcd) != len(got) {
		t.Errorf("restored into etcd: %d keys, the copy holds %d", len(inEtcd), len(got))
	}
	for id, want := range got {
		if k, ok := inEtcd[id]; !ok || k.Status != want.Status {
			t.Errorf("key %s restored into etcd: %+v, want %+v", id, k, want)
		}
	}
	t.Logf("copy of %d bytes holds %d keys made before it and %d of the %d made during it", n, len(before), seen, len(during))
}
