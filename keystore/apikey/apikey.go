// Package apikey owns the text form of a Keygate API key: its layout
// (<prefix>_<env>_<body>), generation from crypto/rand, the checksum that lets
// a mistyped or random string be rejected without a store lookup, the SHA-256
// hash kept at rest and the display prefix shown to operators.
//
// It is a leaf package with no dependencies beyond the standard library so
// that both the decision core and the store can use it, and so that its
// parser can be fuzzed in isolation.
//
// Layout: the body is 32 base62 characters, 26 random (about 154 bits) and a
// 6-character checksum: CRC-32 (IEEE) of everything before the checksum,
// written in base62. The checksum covers the prefix and the environment, so a
// live key edited into a test key is rejected as malformed.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unsafe"
)

// Environments a key can belong to.
const (
	EnvLive = "live"
	EnvTest = "test"
)

const (
	// DefaultPrefix is the product prefix of keys when none is configured.
	DefaultPrefix = "ak"
	// BodyLen is the number of base62 characters after "<prefix>_<env>_".
	BodyLen = 32
	// ChecksumLen is the number of trailing body characters that hold the checksum.
	ChecksumLen = 6
	// DisplayLen is how many leading characters of a key are kept for display.
	DisplayLen = 12
	// MaxPrefixLen bounds a configured prefix.
	MaxPrefixLen = 16

	randomLen = BodyLen - ChecksumLen
	alphabet  = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// Errors returned by Parse and NewFormat. Callers branch on ErrMalformed to
// answer "Invalid API key"; the wrapped detail is for logs, never for clients.
var (
	ErrMalformed     = errors.New("malformed api key")
	ErrBadChecksum   = fmt.Errorf("%w: checksum mismatch", ErrMalformed)
	ErrInvalidPrefix = errors.New("invalid key prefix")
	ErrInvalidEnv    = errors.New("invalid key environment")

	// Parse returns these preallocated errors so that rejecting garbage
	// allocates nothing.
	errLength  = fmt.Errorf("%w: wrong length", ErrMalformed)
	errPrefix  = fmt.Errorf("%w: wrong prefix", ErrMalformed)
	errEnv     = fmt.Errorf("%w: unknown environment", ErrMalformed)
	errCharset = fmt.Errorf("%w: character outside base62", ErrMalformed)
)

// Hash is the SHA-256 of a raw key: the only form of a key kept at rest and
// the identity used for every lookup.
type Hash [sha256.Size]byte

// HashOf returns the SHA-256 of a raw key.
func HashOf(raw string) Hash {
	return sha256.Sum256(bytesOf(raw))
}

// bytesOf views s as bytes without copying. Every caller only reads, so the
// string's immutability holds; it keeps hashing and checksums off the heap on
// the Check path.
func bytesOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// String hides the hash: hashes of keys are not written to logs either.
func (Hash) String() string { return "apikey.Hash(redacted)" }

// GoString hides the hash from %#v as well.
func (h Hash) GoString() string { return h.String() }

// Format describes the keys one deployment issues and accepts.
type Format struct {
	prefix string
}

// NewFormat returns the key format for a product prefix such as "ak". A prefix
// is 1 to 16 characters of [a-z0-9], starting with a letter; it cannot contain
// '_' because '_' separates the parts of a key.
func NewFormat(prefix string) (Format, error) {
	if prefix == "" || len(prefix) > MaxPrefixLen {
		return Format{}, fmt.Errorf("%w %q: want 1 to %d characters", ErrInvalidPrefix, prefix, MaxPrefixLen)
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		ok := c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9'
		if !ok {
			return Format{}, fmt.Errorf("%w %q: want [a-z][a-z0-9]*", ErrInvalidPrefix, prefix)
		}
	}
	return Format{prefix: prefix}, nil
}

// MustFormat is NewFormat for constant prefixes known to be valid; it panics
// on a bad one, so it is only for program constants, never for input.
func MustFormat(prefix string) Format {
	f, err := NewFormat(prefix)
	if err != nil {
		panic(err)
	}
	return f
}

// Prefix returns the product prefix, e.g. "ak".
func (f Format) Prefix() string { return f.prefix }

// ValidEnv reports whether env names a key environment.
func ValidEnv(env string) bool { return env == EnvLive || env == EnvTest }

// Generate returns a new random key for env, read from crypto/rand.
func (f Format) Generate(env string) (string, error) {
	return f.generate(env, rand.Reader)
}

func (f Format) generate(env string, r io.Reader) (string, error) {
	if !ValidEnv(env) {
		return "", fmt.Errorf("%w %q: want %q or %q", ErrInvalidEnv, env, EnvLive, EnvTest)
	}
	if f.prefix == "" {
		return "", fmt.Errorf("%w: zero Format", ErrInvalidPrefix)
	}
	head := len(f.prefix) + 1 + len(env) + 1
	b := make([]byte, head+BodyLen)
	copy(b, f.prefix)
	b[len(f.prefix)] = '_'
	copy(b[len(f.prefix)+1:], env)
	b[head-1] = '_'
	if err := randomBase62(b[head:head+randomLen], r); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	putChecksum(b[head+randomLen:], crc32.ChecksumIEEE(b[:head+randomLen]))
	return string(b), nil
}

// randomBase62 fills dst with uniformly distributed base62 characters. Bytes
// at or above 248 (= 4*62) are discarded so that no character is more likely
// than another.
func randomBase62(dst []byte, r io.Reader) error {
	var buf [64]byte
	n := 0
	for n < len(dst) {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return err
		}
		for _, c := range buf {
			if c >= 248 {
				continue
			}
			dst[n] = alphabet[c%62]
			n++
			if n == len(dst) {
				break
			}
		}
	}
	return nil
}

func putChecksum(dst []byte, sum uint32) {
	v := uint64(sum)
	for i := ChecksumLen - 1; i >= 0; i-- {
		dst[i] = alphabet[v%62]
		v /= 62
	}
}

// Parsed is what Parse learns from a well-formed key.
type Parsed struct {
	Env string // EnvLive or EnvTest
}

// Parse checks that raw is a key of this format: prefix, environment, 32
// base62 characters and a matching checksum. It never looks anything up and
// does not allocate, so garbage costs no more than a valid key.
func (f Format) Parse(raw string) (Parsed, error) {
	// Shortest and longest: "<prefix>_live_<body>", both envs are 4 bytes.
	want := len(f.prefix) + 1 + 4 + 1 + BodyLen
	if f.prefix == "" || len(raw) != want {
		return Parsed{}, errLength
	}
	if raw[:len(f.prefix)] != f.prefix || raw[len(f.prefix)] != '_' {
		return Parsed{}, errPrefix
	}
	rest := raw[len(f.prefix)+1:]
	var env string
	switch rest[:5] {
	case "live_":
		env = EnvLive
	case "test_":
		env = EnvTest
	default:
		return Parsed{}, errEnv
	}
	body := rest[5:]
	for i := 0; i < len(body); i++ {
		if !isBase62(body[i]) {
			return Parsed{}, errCharset
		}
	}
	var sum [ChecksumLen]byte
	putChecksum(sum[:], crc32.ChecksumIEEE(bytesOf(raw[:len(raw)-ChecksumLen])))
	if string(sum[:]) != raw[len(raw)-ChecksumLen:] {
		return Parsed{}, ErrBadChecksum
	}
	return Parsed{Env: env}, nil
}

func isBase62(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// DisplayPrefix returns the first characters of a raw key (e.g.
// "ak_live_AB7K"), safe to show in lists so an operator can tell keys apart.
// Shorter (imported) keys give at most 30% of themselves, the share a
// Keygate key shows, so a short foreign key does not have most of its
// secret printed in every listing.
func DisplayPrefix(raw string) string {
	return raw[:min(DisplayLen, len(raw)*3/10)]
}

// MaxLen bounds a presented or imported key; longer values are refused
// before any hashing or lookup.
const MaxLen = 256

// Plausible reports whether raw could be a key of any format, imported
// ones included: at most MaxLen bytes of visible ASCII without ',' (a comma
// is what joins a repeated header; spaces, control characters and
// look-alike Unicode are never part of a key). The decision core refuses
// anything else unread, and an import refuses to store what could never be
// presented.
func Plausible(raw string) bool {
	if len(raw) > MaxLen {
		return false
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c >= 0x7f || c == ',' {
			return false
		}
	}
	return true
}
