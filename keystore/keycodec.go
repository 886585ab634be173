package keystore

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore/apikey"
)

// The key record in a compact binary form, a third of the JSON of
// schema 1. Schema 3 stores it under the key's hash (bucket key_hashes),
// so that a Check reads one record; schema 2 stored it under the key's id
// (bucket keys) in the form before (format 0x01), and schema 1 as JSON.
// Readers accept every form: a JSON record starts with '{', which no
// format byte is, so a store in the middle of its upgrade reads correctly
// record by record.
//
// Layout after the format byte (uvarint: unsigned varint; varint: zigzag;
// str: uvarint length then bytes; ident: 0 for none, 1 then the 16 bytes
// of a canonical UUID, 2 then a str; time: varint unix seconds then
// uvarint nanoseconds, read back in UTC; opt: presence byte 0/1 then the
// value):
//
//	format 0x02 (schema 3): ident id, ident tenant, ident org
//	str name, str display prefix, format 0x01 only: str tenant, str org
//	str user, enum environment, tier (0x02: enum; 0x01: str),
//	scopes (uvarint count+1, 0: null; strs), enum status, str slot,
//	byte flags (1: imported), time created
//	format 0x02 only: uvarint mask, bit i set for each field i below that
//	is there (not empty); only those follow, without presence bytes
//	 0 opt time expires, 1 opt time last used, 2 opt time revoked
//	 3 str rotated to, 4 str rotated from, 5 metadata (uvarint count; str, str)
//	 6 opt varint credits remaining, 7 uvarint credits epoch
//	 8 reserved (uvarint count; str, varint), 9 opt refill (str interval,
//	   varint day, varint amount), 10 opt time last refill
//	11 str credits owner, 12 allowed cidrs (uvarint count; strs)
//	13 limits (uvarint count; str name, varint requests, varint window ns,
//	   varint burst, byte algorithm)
//	format 0x01 only: str hash (base64 without padding, 43 bytes)
//
// Format 0x02 leaves out the hash, which is the record's key, and holds
// the id, which the keys bucket maps to the hash (encodeHashRef); 0x01
// held the hash and not the id, its key. Neither holds the 32 raw bytes
// of a hash: a shared backend's values are read with its own tools
// (etcdctl) and may land in its logs, where no raw digest of a key is to
// be found (etcdstore's TestEtcdHoldsNoRawKey); etcdstore writes
// key_hashes' keys in hex. Maps are written in key order, so a record
// encodes to the same bytes every time.
const (
	keyRecordV1 = 0x01
	keyRecordV2 = 0x02
	// keyHashRef starts a value of the keys bucket in schema 3: the hash
	// the key's record is stored under, as text (hashText).
	keyHashRef = 0x03
)

// hashText is the hash's encoding in the record.
var hashText = base64.RawStdEncoding.Strict()

// enums are the usual values of the environment, tier and status fields,
// one byte each; any other value is written as 0 and the string.
var (
	envEnum    = []string{"", "live", "test"}
	tierEnum   = []string{"", "standard", "enterprise"} // format 0x02 only
	statusEnum = []string{"", string(authz.StatusActive), string(authz.StatusInactive), string(authz.StatusRevoked)}
)

// optionalFields is how many fields follow the creation time, each
// written in format 0x02 only when it is not empty.
const optionalFields = 14

// errKeyRecord is the cause of every decode failure: a damaged record is
// refused (the key then fails closed), never read as a default.
var errKeyRecord = errors.New("malformed key record")

// encodeKeyRecord writes k in the binary form of schema 3 (format 0x02),
// to be stored under k.Hash. It appends to dst.
func encodeKeyRecord(dst []byte, k *storedKey) []byte {
	w := recordWriter{b: dst}
	w.byte(keyRecordV2)
	w.ident(k.ID)
	w.ident(k.TenantID)
	w.ident(k.OrgID)
	w.str(k.Name)
	w.str(k.DisplayPrefix)
	w.str(k.UserID)
	w.enum(envEnum, k.Environment)
	w.enum(tierEnum, k.Tier)
	if k.Scopes == nil {
		w.uvarint(0)
	} else {
		w.uvarint(uint64(len(k.Scopes)) + 1)
		for _, s := range k.Scopes {
			w.str(s)
		}
	}
	w.enum(statusEnum, string(k.Status))
	w.str(k.Slot)
	var flags byte
	if k.Imported {
		flags |= 1
	}
	w.byte(flags)
	w.time(k.CreatedAt)
	var mask uint64
	for i, set := range [...]bool{k.ExpiresAt != nil, k.LastUsedAt != nil, k.RevokedAt != nil, k.RotatedTo != "", k.RotatedFrom != "",
		len(k.Metadata) > 0, k.CreditsRemaining != nil, k.CreditsEpoch != 0, len(k.CreditsReserved) > 0, k.Refill != nil,
		k.LastRefillAt != nil, k.CreditsOwner != "", len(k.AllowedCIDRs) > 0, len(k.Limits) > 0} {
		if set {
			mask |= 1 << i
		}
	}
	w.uvarint(mask)
	if k.ExpiresAt != nil {
		w.time(*k.ExpiresAt)
	}
	if k.LastUsedAt != nil {
		w.time(*k.LastUsedAt)
	}
	if k.RevokedAt != nil {
		w.time(*k.RevokedAt)
	}
	if k.RotatedTo != "" {
		w.str(k.RotatedTo)
	}
	if k.RotatedFrom != "" {
		w.str(k.RotatedFrom)
	}
	if len(k.Metadata) > 0 {
		w.uvarint(uint64(len(k.Metadata)))
		for _, name := range slices.Sorted(maps.Keys(k.Metadata)) {
			w.str(name)
			w.str(k.Metadata[name])
		}
	}
	if k.CreditsRemaining != nil {
		w.varint(*k.CreditsRemaining)
	}
	if k.CreditsEpoch != 0 {
		w.uvarint(k.CreditsEpoch)
	}
	if len(k.CreditsReserved) > 0 {
		w.uvarint(uint64(len(k.CreditsReserved)))
		for _, p := range slices.Sorted(maps.Keys(k.CreditsReserved)) {
			w.str(p)
			w.varint(k.CreditsReserved[p])
		}
	}
	if k.Refill != nil {
		w.str(k.Refill.Interval)
		w.varint(int64(k.Refill.Day))
		w.varint(k.Refill.Amount)
	}
	if k.LastRefillAt != nil {
		w.time(*k.LastRefillAt)
	}
	if k.CreditsOwner != "" {
		w.str(k.CreditsOwner)
	}
	if len(k.AllowedCIDRs) > 0 {
		w.uvarint(uint64(len(k.AllowedCIDRs)))
		for _, c := range k.AllowedCIDRs {
			w.str(c)
		}
	}
	if len(k.Limits) > 0 {
		w.uvarint(uint64(len(k.Limits)))
		for _, name := range slices.Sorted(maps.Keys(k.Limits)) {
			l := k.Limits[name]
			w.str(name)
			w.varint(int64(l.Requests))
			w.varint(int64(l.Window))
			w.varint(int64(l.Burst))
			w.byte(byte(l.Algorithm))
		}
	}
	return w.b
}

// encodeHashRef is the value of the keys bucket for a key whose record is
// stored under h.
func encodeHashRef(h []byte) []byte {
	return hashText.AppendEncode([]byte{keyHashRef}, h)
}

// decodeHashRef reads a value of the keys bucket written by
// encodeHashRef; ok is false for any other value (a record of schema 1 or
// 2).
func decodeHashRef(v []byte) (h apikey.Hash, ok bool, err error) {
	if len(v) == 0 || v[0] != keyHashRef {
		return h, false, nil
	}
	if n, err := hashText.Decode(h[:], v[1:]); err != nil || n != len(h) || hashText.EncodedLen(n) != len(v)-1 {
		return h, true, fmt.Errorf("%w: bad hash reference", errKeyRecord)
	}
	return h, true, nil
}

// isHashedRecord reports a value of the hash index that is the key's
// record (schema 3) rather than its id (schemas 1 and 2). An id of 16
// bytes may start with any byte; no record is that short.
func isHashedRecord(v []byte) bool { return len(v) > uuidLen && v[0] == keyRecordV2 }

// decodeKeyRecord reads a key record in any form into k. Each form takes
// what it leaves out from its key in its bucket: one of schema 1 or 2 its
// id, one of schema 3 (key_hashes) its hash, which k then shares. Nothing
// in the error quotes the record: it holds the key's hash.
func decodeKeyRecord(id string, hash, raw []byte, k *storedKey) error {
	*k = storedKey{}
	if len(raw) == 0 {
		return fmt.Errorf("key %s: %w: empty", id, errKeyRecord)
	}
	switch raw[0] {
	case keyRecordV2:
		r := recordReader{b: string(raw[1:]), src: raw[1:]}
		r.key(k, true)
		if r.err == nil && len(r.b) != 0 {
			r.fail("trailing bytes")
		}
		if r.err == nil && len(hash) != len(apikey.Hash{}) {
			r.fail("not under a hash")
		}
		if r.err != nil {
			*k = storedKey{}
			return fmt.Errorf("key %s: %w: %s", id, errKeyRecord, r.err)
		}
		k.Hash = hash
		return nil
	case '{':
		if err := json.Unmarshal(raw, k); err != nil {
			*k = storedKey{}
			// json's syntax errors quote no input, only offsets; its type
			// errors name fields.
			return fmt.Errorf("key %s: %w: %w", id, errKeyRecord, err)
		}
		return nil
	case keyRecordV1:
		r := recordReader{b: string(raw[1:]), src: raw[1:]}
		r.key(k, false)
		if r.err == nil && len(r.b) != 0 {
			r.fail("trailing bytes")
		}
		if r.err != nil {
			*k = storedKey{}
			return fmt.Errorf("key %s: %w: %s", id, errKeyRecord, r.err)
		}
		k.ID = id
		return nil
	}
	return fmt.Errorf("key %s: %w: unknown format 0x%02x (written by a newer build?)", id, errKeyRecord, raw[0])
}

type recordWriter struct{ b []byte }

func (w *recordWriter) byte(c byte)      { w.b = append(w.b, c) }
func (w *recordWriter) uvarint(n uint64) { w.b = binary.AppendUvarint(w.b, n) }
func (w *recordWriter) varint(n int64)   { w.b = binary.AppendVarint(w.b, n) }
func (w *recordWriter) str(s string)     { w.uvarint(uint64(len(s))); w.b = append(w.b, s...) }

// ident writes an id: a canonical UUID, as the store makes every id, in
// its 16 bytes rather than its 36 characters.
func (w *recordWriter) ident(id string) {
	switch u, err := uuid.Parse(id); {
	case id == "":
		w.byte(0)
	case err == nil && len(id) == 36 && u.String() == id:
		w.byte(1)
		w.b = append(w.b, u[:]...)
	default:
		w.byte(2)
		w.str(id)
	}
}
func (w *recordWriter) time(t time.Time) { w.varint(t.Unix()); w.uvarint(uint64(t.Nanosecond())) }
func (w *recordWriter) enum(vals []string, s string) {
	for i, v := range vals[1:] {
		if s == v {
			w.byte(byte(i + 1))
			return
		}
	}
	w.byte(0)
	w.str(s)
}

// recordReader reads what recordWriter writes. It reads a string, the
// record converted once, so that every string field is a slice of it
// rather than an allocation of its own (the Check path decodes a record
// on each cache miss). The first failure sticks; later reads return zero
// values, and the caller checks err once.
type recordReader struct {
	b   string
	src []byte // what b was made of: b is always its tail
	err error
}

func (r *recordReader) fail(why string) {
	if r.err == nil {
		r.err = errors.New(why)
	}
	r.b = ""
}

func (r *recordReader) byte() byte {
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// uvarint is binary.Uvarint over a string.
func (r *recordReader) uvarint() uint64 {
	var x uint64
	var s uint
	for i := 0; i < len(r.b) && i < binary.MaxVarintLen64; i++ {
		c := r.b[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				break // overflows 64 bits
			}
			r.b = r.b[i+1:]
			return x | uint64(c)<<s
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	r.fail("bad varint")
	return 0
}

func (r *recordReader) varint() int64 {
	ux := r.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

// count reads a number of entries that each take at least one byte, so a
// damaged count cannot make the reader allocate more than the record.
func (r *recordReader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail("count beyond the record")
		return 0
	}
	return int(n)
}

func (r *recordReader) str() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail("truncated")
		return ""
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

// countIf is count for a field that is there, 0 for one that is not.
func (r *recordReader) countIf(there bool) int {
	if !there {
		return 0
	}
	return r.count()
}

// flag reads a presence byte.
func (r *recordReader) flag() bool {
	switch r.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail("bad presence byte")
	return false
}

func (r *recordReader) enum(vals []string) string {
	i := r.byte()
	switch {
	case i == 0:
		return r.str()
	case int(i) < len(vals):
		return vals[i]
	}
	r.fail("bad enum")
	return ""
}

// maxUnixSeconds bounds the times a record holds to what JSON could hold
// (years 0 to 9999), so that a damaged one cannot overflow time.Unix.
const (
	minUnixSeconds = -62167219200 // 0000-01-01
	maxUnixSeconds = 253402300799 // 9999-12-31T23:59:59
)

// recordTimesInRange refuses a record with a time the decoder would
// refuse, as schema 1's JSON refused to encode one: such a record must
// not be written, where it would make its key unreadable.
func recordTimesInRange(k *storedKey) error {
	for _, t := range []*time.Time{&k.CreatedAt, k.ExpiresAt, k.LastUsedAt, k.RevokedAt, k.LastRefillAt} {
		if t != nil && (t.Unix() < minUnixSeconds || t.Unix() > maxUnixSeconds) {
			return errors.New("a time outside the years 0 to 9999")
		}
	}
	return nil
}

func (r *recordReader) time() time.Time {
	sec, ns := r.varint(), r.uvarint()
	if sec < minUnixSeconds || sec > maxUnixSeconds || ns >= 1e9 {
		r.fail("time out of range")
		return time.Time{}
	}
	return time.Unix(sec, int64(ns)).UTC()
}

func (r *recordReader) optTime() *time.Time {
	if !r.flag() {
		return nil
	}
	t := r.time()
	return &t
}

// idents reads the ids written by ident into dst, the UUIDs among them
// formatted into one string: a Check's cache miss decodes a record, and
// each id of its own would be an allocation.
func (r *recordReader) idents(dst ...*string) {
	var (
		uuids [3][]byte
		n     int
	)
	for i, d := range dst {
		switch r.byte() {
		case 0:
			*d = ""
		case 1:
			if len(r.b) < uuidLen || i >= len(uuids) {
				r.fail("truncated")
				return
			}
			uuids[i] = r.src[len(r.src)-len(r.b):][:uuidLen]
			r.b = r.b[uuidLen:]
			n++
		case 2:
			if *d = r.str(); *d == "" && r.err == nil {
				r.fail("empty text id")
			}
		default:
			r.fail("bad id")
		}
	}
	if n == 0 || r.err != nil {
		return
	}
	var sb strings.Builder
	sb.Grow(36 * n)
	var text [36]byte
	for _, u := range uuids[:min(len(dst), len(uuids))] {
		if u != nil {
			formatUUID(&text, u)
			sb.Write(text[:])
		}
	}
	all := sb.String()
	for i, u := range uuids[:min(len(dst), len(uuids))] {
		if u != nil {
			*dst[i], all = all[:36], all[36:]
		}
	}
}

// formatUUID writes u as uuid.UUID.String does, without allocating.
func formatUUID(dst *[36]byte, u []byte) {
	hex.Encode(dst[0:8], u[0:4])
	dst[8] = '-'
	hex.Encode(dst[9:13], u[4:6])
	dst[13] = '-'
	hex.Encode(dst[14:18], u[6:8])
	dst[18] = '-'
	hex.Encode(dst[19:23], u[8:10])
	dst[23] = '-'
	hex.Encode(dst[24:], u[10:])
}

// key reads the fields of a record of format 0x02 (v2) or 0x01.
func (r *recordReader) key(k *storedKey, v2 bool) {
	if v2 {
		r.idents(&k.ID, &k.TenantID, &k.OrgID)
	}
	k.Name = r.str()
	k.DisplayPrefix = r.str()
	if !v2 {
		k.TenantID = r.str()
		k.OrgID = r.str()
	}
	k.UserID = r.str()
	k.Environment = r.enum(envEnum)
	if v2 {
		k.Tier = r.enum(tierEnum)
	} else {
		k.Tier = r.str()
	}
	if n := r.uvarint(); n > 0 {
		n--
		if n > uint64(len(r.b)) {
			r.fail("count beyond the record")
			return
		}
		k.Scopes = make([]string, n)
		for i := range k.Scopes {
			k.Scopes[i] = r.str()
		}
	}
	k.Status = authz.Status(r.enum(statusEnum))
	k.Slot = r.str()
	switch flags := r.byte(); flags {
	case 0, 1:
		k.Imported = flags == 1
	default:
		r.fail("unknown flags")
	}
	k.CreatedAt = r.time()
	// Format 0x02 says which of the fields that follow it holds; 0x01
	// holds each, empty or not, with presence bytes for the optional.
	mask := uint64(1<<optionalFields - 1)
	if v2 {
		if mask = r.uvarint(); mask >= 1<<optionalFields {
			r.fail("unknown fields")
		}
	}
	has := func(i int) bool { return mask&(1<<i) != 0 }
	optTime := func(i int) *time.Time {
		switch {
		case !v2:
			return r.optTime()
		case !has(i):
			return nil
		}
		t := r.time()
		return &t
	}
	str := func(i int) string {
		if !has(i) {
			return ""
		}
		return r.str()
	}
	k.ExpiresAt = optTime(0)
	k.LastUsedAt = optTime(1)
	k.RevokedAt = optTime(2)
	k.RotatedTo = str(3)
	k.RotatedFrom = str(4)
	if n := r.countIf(has(5)); n > 0 {
		k.Metadata = make(map[string]string, n)
		for range n {
			name := r.str()
			k.Metadata[name] = r.str()
		}
	}
	if v2 && has(6) || !v2 && r.flag() {
		n := r.varint()
		k.CreditsRemaining = &n
	}
	if has(7) {
		k.CreditsEpoch = r.uvarint()
	}
	if n := r.countIf(has(8)); n > 0 {
		k.CreditsReserved = make(map[string]int64, n)
		for range n {
			p := r.str()
			k.CreditsReserved[p] = r.varint()
		}
	}
	if v2 && has(9) || !v2 && r.flag() {
		rf := &Refill{Interval: r.str()}
		day := r.varint()
		rf.Amount = r.varint()
		if day < minInt || day > maxInt {
			r.fail("refill day out of range")
		}
		rf.Day = int(day)
		k.Refill = rf
	}
	k.LastRefillAt = optTime(10)
	k.CreditsOwner = str(11)
	if n := r.countIf(has(12)); n > 0 {
		k.AllowedCIDRs = make([]string, n)
		for i := range k.AllowedCIDRs {
			k.AllowedCIDRs[i] = r.str()
		}
	}
	if n := r.countIf(has(13)); n > 0 {
		k.Limits = make(map[string]ratelimit.Limit, n)
		for range n {
			name := r.str()
			req, window, burst := r.varint(), r.varint(), r.varint()
			alg := r.byte()
			if req < minInt || req > maxInt || burst < minInt || burst > maxInt {
				r.fail("limit out of range")
			}
			k.Limits[name] = ratelimit.Limit{Requests: int(req), Window: time.Duration(window), Burst: int(burst), Algorithm: ratelimit.Algorithm(alg)}
		}
	}
	if v2 {
		return
	}
	if h := r.str(); len(h) > 0 {
		b := make([]byte, hashText.DecodedLen(len(h)))
		// h as bytes, from src rather than a copy: it ends where b starts.
		n, err := hashText.Decode(b, r.src[len(r.src)-len(r.b)-len(h):len(r.src)-len(r.b)])
		// Decode skips newlines; a hash is only ever written without.
		if err != nil || hashText.EncodedLen(n) != len(h) {
			r.fail("bad hash")
			return
		}
		k.Hash = b[:n]
	}
}

// The range of int, which a record's int fields must fit on any platform
// this build runs on.
const (
	maxInt = int64(^uint(0) >> 1)
	minInt = -maxInt - 1
)

// The hash index's values name the key: the 16 bytes of its id, a
// canonical UUID as every key id is, instead of its 36 characters of
// text. An id of another form is written as its text behind a 0 byte
// (text never starts with one), and schema 1 wrote every id as its text.
const uuidLen = 16

// encodeIndexID is the hash index value naming key id.
func encodeIndexID(id string) []byte {
	if u, err := uuid.Parse(id); err == nil && len(id) == 36 && u.String() == id {
		return u[:]
	}
	return append([]byte{0}, id...)
}

// decodeIndexID reads a hash index value in any of its forms.
func decodeIndexID(v []byte) (string, error) {
	switch {
	case len(v) == uuidLen:
		return uuid.UUID(v).String(), nil
	case len(v) > 1 && v[0] == 0:
		return string(v[1:]), nil
	case isTextIndexID(v):
		return string(v), nil
	}
	return "", fmt.Errorf("malformed hash index entry (%d bytes)", len(v))
}

// idKey is key id's key in the keys bucket, and the tail of its entries
// in the index buckets: encodeIndexID's form. Stores before schema 3 used
// the id's text, which lookups by id fall back to (getKeyRecord).
func idKey(id string) []byte { return encodeIndexID(id) }

// The index buckets (keys by tenant, by org) hold "<parent><id key>" in
// schema 3, the parent (tenant or org id) as 0x01 and its 16 bytes when it
// is a canonical UUID, as 0x02, its text and a 0 byte otherwise; before,
// "<parent id>/<key id>" as text, which starts with neither.
const (
	parentUUID = 0x01
	parentText = 0x02
)

// parentKey is the prefix of the index entries of parent's keys.
func parentKey(parent string) []byte {
	if u, err := uuid.Parse(parent); err == nil && len(parent) == 36 && u.String() == parent {
		return append([]byte{parentUUID}, u[:]...)
	}
	return append(append([]byte{parentText}, parent...), 0)
}

// indexKey is the index entry of key id under parent.
func indexKey(parent, id string) []byte { return append(parentKey(parent), idKey(id)...) }

// isTextIndexKey reports an index entry of before schema 3.
func isTextIndexKey(k []byte) bool { return len(k) > 0 && k[0] != parentUUID && k[0] != parentText }

// splitTextIndexKey splits an index entry of before schema 3 into its
// parent and key ids.
func splitTextIndexKey(k []byte) (parent, id string, ok bool) {
	i := bytes.LastIndexByte(k, '/')
	if i <= 0 || i == len(k)-1 {
		return "", "", false
	}
	return string(k[:i]), string(k[i+1:]), true
}

// isTextIndexID reports a hash index value in the text form of schema 1.
func isTextIndexID(v []byte) bool {
	return len(v) > 0 && len(v) != uuidLen && v[0] != 0 && !isHashedRecord(v)
}
