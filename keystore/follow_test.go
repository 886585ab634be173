package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore/apikey"
)

// TestFollowerChanged: a record changed by another replica drops the
// cached credential; a change of only last-used time or balance keeps it
// (and moves the live balance).
func TestFollowerChanged(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{CreditsRemaining: new(int64(50))})
	h := apikey.HashOf(ck.Secret.Reveal())
	c := mustLookupCred(t, f.s, ck.Secret.Reveal())
	if _, ok, err := f.s.Spend(context.Background(), c, 5); !ok || err != nil {
		t.Fatal(ok, err)
	}
	f.s.cache.pos.Wait()
	rec := storedKey{Key: ck.Key, Hash: h[:]}
	prev, _ := json.Marshal(rec)
	// Another replica flushed its own spending and a last-used time.
	now := f.clock.Now()
	rec.LastUsedAt, rec.CreditsRemaining = &now, new(int64(40))
	cur, _ := json.Marshal(rec)
	follower{f.s}.Changed(bucketKeys, []byte(ck.ID), cur, prev)
	if _, ok := f.s.cache.get(h); !ok {
		t.Fatal("a last-used or balance change dropped the cached credential")
	}
	// The 5 spent here came out of the record when they were reserved, so
	// the stored 40 already accounts for them.
	if left, _ := f.s.ledger.live(ck.ID); left != 40 {
		t.Fatalf("live balance %d, want the stored 40", left)
	}
	// Another replica revoked it.
	prev = cur
	rec.Status = authz.StatusRevoked
	cur, _ = json.Marshal(rec)
	follower{f.s}.Changed(bucketKeys, []byte(ck.ID), cur, prev)
	if _, ok := f.s.cache.get(h); ok {
		t.Fatal("a revoke elsewhere left the credential cached")
	}
	// An unknown hash cached as unknown, then stored elsewhere.
	raw, _ := f.s.opts.Format.Generate(apikey.EnvLive)
	if _, ok, _ := f.s.LookupKey(context.Background(), apikey.HashOf(raw)); ok {
		t.Fatal("unknown key found")
	}
	f.s.cache.neg.Wait()
	hh := apikey.HashOf(raw)
	follower{f.s}.Changed(bucketHashes, hh[:], []byte("some-id"), nil)
	if _, ok := f.s.cache.get(hh); ok {
		t.Fatal("a key stored elsewhere stayed in the negative cache")
	}
}

// TestResetRacesClose: whole-cache drops and invalidations from a
// backend's watch, during lookups and while the store closes, neither deadlock nor serve anything
// cached before them.
func TestResetRacesClose(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{})
	h := apikey.HashOf(ck.Secret.Reveal())
	mustLookupCred(t, f.s, ck.Secret.Reveal())
	f.s.cache.pos.Wait()
	follower{f.s}.Reset()
	if _, ok := f.s.cache.get(h); ok {
		t.Fatal("served from the cache after a reset")
	}
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 200 {
					follower{f.s}.Reset()
					follower{f.s}.Changed(bucketHashes, h[:], []byte(ck.ID), nil)
					f.s.LookupKey(context.Background(), h)
				}
			})
		}
		wg.Go(func() { time.Sleep(5 * time.Millisecond); f.s.Close() })
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("reset and close deadlocked")
	}
}

// TestFollowerLegacyWrite: a key record written by id by a process of an
// older build, into a store this build has upgraded, is what lookups
// read from the moment the write is followed (a revoke there takes
// effect), and the store moves it under its hash.
func TestFollowerLegacyWrite(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{})
	h := apikey.HashOf(ck.Secret.Reveal())
	mustLookupCred(t, f.s, ck.Secret.Reveal())
	var ref []byte
	old := storedKey{Key: ck.Key, Hash: h[:]}
	now := f.clock.Now()
	old.Status, old.RevokedAt = authz.StatusRevoked, &now
	rec, _ := json.Marshal(old)
	// An older build writes the record under the id's text.
	err := f.s.b.Update(t.Context(), func(tx Tx) error {
		v, err := tx.Get(bucketKeys, []byte(ck.ID))
		ref = append(ref, v...)
		if err != nil {
			return err
		}
		return tx.Put(bucketKeys, []byte(ck.ID), rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Not yet followed: the record under the hash still says active.
	f.s.cache.invalidate(h)
	if c := mustLookupCred(t, f.s, ck.Secret.Reveal()); c.Status != authz.StatusActive {
		t.Fatalf("test: status %s before the write is followed", c.Status)
	}
	follower{f.s}.Changed(bucketKeys, []byte(ck.ID), rec, ref)
	if c, ok, err := f.s.LookupKey(t.Context(), h); err != nil || !ok || c.Status != authz.StatusRevoked {
		t.Fatalf("after the older build's revoke: %+v %v %v", c, ok, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.s.legacy.n.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the record written by id was not moved")
		}
		time.Sleep(5 * time.Millisecond)
	}
	err = f.s.view(t.Context(), func(tx Tx) error {
		v, err := tx.Get(bucketKeys, idKey(ck.ID))
		if _, isRef, _ := decodeHashRef(v); !isRef || err != nil {
			t.Errorf("id holds %q after the move (%v)", v, err)
		}
		if v, err := tx.Get(bucketKeys, []byte(ck.ID)); v != nil || err != nil {
			t.Errorf("the id's text still holds %q (%v)", v, err)
		}
		var k storedKey
		if err := decodeKeyRecord("", h[:], mustGet(t, tx, bucketHashes, h[:]), &k); err != nil || k.Status != authz.StatusRevoked {
			t.Errorf("record under the hash: %s %v", k.Status, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f.s.cache.invalidate(h)
	if c, ok, err := f.s.LookupKey(t.Context(), h); err != nil || !ok || c.Status != authz.StatusRevoked {
		t.Fatalf("after the move: %+v %v %v", c, ok, err)
	}
}

func mustGet(t *testing.T, tx Tx, bucket string, key []byte) []byte {
	t.Helper()
	v, err := tx.Get(bucket, key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestFollowerLegacyCreate: a key an older build creates in an upgraded
// store (its record and tenant index entry by text id, its hash naming the
// id) works on the next lookup, and once moved is listed under its tenant
// with its index entry in the schema 3 form.
func TestFollowerLegacyCreate(t *testing.T) {
	f := newFixture(t, Options{})
	raw, err := f.s.opts.Format.Generate(apikey.EnvLive)
	if err != nil {
		t.Fatal(err)
	}
	h := apikey.HashOf(raw)
	id := "01a22d25-7635-7220-a06c-14546db50c9b"
	rec, _ := json.Marshal(storedKey{Key: Key{ID: id, Name: "old", TenantID: f.tenant.ID, Environment: "live", Tier: "standard",
		Status: authz.StatusActive, CreatedAt: f.clock.Now()}, Hash: h[:]})
	textIndex := []byte(f.tenant.ID + "/" + id)
	err = f.s.b.Update(t.Context(), func(tx Tx) error {
		return errors.Join(tx.Put(bucketKeys, []byte(id), rec), tx.Put(bucketHashes, h[:], []byte(id)), tx.Put(bucketKeysByTenant, textIndex, []byte{}))
	})
	if err != nil {
		t.Fatal(err)
	}
	follower{f.s}.Changed(bucketKeys, []byte(id), rec, nil)
	follower{f.s}.Changed(bucketHashes, h[:], []byte(id), nil)
	if c, ok, err := f.s.LookupKey(t.Context(), h); err != nil || !ok || c.ID != id {
		t.Fatalf("a key an older build created: %+v %v %v", c, ok, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.s.legacy.n.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the record written by id was not moved")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p, err := f.s.ListKeys(t.Context(), ListFilter{TenantID: f.tenant.ID, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(p.Keys, func(k Key) bool { return k.ID == id }) {
		t.Fatal("the moved key is not listed under its tenant")
	}
	err = f.s.view(t.Context(), func(tx Tx) error {
		if v, err := tx.Get(bucketKeysByTenant, textIndex); v != nil || err != nil {
			t.Errorf("text index entry left (%v)", err)
		}
		if v, err := tx.Get(bucketKeysByTenant, indexKey(f.tenant.ID, id)); v == nil || err != nil {
			t.Errorf("no schema 3 index entry (%v)", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f.s.cache.invalidate(h)
	if c, ok, err := f.s.LookupKey(t.Context(), h); err != nil || !ok || c.ID != id {
		t.Fatalf("after the move: %+v %v %v", c, ok, err)
	}
}
