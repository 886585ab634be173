package etcdstore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/testetcd"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
	"github.com/keygate/keygate/keystore/etcdstore"
)

// schema1Clock is the clock keystore/testdata/schema<N>.db were written
// under (see keystore's TestWriteSchemaFixture).
var schema1Clock = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// loadSchema1 writes every record of keystore/testdata/schema1.db, written
// by the schema 1 code, into etcd as they are (schema version 1, JSON key
// records), as a cluster of the schema 1 build would hold them. It
// returns the raw records of the keys bucket.
func loadSchema1(t *testing.T, endpoint string) map[string][]byte {
	return loadFixture(t, endpoint, "schema1")
}

// loadFixture is loadSchema1 for keystore/testdata/<fixture>.db.
func loadFixture(t *testing.T, endpoint, fixture string) map[string][]byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", fixture+".db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "schema1.db")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := keystore.OpenBolt(path, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := backend(t, endpoint, "loader")
	defer dst.Close()
	keys := map[string][]byte{}
	for _, bucket := range keystore.Buckets {
		var recs [][2][]byte
		err := src.View(t.Context(), func(tx keystore.Tx) error {
			return tx.Scan(bucket, nil, nil, func(k, v []byte) (bool, error) {
				recs = append(recs, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
				return true, nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		for len(recs) > 0 {
			n := min(len(recs), 100)
			err := dst.Update(t.Context(), func(tx keystore.Tx) error {
				for _, r := range recs[:n] {
					if err := tx.Put(bucket, r[0], r[1]); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if bucket == "keys" {
				for _, r := range recs[:n] {
					keys[string(r[0])] = r[1]
				}
			}
			recs = recs[n:]
		}
	}
	if len(keys) < 40 {
		t.Fatalf("%d key records loaded", len(keys))
	}
	return keys
}

func backend(t *testing.T, endpoint, id string) *etcdstore.Backend {
	t.Helper()
	b, err := etcdstore.Open(etcdstore.Config{
		Endpoints: []string{endpoint}, ReplicaTTL: ttl, ReplicaID: id,
		DialTimeout: 3 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawRecords reads the schema version and the key records from etcd.
func rawRecords(t *testing.T, b keystore.Backend) (string, map[string][]byte) {
	t.Helper()
	var version string
	keys := map[string][]byte{}
	err := b.View(t.Context(), func(tx keystore.Tx) error {
		v, err := tx.Get("meta", []byte("schema_version"))
		version = string(v)
		if err != nil {
			return err
		}
		return tx.Scan("keys", nil, nil, func(k, v []byte) (bool, error) {
			id := string(k)
			if len(k) == 16 { // schema 3: the id's 16 bytes
				id = uuid.UUID(k).String()
			}
			keys[id] = bytes.Clone(v)
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return version, keys
}

// TestUpgradeSchema1Etcd: a cluster's store written by the schema 1 build
// is upgraded by the first replica of this build that opens it: schema
// version 3, every key record under its hash, every id naming its hash,
// every key as schema 1 stored it and
// every secret working; the next replica finds nothing to do. A JSON
// record written afterwards (a replica of the old build not yet stopped)
// is still read, and its change (a revoke) reaches the new replicas.
func TestUpgradeSchema1Etcd(t *testing.T) {
	n := testetcd.Start(t)
	before := loadSchema1(t, n.Endpoint())
	var want []keystore.Key
	var sec struct {
		Keys map[string]string `json:"keys"`
	}
	for name, v := range map[string]any{"schema1.keys.json": &want, "schema1.secrets.json": &sec} {
		b, err := os.ReadFile(filepath.Join("..", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	opts := keystore.Options{Now: func() time.Time { return schema1Clock }, MaxOrgKeys: -1}
	r0 := open(t, n.Endpoint(), "r0", opts)
	version, after := rawRecords(t, r0.b)
	if version != "3" {
		t.Fatalf("schema version %q after the upgrade", version)
	}
	if len(after) != len(before) {
		t.Fatalf("%d key records, were %d", len(after), len(before))
	}
	for id, v := range after {
		if !isHashRef(v) {
			t.Fatalf("key %s: record not moved under its hash (%d bytes)", id, len(v))
		}
	}
	err := r0.b.View(t.Context(), func(tx keystore.Tx) error {
		entries := 0
		err := tx.Scan(keystore.HashIndexBucket, nil, nil, func(_, v []byte) (bool, error) {
			entries++
			if len(v) <= 16 || v[0] != 0x02 {
				return false, fmt.Errorf("hash index entry of %d bytes after the upgrade, not a record", len(v))
			}
			return true, nil
		})
		if err == nil && entries != len(before) {
			err = fmt.Errorf("%d hash index entries for %d keys", entries, len(before))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	r1 := open(t, n.Endpoint(), "r1", opts)
	if _, again := rawRecords(t, r1.b); !reflect.DeepEqual(again, after) {
		t.Fatal("the second replica rewrote key records")
	}
	for _, r := range []replica{r0, r1} {
		var got []keystore.Key
		for cursor := ""; ; {
			p, err := r.s.ListKeys(t.Context(), keystore.ListFilter{Cursor: cursor, Limit: 9})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, p.Keys...)
			if !p.HasMore {
				break
			}
			cursor = p.NextCursor
		}
		if !reflect.DeepEqual(got, want) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			t.Fatalf("keys differ from what schema 1 stored:\n got %s\nwant %s", g, w)
		}
		for _, k := range want {
			if c := mustLookup(t, r.s, sec.Keys[k.ID]); c.ID != k.ID || c.Status != k.Status {
				t.Fatalf("key %s: credential %s %s", k.ID, c.ID, c.Status)
			}
		}
	}

	// An old replica still running revokes a key, in JSON.
	var victim keystore.Key
	for _, k := range want {
		if k.Status == authz.StatusActive && k.RevokedAt == nil {
			victim = k
			break
		}
	}
	old := bytes.Replace(before[victim.ID], []byte(`"status":"active"`), []byte(`"status":"revoked","revoked_at":"2026-11-30T11:00:00Z"`), 1)
	if bytes.Equal(old, before[victim.ID]) {
		t.Fatal("test: no status in the JSON record")
	}
	loader := backend(t, n.Endpoint(), "old")
	defer loader.Close()
	err = loader.Update(t.Context(), func(tx keystore.Tx) error { return tx.Put("keys", []byte(victim.ID), old) })
	if err != nil {
		t.Fatal(err)
	}
	h := apikey.HashOf(sec.Keys[victim.ID])
	for _, r := range []replica{r0, r1} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, ok, err := r.s.LookupKey(t.Context(), h)
			if err != nil || !ok {
				t.Fatalf("lookup after the old replica's write: %v %v", ok, err)
			}
			if c.Status == authz.StatusRevoked {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the old replica's revoke did not reach a new replica")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	k, err := r0.s.Key(t.Context(), victim.ID)
	if err != nil || k.Status != authz.StatusRevoked {
		t.Fatalf("key after the old replica's revoke: %+v %v", k, err)
	}
	// The new replicas move the record under its hash again, and the key
	// stays revoked on each, read from there.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var byText []byte
		err := r0.b.View(t.Context(), func(tx keystore.Tx) error {
			v, err := tx.Get("keys", []byte(victim.ID))
			byText = v
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, recs := rawRecords(t, r0.b); byText == nil && isHashRef(recs[victim.ID]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the old replica's record was not moved under its hash")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, r := range []replica{r0, r1} {
		r.s.Flush()
		if c, ok, err := r.s.LookupKey(t.Context(), h); err != nil || !ok || c.Status != authz.StatusRevoked {
			t.Fatalf("after the move: %+v %v %v", c, ok, err)
		}
	}
	r2 := open(t, n.Endpoint(), "r2", opts)
	if c, ok, err := r2.s.LookupKey(t.Context(), h); err != nil || !ok || c.Status != authz.StatusRevoked {
		t.Fatalf("a replica opened after the move: %+v %v %v", c, ok, err)
	}
}

// isHashRef reports a value of the keys bucket in schema 3: a reference
// to the hash the record is stored under (0x03, then 43 characters).
func isHashRef(v []byte) bool { return len(v) == 44 && v[0] == 0x03 }

// TestUpgradeSchema1EtcdConcurrent: three replicas of this build opening
// a store of schema 1 or 2 at once all open, each upgrading what the
// others have not yet (their transactions conflict and retry), and the
// store ends upgraded whole.
func TestUpgradeSchema1EtcdConcurrent(t *testing.T) {
	for _, fixture := range []string{"schema1", "schema2"} {
		t.Run(fixture, func(t *testing.T) { testUpgradeConcurrent(t, fixture) })
	}
}

func testUpgradeConcurrent(t *testing.T, fixture string) {
	n := testetcd.Start(t)
	before := loadFixture(t, n.Endpoint(), fixture)
	opts := keystore.Options{Now: func() time.Time { return schema1Clock }, MaxOrgKeys: -1}
	var (
		wg   sync.WaitGroup
		errs = make([]error, 3)
		bs   = make([]*etcdstore.Backend, 3)
	)
	for i := range bs {
		bs[i] = backend(t, n.Endpoint(), fmt.Sprint("c", i))
	}
	for i := range bs {
		wg.Go(func() {
			s, err := keystore.New(bs[i], opts)
			if err == nil {
				t.Cleanup(func() { s.Close() })
			} else {
				bs[i].Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	version, after := rawRecords(t, bs[0])
	if version != "3" || len(after) != len(before) {
		t.Fatalf("schema %q, %d key records (were %d)", version, len(after), len(before))
	}
	for id, v := range after {
		if !isHashRef(v) {
			t.Fatalf("key %s not upgraded", id)
		}
	}
}
