package keystore

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/keystore/apikey"
)

// copySchema1 copies testdata/schema1.db, written by the schema 1 code,
// to a temporary directory.
func copySchema1(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "schema1.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keygate.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// schema1Want reads the fixture's keys as the schema 1 code stored them,
// and their secrets.
func schema1Want(t *testing.T) ([]Key, schema1Secrets) {
	t.Helper()
	var keys []Key
	var sec schema1Secrets
	for name, v := range map[string]any{"schema1.keys.json": &keys, "schema1.secrets.json": &sec} {
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
	s, err := New(bk, Options{Now: func() time.Time { return schema1Clock }, MaxOrgKeys: -1, ReadOnly: readOnly})
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

// checkSchema1Keys fails unless s holds exactly the fixture's keys, as the
// schema 1 code stored them, listed in the same order, by tenant and org
// too, and every secret still authenticates as its key.
func checkSchema1Keys(t *testing.T, s *Store) {
	t.Helper()
	want, sec := schema1Want(t)
	got := listAll(t, s, ListFilter{})
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("keys differ from what the schema 1 code stored:\n got %s\nwant %s", g, w)
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

// TestUpgradeSchema1: a store written by the schema 1 code reads as it was
// when opened read-only (and stays untouched), and a writable open
// upgrades it to schema 2: every key record binary, every key equal to
// what schema 1 stored, every secret still authenticating, every other
// record unchanged. A second open changes nothing.
func TestUpgradeSchema1(t *testing.T) {
	path := copySchema1(t)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v1 := dumpBolt(t, path)
	if got := v1[bucketMeta][string(metaSchemaVersion)]; got != "1" {
		t.Fatalf("fixture schema %q", got)
	}

	ro := openAt(t, path, true)
	checkSchema1Keys(t, ro)
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Fatal("a read-only open changed the file")
	}

	s := openAt(t, path, false)
	checkSchema1Keys(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	v2 := dumpBolt(t, path)
	if got := v2[bucketMeta][string(metaSchemaVersion)]; got != "2" {
		t.Fatalf("schema %q after the upgrade", got)
	}
	if len(v2[bucketKeys]) != len(v1[bucketKeys]) {
		t.Fatalf("%d key records, were %d", len(v2[bucketKeys]), len(v1[bucketKeys]))
	}
	jsonBytes, binBytes := 0, 0
	for id, rec := range v2[bucketKeys] {
		if rec[0] != keyRecordV1 {
			t.Fatalf("key %s not upgraded (format %q)", id, rec[0])
		}
		// The record as schema 1 decoded it, to the last field.
		var old, cur storedKey
		if err := json.Unmarshal([]byte(v1[bucketKeys][id]), &old); err != nil {
			t.Fatal(err)
		}
		if err := decodeKeyRecord(id, []byte(rec), &cur); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cur, old) {
			t.Fatalf("key %s changed:\n got %+v\nwant %+v", id, cur, old)
		}
		jsonBytes, binBytes = jsonBytes+len(v1[bucketKeys][id]), binBytes+len(rec)
	}
	t.Logf("key records: %d bytes of JSON, %d binary", jsonBytes, binBytes)
	// The hash index: the same hashes, naming the same keys, by their
	// 16 bytes.
	if len(v2[bucketHashes]) != len(v1[bucketHashes]) {
		t.Fatalf("%d hash index entries, were %d", len(v2[bucketHashes]), len(v1[bucketHashes]))
	}
	for h, id := range v1[bucketHashes] {
		v := v2[bucketHashes][h]
		got, err := decodeIndexID([]byte(v))
		if len(v) != 16 || err != nil || got != id {
			t.Fatalf("hash index entry of key %s: %d bytes naming %q (%v)", id, len(v), got, err)
		}
	}
	for bucket, recs := range v1 {
		if bucket == bucketKeys || bucket == bucketHashes || bucket == bucketMeta {
			continue
		}
		if !reflect.DeepEqual(v2[bucket], recs) {
			t.Errorf("bucket %s changed by the upgrade", bucket)
		}
	}

	// A second open: nothing to do.
	s = openAt(t, path, false)
	checkSchema1Keys(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v3 := dumpBolt(t, path); !reflect.DeepEqual(v3[bucketKeys], v2[bucketKeys]) || !reflect.DeepEqual(v3[bucketHashes], v2[bucketHashes]) ||
		!reflect.DeepEqual(v3[bucketMeta], v2[bucketMeta]) {
		t.Fatal("a second open rewrote key records")
	}
}

// TestUpgradeInterrupted: a schema 1 store whose upgrade stopped half way
// (some key records and hash index entries in the new form, one record
// damaged, the version still 1) reads correctly
// read-only, and the next writable open finishes the upgrade, leaving
// the damaged record as it was rather than lose or guess it.
func TestUpgradeInterrupted(t *testing.T) {
	path := copySchema1(t)
	want, sec := schema1Want(t)
	damaged := want[3]
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketKeys))
		i := 0
		hb := tx.Bucket([]byte(bucketHashes))
		j := 0
		err := hb.ForEach(func(h, v []byte) error {
			j++
			if j%3 == 0 {
				return hb.Put(h, encodeIndexID(string(v)))
			}
			return nil
		})
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			defer func() { i++ }()
			switch {
			case string(k) == damaged.ID:
				return b.Put(k, []byte(`{"id": "`+damaged.ID+`", "status": "act`))
			case i%2 == 0:
				var sk storedKey
				if err := decodeKeyRecord(string(k), v, &sk); err != nil {
					return err
				}
				return b.Put(k, encodeKeyRecord(nil, &sk))
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

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
			if err != nil || !ok || c.ID != k.ID {
				t.Fatalf("read-only %v: key %s: found %v, err %v", readOnly, k.ID, ok, err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	v2 := dumpBolt(t, path)
	if got := v2[bucketMeta][string(metaSchemaVersion)]; got != "2" {
		t.Fatalf("schema %q", got)
	}
	for _, v := range v2[bucketHashes] {
		if len(v) != 16 {
			t.Fatalf("hash index entry of %d bytes left", len(v))
		}
	}
	for id, rec := range v2[bucketKeys] {
		if id == damaged.ID {
			if !isJSONRecord([]byte(rec)) {
				t.Fatal("the damaged record was rewritten")
			}
			continue
		}
		if rec[0] != keyRecordV1 {
			t.Fatalf("key %s not upgraded", id)
		}
	}
}

// TestSchemaRefused: a store of a newer schema is refused by every open,
// read-only or not, and left as it is.
func TestSchemaRefused(t *testing.T) {
	for _, v := range []string{"3", "10", "1x"} {
		path := copySchema1(t)
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
		if got := dumpBolt(t, path)[bucketKeys]; !isJSONRecord([]byte(got[schema1AnyID(t)])) {
			t.Fatalf("schema %q: records rewritten", v)
		}
	}
}

func schema1AnyID(t *testing.T) string {
	want, _ := schema1Want(t)
	return want[0].ID
}

// TestCopySchema1: Copy from a schema 1 store (read as it is) writes a
// schema 2 store, every record in its schema 2 form, with the same keys.
func TestCopySchema1(t *testing.T) {
	src, err := OpenBolt(copySchema1(t), true, 0)
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
	for id, rec := range copied[bucketKeys] {
		if rec[0] != keyRecordV1 {
			t.Fatalf("key %s copied as JSON", id)
		}
	}
	for _, v := range copied[bucketHashes] {
		if len(v) != 16 {
			t.Fatalf("hash index entry copied in %d bytes", len(v))
		}
	}
	s := openAt(t, path, true)
	defer s.Close()
	checkSchema1Keys(t, s)
}
