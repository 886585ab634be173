package keystore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore/apikey"
)

// fixtures are the stores in testdata written by the code of each older
// schema this build upgrades (TestWriteSchemaFixture).
var fixtures = []string{"schema1", "schema2"}

// copyFixture copies testdata/<name>.db to a temporary directory.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keygate.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// fixtureWant reads a fixture's keys as the code of its schema stored
// them, and their secrets.
func fixtureWant(t *testing.T, fixture string) ([]Key, fixtureSecrets) {
	t.Helper()
	var keys []Key
	var sec fixtureSecrets
	for name, v := range map[string]any{fixture + ".keys.json": &keys, fixture + ".secrets.json": &sec} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	if len(keys) < 40 || len(sec.Keys) != len(keys) {
		t.Fatalf("fixture: %d keys, %d secrets", len(keys), len(sec.Keys))
	}
	return keys, sec
}

// dumpBolt reads every record of the bbolt file at path, by bucket.
func dumpBolt(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]map[string]string{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			m := map[string]string{}
			out[string(name)] = m
			return b.ForEach(func(k, v []byte) error { m[string(k)] = string(v); return nil })
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func openAt(t *testing.T, path string, readOnly bool) *Store {
	t.Helper()
	bk, err := OpenBolt(path, readOnly, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(bk, Options{Now: func() time.Time { return fixtureClock }, MaxOrgKeys: -1, ReadOnly: readOnly})
	if err != nil {
		bk.Close()
		t.Fatal(err)
	}
	return s
}

// listAll pages through every key, 7 a page.
func listAll(t *testing.T, s *Store, f ListFilter) []Key {
	t.Helper()
	var out []Key
	for {
		f.Limit = 7
		p, err := s.ListKeys(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Keys...)
		if !p.HasMore {
			return out
		}
		f.Cursor = p.NextCursor
	}
}

// checkFixtureKeys fails unless s holds exactly the fixture's keys, as
// the code of its schema stored them, listed in the same order, by tenant
// and org too, counted by state, and every secret still authenticates as
// its key.
func checkFixtureKeys(t *testing.T, s *Store, fixture string) {
	t.Helper()
	want, sec := fixtureWant(t, fixture)
	got := listAll(t, s, ListFilter{})
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("keys differ from what the code of %s stored:\n got %s\nwant %s", fixture, g, w)
	}
	counts, err := s.CountKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range counts {
		n += c
	}
	if n != len(want) {
		t.Fatalf("CountKeys counted %d keys of %d: %v", n, len(want), counts)
	}
	byTenant, byOrg := 0, 0
	tenants, orgs := map[string]bool{}, map[string]bool{}
	for _, k := range want {
		tenants[k.TenantID] = true
		if k.OrgID != "" {
			orgs[k.OrgID] = true
		}
	}
	for tn := range tenants {
		byTenant += len(listAll(t, s, ListFilter{TenantID: tn}))
	}
	for o := range orgs {
		byOrg += len(listAll(t, s, ListFilter{OrgID: o}))
	}
	if byTenant != len(want) || byOrg == 0 {
		t.Fatalf("listed by tenant %d of %d keys, by org %d", byTenant, len(want), byOrg)
	}
	for _, k := range want {
		c, ok, err := s.LookupKey(t.Context(), apikey.HashOf(sec.Keys[k.ID]))
		if err != nil || !ok || c.ID != k.ID || c.Status != k.Status {
			t.Fatalf("key %s (%s): found %v, err %v", k.ID, k.Name, ok, err)
		}
	}
	at, err := s.AdminTokenByHash(t.Context(), apikey.HashOf(sec.AdminToken))
	if err != nil || at.ID != sec.AdminID {
		t.Fatalf("admin token: %+v %v", at, err)
	}
}

// checkMoved fails unless after holds every key record of before (a
// store of an older schema) under its hash in the form of schema 3, equal
// to the record before to the last field, with its id naming that hash,
// and every other record as it was. except names key ids left as they
// were.
func checkMoved(t *testing.T, before, after map[string]map[string]string, except ...string) {
	t.Helper()
	oldBytes, newBytes := 0, 0
	for raw, rec := range before[bucketKeys] {
		id := raw
		if _, ref, _ := decodeHashRef([]byte(rec)); ref || slices.Contains(except, id) {
			// Moved before, or left: as it was.
			if after[bucketKeys][raw] != rec {
				t.Fatalf("key %q was rewritten", raw)
			}
			continue
		}
		var old storedKey
		if err := decodeKeyRecord(id, nil, []byte(rec), &old); err != nil {
			t.Fatal(err)
		}
		if _, left := after[bucketKeys][id]; left {
			t.Fatalf("key %s: still under its text", id)
		}
		h, ref, err := decodeHashRef([]byte(after[bucketKeys][string(idKey(id))]))
		if !ref || err != nil || !bytes.Equal(h[:], old.Hash) {
			t.Fatalf("key %s: %q is no reference to its hash (%v)", id, after[bucketKeys][string(idKey(id))], err)
		}
		v := after[bucketHashes][string(h[:])]
		if !isHashedRecord([]byte(v)) {
			t.Fatalf("key %s: no record under its hash", id)
		}
		var cur storedKey
		if err := decodeKeyRecord("", h[:], []byte(v), &cur); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cur, old) {
			t.Fatalf("key %s changed:\n got %+v\nwant %+v", id, cur, old)
		}
		oldBytes, newBytes = oldBytes+len(rec)+len(before[bucketHashes][string(h[:])]), newBytes+len(v)+len(after[bucketKeys][string(idKey(id))])
	}
	// The index entries, in their binary form.
	for _, bucket := range []string{bucketKeysByTenant, bucketKeysByOrg} {
		if len(after[bucket]) != len(before[bucket]) {
			t.Fatalf("%s: %d entries, were %d", bucket, len(after[bucket]), len(before[bucket]))
		}
		for e := range before[bucket] {
			if !isTextIndexKey([]byte(e)) {
				continue
			}
			parent, id, ok := splitTextIndexKey([]byte(e))
			if _, moved := after[bucket][string(indexKey(parent, id))]; !ok || !moved {
				t.Fatalf("%s: entry %q not rewritten", bucket, e)
			}
			if len(indexKey(parent, id)) != 1+16+16 {
				t.Fatalf("%s: entry %q not in 33 bytes", bucket, e)
			}
		}
	}
	t.Logf("key records and hash index: %d bytes before, %d after", oldBytes, newBytes)
	if len(after[bucketKeys]) != len(before[bucketKeys]) || len(after[bucketHashes]) != len(before[bucketHashes]) {
		t.Fatalf("%d ids and %d hashes, were %d and %d", len(after[bucketKeys]), len(after[bucketHashes]), len(before[bucketKeys]), len(before[bucketHashes]))
	}
	for bucket, recs := range before {
		if bucket == bucketKeys || bucket == bucketHashes || bucket == bucketMeta || bucket == bucketKeysByTenant || bucket == bucketKeysByOrg {
			continue
		}
		if !reflect.DeepEqual(after[bucket], recs) {
			t.Errorf("bucket %s changed by the upgrade", bucket)
		}
	}
}

// TestUpgradeSchema: a store written by the code of an older schema reads
// as it was when opened read-only (and stays untouched), and a writable
// open upgrades it to schema 3: every key record under its hash, every
// key equal to what the older code stored, every secret still
// authenticating, every other record unchanged. A second open changes
// nothing.
func TestUpgradeSchema(t *testing.T) {
	for _, fixture := range fixtures {
		t.Run(fixture, func(t *testing.T) {
			path := copyFixture(t, fixture)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			v1 := dumpBolt(t, path)
			if got := v1[bucketMeta][string(metaSchemaVersion)]; got != strings.TrimPrefix(fixture, "schema") {
				t.Fatalf("fixture schema %q", got)
			}

			ro := openAt(t, path, true)
			checkFixtureKeys(t, ro, fixture)
			if err := ro.Close(); err != nil {
				t.Fatal(err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
				t.Fatal("a read-only open changed the file")
			}

			s := openAt(t, path, false)
			checkFixtureKeys(t, s, fixture)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			v2 := dumpBolt(t, path)
			if got := v2[bucketMeta][string(metaSchemaVersion)]; got != "3" {
				t.Fatalf("schema %q after the upgrade", got)
			}
			checkMoved(t, v1, v2)

			// A second open: nothing to do.
			s = openAt(t, path, false)
			checkFixtureKeys(t, s, fixture)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if v3 := dumpBolt(t, path); !reflect.DeepEqual(v3[bucketKeys], v2[bucketKeys]) || !reflect.DeepEqual(v3[bucketHashes], v2[bucketHashes]) ||
				!reflect.DeepEqual(v3[bucketMeta], v2[bucketMeta]) {
				t.Fatal("a second open rewrote key records")
			}
		})
	}
}

// TestUpgradeInterrupted: a store whose upgrade stopped half way (some key
// records under their hash, one record damaged, the version still the
// old one) reads correctly read-only, writes made meanwhile land, and the
// next writable open finishes the upgrade, leaving the damaged record as
// it was rather than lose or guess it.
func TestUpgradeInterrupted(t *testing.T) {
	for _, fixture := range fixtures {
		t.Run(fixture, func(t *testing.T) {
			path := copyFixture(t, fixture)
			want, sec := fixtureWant(t, fixture)
			damaged := want[3]
			// A record whose hash's entry is gone: no Check found it,
			// and the upgrade must not make one find it.
			orphan := want[5]
			bk, err := OpenBolt(path, false, 0)
			if err != nil {
				t.Fatal(err)
			}
			err = bk.Update(t.Context(), func(tx Tx) error {
				for i, k := range want {
					switch {
					case k.ID == damaged.ID:
						if err := tx.Put(bucketKeys, []byte(k.ID), []byte(`{"id": "`+k.ID+`", "status": "act`)); err != nil {
							return err
						}
					case k.ID == orphan.ID:
						h := apikey.HashOf(sec.Keys[k.ID])
						if err := tx.Delete(bucketHashes, h[:]); err != nil {
							return err
						}
					case i%2 == 0:
						v, err := tx.Get(bucketKeys, []byte(k.ID))
						if err != nil {
							return err
						}
						if ok, err := moveUnderHash(tx, []byte(k.ID), v); !ok || err != nil {
							return fmt.Errorf("move %s: %v %w", k.ID, ok, err)
						}
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			bk.Close()
			half := dumpBolt(t, path)

			for _, readOnly := range []bool{true, false} {
				s := openAt(t, path, readOnly)
				for _, k := range want {
					c, ok, err := s.LookupKey(t.Context(), apikey.HashOf(sec.Keys[k.ID]))
					if k.ID == damaged.ID {
						if err == nil || ok {
							t.Fatalf("read-only %v: the damaged record did not fail closed: found %v", readOnly, ok)
						}
						if strings.Contains(err.Error(), sec.Keys[k.ID]) {
							t.Fatal("the error quotes the key")
						}
						continue
					}
					if k.ID == orphan.ID {
						if err != nil || ok {
							t.Fatalf("read-only %v: the orphaned record: found %v, err %v", readOnly, ok, err)
						}
						continue
					}
					if err != nil || !ok || c.ID != k.ID || c.Status != k.Status {
						t.Fatalf("read-only %v: key %s: found %v, err %v", readOnly, k.ID, ok, err)
					}
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			after := dumpBolt(t, path)
			if got := after[bucketMeta][string(metaSchemaVersion)]; got != "3" {
				t.Fatalf("schema %q", got)
			}
			checkMoved(t, half, after, damaged.ID, orphan.ID)
			for id, v := range after[bucketKeys] {
				if _, ref, _ := decodeHashRef([]byte(v)); !ref && id != damaged.ID && id != orphan.ID {
					t.Fatalf("key %s left by id", id)
				}
			}
		})
	}
}

// TestLegacyRecordWrite: a write to a key still stored by its id (a store
// part way through its upgrade) moves it under its hash, so that the
// Check path and the admin API read the same record afterwards.
func TestLegacyRecordWrite(t *testing.T) {
	path := copyFixture(t, "schema2")
	want, sec := fixtureWant(t, "schema2")
	k := want[0]
	bk, err := OpenBolt(path, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Open without the upgrade: the version says 3 already.
	err = bk.Update(t.Context(), func(tx Tx) error { return tx.Put(bucketMeta, metaSchemaVersion, schemaVersion) })
	if err != nil {
		t.Fatal(err)
	}
	bk.Close()
	s := openAt(t, path, false)
	defer s.Close()
	if _, err := s.RevokeKey(t.Context(), k.ID); err != nil {
		t.Fatal(err)
	}
	c, ok, err := s.LookupKey(t.Context(), apikey.HashOf(sec.Keys[k.ID]))
	if err != nil || !ok || c.Status != authz.StatusRevoked {
		t.Fatalf("revoked key reads %+v %v %v", c, ok, err)
	}
	got, err := s.Key(t.Context(), k.ID)
	if err != nil || got.Status != authz.StatusRevoked {
		t.Fatalf("admin read: %+v %v", got, err)
	}
	err = s.view(t.Context(), func(tx Tx) error {
		v, err := tx.Get(bucketKeys, idKey(k.ID))
		if _, ref, _ := decodeHashRef(v); !ref || err != nil {
			return fmt.Errorf("key %s still by id (%v)", k.ID, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSchemaRefused: a store of a newer schema is refused by every open,
// read-only or not, and left as it is.
func TestSchemaRefused(t *testing.T) {
	for _, v := range []string{"4", "10", "1x", "0"} {
		path := copyFixture(t, "schema1")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte(bucketMeta)).Put(metaSchemaVersion, []byte(v))
		})
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		for _, readOnly := range []bool{true, false} {
			bk, err := OpenBolt(path, readOnly, 0)
			if err != nil {
				t.Fatal(err)
			}
			if s, err := New(bk, Options{ReadOnly: readOnly}); err == nil {
				s.Close()
				t.Fatalf("schema %q opened (read-only %v)", v, readOnly)
			} else if !strings.Contains(err.Error(), "schema version") {
				t.Fatalf("schema %q: %v", v, err)
			}
			bk.Close()
		}
		want, _ := fixtureWant(t, "schema1")
		if got := dumpBolt(t, path)[bucketKeys]; !isJSONRecord([]byte(got[want[0].ID])) {
			t.Fatalf("schema %q: records rewritten", v)
		}
	}
}

// TestCopySchema: Copy from a store of an older schema (read as it is)
// writes a store of schema 3, every record in its form, with the same
// keys.
func TestCopySchema(t *testing.T) {
	for _, fixture := range fixtures {
		t.Run(fixture, func(t *testing.T) {
			srcPath := copyFixture(t, fixture)
			src, err := OpenBolt(srcPath, true, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			path := filepath.Join(t.TempDir(), "copy.db")
			dst, err := OpenBolt(path, false, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Copy(t.Context(), dst, src); err != nil {
				t.Fatal(err)
			}
			dst.Close()
			copied := dumpBolt(t, path)
			if got := copied[bucketMeta][string(metaSchemaVersion)]; got != "3" {
				t.Fatalf("copy of schema %q", got)
			}
			checkMoved(t, dumpBolt(t, srcPath), copied)
			s := openAt(t, path, true)
			defer s.Close()
			checkFixtureKeys(t, s, fixture)
		})
	}
}

// TestLegacyDelete: a key deleted by a process of an older build (which
// removes the record it knows by id, here none, and its hash's entry,
// here the record) is unknown to Checks, not found by id, and left out
// of listings rather than failing them.
func TestLegacyDelete(t *testing.T) {
	f := newFixture(t, Options{})
	gone := f.create(t, KeySpec{OrgID: f.org.ID})
	kept := f.create(t, KeySpec{OrgID: f.org.ID})
	h := apikey.HashOf(gone.Secret.Reveal())
	err := f.s.b.Update(t.Context(), func(tx Tx) error {
		for _, d := range []struct {
			bucket string
			key    []byte
		}{{bucketKeys, []byte(gone.ID)}, {bucketHashes, h[:]}, {bucketKeysByTenant, []byte(f.tenant.ID + "/" + gone.ID)}} {
			if err := tx.Delete(d.bucket, d.key); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f.s.cache.invalidate(h)
	if _, ok, err := f.s.LookupKey(t.Context(), h); ok || err != nil {
		t.Fatalf("deleted key: found %v, %v", ok, err)
	}
	if _, err := f.s.Key(t.Context(), gone.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key by id: %v", err)
	}
	for _, lf := range []ListFilter{{}, {TenantID: f.tenant.ID}, {OrgID: f.org.ID}} {
		got := listAll(t, f.s, lf)
		if len(got) != 1 || got[0].ID != kept.ID {
			t.Fatalf("%+v lists %d keys", lf, len(got))
		}
	}
}
