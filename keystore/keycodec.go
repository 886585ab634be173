package keystore

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
)

// The key record (bucket keys, one per key) in a compact binary form:
// schema 2 writes it, a third of the JSON of schema 1. Readers accept
// both: a JSON record starts with '{', which no binary format byte is, so
// a store in the middle of its upgrade, or one an older replica still
// writes to, reads correctly record by record.
//
// Layout after the format byte, in this order (uvarint: unsigned varint;
// varint: zigzag; str: uvarint length then bytes; time: varint unix
// seconds then uvarint nanoseconds, read back in UTC; opt: presence byte
// 0/1 then the value):
//
//	str name, str display prefix, str tenant, str org, str user
//	enum environment, str tier, scopes (uvarint count+1, 0: null; strs)
//	enum status, str slot, byte flags (1: imported)
//	time created, opt time expires, opt time last used, opt time revoked
//	str rotated to, str rotated from, metadata (uvarint count; str, str)
//	opt varint credits remaining, uvarint credits epoch
//	reserved (uvarint count; str, varint), opt refill (str interval,
//	varint day, varint amount), opt time last refill
//	str credits owner, allowed cidrs (uvarint count; strs)
//	limits (uvarint count; str name, varint requests, varint window ns,
//	varint burst, byte algorithm)
//	str hash (base64 without padding, 43 bytes for a SHA-256)
//
// The hash is text, as in the JSON of schema 1, and not its 32 raw
// bytes: a shared backend's values are read with its own tools
// (etcdctl) and may land in its logs, where no raw digest of a key is
// to be found (etcdstore's TestEtcdHoldsNoRawKey).
// The id is not in the record: it is the record's key in the bucket, and
// the decoder is given it. Maps are written in key order, so a record
// encodes to the same bytes every time.
const keyRecordV1 = 0x01

// hashText is the hash's encoding in the record.
var hashText = base64.RawStdEncoding.Strict()

// enums are the usual values of the environment and status fields, one
// byte each; any other value is written as 0 and the string.
var (
	envEnum    = []string{"", "live", "test"}
	statusEnum = []string{"", string(authz.StatusActive), string(authz.StatusInactive), string(authz.StatusRevoked)}
)

// errKeyRecord is the cause of every decode failure: a damaged record is
// refused (the key then fails closed), never read as a default.
var errKeyRecord = errors.New("malformed key record")

// encodeKeyRecord writes k in the binary form. It appends to dst.
func encodeKeyRecord(dst []byte, k *storedKey) []byte {
	w := recordWriter{b: dst}
	w.byte(keyRecordV1)
	w.str(k.Name)
	w.str(k.DisplayPrefix)
	w.str(k.TenantID)
	w.str(k.OrgID)
	w.str(k.UserID)
	w.enum(envEnum, k.Environment)
	w.str(k.Tier)
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
	w.optTime(k.ExpiresAt)
	w.optTime(k.LastUsedAt)
	w.optTime(k.RevokedAt)
	w.str(k.RotatedTo)
	w.str(k.RotatedFrom)
	w.uvarint(uint64(len(k.Metadata)))
	for _, name := range slices.Sorted(maps.Keys(k.Metadata)) {
		w.str(name)
		w.str(k.Metadata[name])
	}
	if k.CreditsRemaining == nil {
		w.byte(0)
	} else {
		w.byte(1)
		w.varint(*k.CreditsRemaining)
	}
	w.uvarint(k.CreditsEpoch)
	w.uvarint(uint64(len(k.CreditsReserved)))
	for _, p := range slices.Sorted(maps.Keys(k.CreditsReserved)) {
		w.str(p)
		w.varint(k.CreditsReserved[p])
	}
	if k.Refill == nil {
		w.byte(0)
	} else {
		w.byte(1)
		w.str(k.Refill.Interval)
		w.varint(int64(k.Refill.Day))
		w.varint(k.Refill.Amount)
	}
	w.optTime(k.LastRefillAt)
	w.str(k.CreditsOwner)
	w.uvarint(uint64(len(k.AllowedCIDRs)))
	for _, c := range k.AllowedCIDRs {
		w.str(c)
	}
	w.uvarint(uint64(len(k.Limits)))
	for _, name := range slices.Sorted(maps.Keys(k.Limits)) {
		l := k.Limits[name]
		w.str(name)
		w.varint(int64(l.Requests))
		w.varint(int64(l.Window))
		w.varint(int64(l.Burst))
		w.byte(byte(l.Algorithm))
	}
	w.uvarint(uint64(hashText.EncodedLen(len(k.Hash))))
	w.b = hashText.AppendEncode(w.b, k.Hash)
	return w.b
}

// decodeKeyRecord reads a key record in either form into k; id is its key
// in the bucket (a binary record does not repeat it). Nothing in the error
// quotes the record: it holds the key's hash.
func decodeKeyRecord(id string, raw []byte, k *storedKey) error {
	*k = storedKey{}
	if len(raw) == 0 {
		return fmt.Errorf("key %s: %w: empty", id, errKeyRecord)
	}
	switch raw[0] {
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
		r.key(k)
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

func (w *recordWriter) optTime(t *time.Time) {
	if t == nil {
		w.byte(0)
		return
	}
	w.byte(1)
	w.time(*t)
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

func (r *recordReader) key(k *storedKey) {
	k.Name = r.str()
	k.DisplayPrefix = r.str()
	k.TenantID = r.str()
	k.OrgID = r.str()
	k.UserID = r.str()
	k.Environment = r.enum(envEnum)
	k.Tier = r.str()
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
	k.ExpiresAt = r.optTime()
	k.LastUsedAt = r.optTime()
	k.RevokedAt = r.optTime()
	k.RotatedTo = r.str()
	k.RotatedFrom = r.str()
	if n := r.count(); n > 0 {
		k.Metadata = make(map[string]string, n)
		for range n {
			name := r.str()
			k.Metadata[name] = r.str()
		}
	}
	if r.flag() {
		n := r.varint()
		k.CreditsRemaining = &n
	}
	k.CreditsEpoch = r.uvarint()
	if n := r.count(); n > 0 {
		k.CreditsReserved = make(map[string]int64, n)
		for range n {
			p := r.str()
			k.CreditsReserved[p] = r.varint()
		}
	}
	if r.flag() {
		rf := &Refill{Interval: r.str()}
		day := r.varint()
		rf.Amount = r.varint()
		if day < minInt || day > maxInt {
			r.fail("refill day out of range")
		}
		rf.Day = int(day)
		k.Refill = rf
	}
	k.LastRefillAt = r.optTime()
	k.CreditsOwner = r.str()
	if n := r.count(); n > 0 {
		k.AllowedCIDRs = make([]string, n)
		for i := range k.AllowedCIDRs {
			k.AllowedCIDRs[i] = r.str()
		}
	}
	if n := r.count(); n > 0 {
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

// isTextIndexID reports a hash index value in the text form of schema 1.
func isTextIndexID(v []byte) bool { return len(v) > 0 && len(v) != uuidLen && v[0] != 0 }
