package keystore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
)

// fillValue sets v, and every field under it, to a value that is not
// zero and differs per field (seed). It fails the test on a type it does
// not know: a field of a new kind added to Key must be given a value here
// and a place in the codec.
func fillValue(t *testing.T, v reflect.Value, seed string) {
	t.Helper()
	n := int64(len(seed)*7 + 3)
	switch v.Type() {
	case reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2030, 1, 2, 3, 4, 5, int(n)*1000+7, time.UTC)))
		return
	case reflect.TypeFor[time.Duration]():
		v.SetInt(n * int64(time.Second))
		return
	case reflect.TypeFor[ratelimit.Algorithm]():
		v.SetUint(uint64(ratelimit.TokenBucket)) // JSON knows no other
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("v-" + seed)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(n)
	case reflect.Uint8, reflect.Uint64:
		v.SetUint(uint64(n % 200))
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fillValue(t, p.Elem(), seed)
		v.Set(p)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fillValue(t, s.Index(i), fmt.Sprint(seed, i))
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for i := range 2 {
			k := reflect.New(v.Type().Key()).Elem()
			fillValue(t, k, fmt.Sprint(seed, "-k", i))
			e := reflect.New(v.Type().Elem()).Elem()
			fillValue(t, e, fmt.Sprint(seed, "-e", i))
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if v.Type() == reflect.TypeFor[storedKey]() && f.Name == "place" {
				continue // where the record was read from, not part of it
			}
			if !f.IsExported() {
				t.Fatalf("%s.%s: unexported field, unknown to the test", v.Type(), f.Name)
			}
			fillValue(t, v.Field(i), seed+"."+f.Name)
		}
	default:
		t.Fatalf("%s: a field of kind %s, unknown to the test (and to the key record codec?)", seed, v.Kind())
	}
}

// zeroFields lists the fields under v that are zero.
func zeroFields(v reflect.Value, path string) []string {
	if v.Type() == reflect.TypeFor[time.Time]() || v.Kind() != reflect.Struct {
		if v.IsZero() {
			return []string{path}
		}
		return nil
	}
	var out []string
	for i := range v.NumField() {
		if v.Type() == reflect.TypeFor[storedKey]() && v.Type().Field(i).Name == "place" {
			continue
		}
		out = append(out, zeroFields(v.Field(i), path+"."+v.Type().Field(i).Name)...)
	}
	return out
}

// TestKeyRecordEveryField: a record with every field of storedKey (Key,
// its Meter, the hash) set survives the binary form, equal to what it was
// and to what the JSON form of schema 1 gives. The record is filled by
// reflection, so a field added to Key without a place in the codec comes
// back zero and fails here.
func TestKeyRecordEveryField(t *testing.T) {
	var k storedKey
	fillValue(t, reflect.ValueOf(&k).Elem(), "k")
	if z := zeroFields(reflect.ValueOf(k), "storedKey"); len(z) > 0 {
		t.Fatalf("fill left zero fields: %v", z)
	}
	k.Hash = bytes.Repeat([]byte{0xc3}, 32) // the key it is stored under
	raw := encodeKeyRecord(nil, &k)
	var got storedKey
	if err := decodeKeyRecord("", k.Hash, raw, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, k) {
		t.Fatalf("binary round trip:\n got %+v\nwant %+v", got, k)
	}
	j, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	var viaJSON storedKey
	if err := decodeKeyRecord(k.ID, nil, j, &viaJSON); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, viaJSON) {
		t.Fatalf("binary and JSON round trips differ:\nbinary %+v\n  json %+v", got, viaJSON)
	}
	if len(raw) >= len(j)/2 {
		t.Errorf("binary record %d bytes, JSON %d: want less than half", len(raw), len(j))
	}
	// The hash is the record's key, not repeated in it in any form.
	if bytes.Contains(raw, k.Hash) || bytes.Contains(raw, []byte(hashText.EncodeToString(k.Hash))) {
		t.Error("the binary record repeats the hash")
	}
}

// TestKeyRecordIDs: ids the store makes (canonical UUIDs) take their 16
// bytes in a record, any other its text, and both read back as they were.
func TestKeyRecordIDs(t *testing.T) {
	h := bytes.Repeat([]byte{7}, 32)
	uuids := storedKey{Key: Key{ID: "01a22d25-3e6b-7846-af0a-f4cdb4523e39", TenantID: "01a22d25-3e6b-7846-af0a-f4cdb4523e3a", OrgID: "01a22d25-3e6b-7846-af0a-f4cdb4523e3b"}, Hash: h}
	texts := storedKey{Key: Key{ID: "01A22D25-3E6B-7846-AF0A-F4CDB4523E39", TenantID: "acme", OrgID: "urn:uuid:01a22d25-3e6b-7846-af0a-f4cdb4523e3b"}, Hash: h}
	mixed := storedKey{Key: Key{ID: uuids.ID, TenantID: "acme"}, Hash: h}
	a, b := encodeKeyRecord(nil, &uuids), encodeKeyRecord(nil, &texts)
	if d := len(b) - len(a); d != (2+36)+(2+4)+(2+45)-3*(1+16) {
		t.Errorf("records of UUID ids %d bytes, of text ids %d", len(a), len(b))
	}
	for _, k := range []storedKey{uuids, texts, mixed} {
		var got storedKey
		if err := decodeKeyRecord("", h, encodeKeyRecord(nil, &k), &got); err != nil || !reflect.DeepEqual(got, k) {
			t.Errorf("%+v: read back %+v, %v", k.Key, got.Key, err)
		}
	}
}

// TestKeyRecordCases: records as the store writes them, and the edges of
// JSON's own round trip (null and empty scopes, enum values and others,
// a zero time, negative balances), read back from the binary form exactly
// as from JSON.
func TestKeyRecordCases(t *testing.T) {
	at := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC)
	later := at.Add(48 * time.Hour)
	neg, zero := int64(-5), int64(0)
	h := bytes.Repeat([]byte{0xab}, 32)
	cases := map[string]storedKey{
		"minimal": {Key: Key{ID: "01a2", Name: "n", TenantID: "t", Environment: "live", Tier: "standard", Status: authz.StatusActive, CreatedAt: at}, Hash: h},
		"zero":    {},
		"empty scopes, null elsewhere": {Key: Key{ID: "x", Scopes: []string{}, Status: authz.StatusRevoked, RevokedAt: &later, Environment: "test",
			Meter: Meter{CreditsRemaining: &zero}}, Hash: h},
		"unknown enums": {Key: Key{ID: "x", Status: "suspended", Environment: "staging", Scopes: []string{"a", "b:*"}}},
		"negative and limits": {Key: Key{ID: "x", Meter: Meter{CreditsRemaining: &neg, CreditsEpoch: 1 << 40, CreditsReserved: map[string]int64{"p1": 3, "p2": -1},
			Refill: &Refill{Interval: "monthly", Day: 31, Amount: 1 << 50}, LastRefillAt: &at},
			Limits:       map[string]ratelimit.Limit{"off": {}, "day": {Requests: 1000, Window: 24 * time.Hour}, "tb": {Requests: 5, Window: time.Second, Burst: 9, Algorithm: ratelimit.TokenBucket}},
			AllowedCIDRs: []string{"10.0.0.0/8", "::1/128"}, Metadata: map[string]string{"é": "ü", "": "empty name"}}, Hash: h},
		"old times": {Key: Key{ID: "x", CreatedAt: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), ExpiresAt: &at}},
	}
	for name, k := range cases {
		t.Run(name, func(t *testing.T) {
			if k.Hash == nil {
				k.Hash = h // a record of schema 3 is stored under its hash
			}
			j, err := json.Marshal(k)
			if err != nil {
				t.Fatal(err)
			}
			var want, got storedKey
			if err := decodeKeyRecord(k.ID, nil, j, &want); err != nil {
				t.Fatal(err)
			}
			if err := decodeKeyRecord("", k.Hash, encodeKeyRecord(nil, &k), &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("binary round trip differs from JSON's:\n got %+v\nwant %+v", got, want)
			}
			// The same bytes every time (maps in key order).
			if a, b := encodeKeyRecord(nil, &k), encodeKeyRecord(nil, &got); !bytes.Equal(a, b) {
				t.Fatal("encoding is not stable")
			}
		})
	}
}

// TestKeyRecordDamaged: a damaged or unknown record is an error (the key
// fails closed), never a panic, never a usable key, and the error quotes
// nothing of the record (it holds the key's hash).
func TestKeyRecordDamaged(t *testing.T) {
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	secretish := bytes.Repeat([]byte{0x5a}, 32) // 'Z'
	k := storedKey{Key: Key{ID: "id1", Name: "n", TenantID: "t", Environment: "live", Tier: "standard", Status: authz.StatusActive, CreatedAt: at,
		Scopes: []string{"a"}, Metadata: map[string]string{"m": "v"}}, Hash: secretish}
	good := encodeKeyRecord(nil, &k)
	bad := map[string][]byte{
		"empty":          {},
		"unknown format": append([]byte{0x09}, good[1:]...),
		"a reference":    encodeHashRef(secretish),
		"json garbage":   []byte(`{"hash": "ZZZZ`),
		"trailing byte":  append(append([]byte(nil), good...), 0),
		"huge count":     {keyRecordV1, 0, 0, 0, 0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge count v2":  {keyRecordV2, 0, 0, 0, 0, 0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"short uuid":     {keyRecordV2, 1, 1, 2, 3},
		"bad id tag":     {keyRecordV2, 3, 0, 0, 0, 0, 0},
		"empty text id":  append([]byte{keyRecordV2, 2, 0}, good[2+16:]...),
	}
	for i := 1; i < len(good); i++ {
		bad[fmt.Sprint("cut at ", i)] = good[:i]
	}
	for name, raw := range bad {
		var got storedKey
		err := decodeKeyRecord("id1", secretish, raw, &got)
		if err == nil {
			t.Errorf("%s: decoded without error", name)
			continue
		}
		if !errors.Is(err, errKeyRecord) {
			t.Errorf("%s: %v, want errKeyRecord", name, err)
		}
		if !reflect.DeepEqual(got, storedKey{}) {
			t.Errorf("%s: a failed decode left a record: %+v", name, got)
		}
		if strings.Contains(err.Error(), "ZZZZ") {
			t.Errorf("%s: the error quotes the record: %v", name, err)
		}
	}
}

// FuzzDecodeKeyRecord: no input panics; what decodes encodes to bytes
// that decode to the same record and encode to the same bytes again.
func FuzzDecodeKeyRecord(f *testing.F) {
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	n := int64(9)
	k := storedKey{Key: Key{ID: "id", Name: "n", TenantID: "t", OrgID: "o", Environment: "live", Tier: "standard", Status: authz.StatusActive, CreatedAt: at,
		ExpiresAt: &at, Scopes: []string{"a", "b"}, Metadata: map[string]string{"m": "v"}, AllowedCIDRs: []string{"10.0.0.0/8"},
		Limits: map[string]ratelimit.Limit{"m": {Requests: 1, Window: time.Minute}},
		Meter:  Meter{CreditsRemaining: &n, CreditsReserved: map[string]int64{"p": 1}, Refill: &Refill{Interval: "daily", Amount: 3}, LastRefillAt: &at}},
		Hash: bytes.Repeat([]byte{1}, 32)}
	f.Add(encodeKeyRecord(nil, &k))
	j, _ := json.Marshal(k)
	f.Add(j)
	f.Add([]byte{keyRecordV1})
	f.Add([]byte("{}"))
	f.Add(encodeHashRef(k.Hash))
	f.Fuzz(func(t *testing.T, raw []byte) {
		under := bytes.Repeat([]byte{2}, 32)
		var k1 storedKey
		if decodeKeyRecord("id", under, raw, &k1) != nil {
			return
		}
		if len(k1.Hash) != len(under) {
			k1.Hash = under // records of before schema 3 held their hash
		}
		b1 := encodeKeyRecord(nil, &k1)
		var k2 storedKey
		if err := decodeKeyRecord("", k1.Hash, b1, &k2); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if b2 := encodeKeyRecord(nil, &k2); !bytes.Equal(b1, b2) {
			t.Fatalf("encoding not stable:\n%x\n%x", b1, b2)
		}
		if raw[0] != '{' && !reflect.DeepEqual(k1, k2) {
			t.Fatalf("binary record changed on a round trip:\n%+v\n%+v", k1, k2)
		}
	})
}

// TestIndexID: the hash index names a key by the 16 bytes of its id when
// the id is a canonical UUID, by its text otherwise, and reads schema 1's
// text too; a value that is none of these is an error.
func TestIndexID(t *testing.T) {
	for _, id := range []string{"01a22d25-3e6b-7846-af0a-f4cdb4523e39", "01A22D25-3E6B-7846-AF0A-F4CDB4523E39", "urn:uuid:01a22d25-3e6b-7846-af0a-f4cdb4523e39",
		"sixteen-char-id!", "k", "{01a22d25-3e6b-7846-af0a-f4cdb4523e39}"} {
		v := encodeIndexID(id)
		if got, err := decodeIndexID(v); err != nil || got != id {
			t.Errorf("%q: read back %q, %v", id, got, err)
		}
		if canonical := id == "01a22d25-3e6b-7846-af0a-f4cdb4523e39"; canonical != (len(v) == 16) {
			t.Errorf("%q: %d bytes", id, len(v))
		}
		if isTextIndexID(v) {
			t.Errorf("%q: the new form reads as schema 1's", id)
		}
		if got, err := decodeIndexID([]byte(id)); len(id) != 16 && (err != nil || got != id) {
			t.Errorf("%q in schema 1's form: read back %q, %v", id, got, err)
		}
	}
	for _, v := range [][]byte{nil, {}, {0}} {
		if _, err := decodeIndexID(v); err == nil {
			t.Errorf("%x: no error", v)
		}
	}
}

// TestKeyRecordTimeRange: a record with a time the decoder would refuse
// is not written (schema 1's JSON refused to encode it too).
func TestKeyRecordTimeRange(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{})
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	err := f.s.modify(t.Context(), ck.ID, func(_ Tx, k *storedKey) error { k.ExpiresAt = &far; return nil })
	if err == nil {
		t.Fatal("a record with a time after 9999 was written")
	}
	if k, err := f.s.Key(t.Context(), ck.ID); err != nil || k.ExpiresAt != nil {
		t.Fatalf("key after the refused write: %+v %v", k, err)
	}
	if err := recordTimesInRange(&storedKey{Key: Key{CreatedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}}); err != nil {
		t.Fatal(err)
	}
}
