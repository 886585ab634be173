package apikey

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
	"strconv"
	"unsafe"
)

// Secret is a raw key held so that it is not printed by accident. Printed
// with any fmt verb (%v, %+v, %#v, %s, %q, %x, %d...), written by
// encoding/json or encoding.TextMarshaler, or logged with log/slog, it
// shows only its display prefix: "ak_live_AB7K…[redacted]". Reveal returns
// the key itself, for the few places that need it: hashing, and the one
// answer that hands a new key to its holder.
//
// A Secret holds the key's bytes by pointer and length rather than as a
// string field. fmt prints the unexported fields of a struct by reflection,
// without calling their Format or String methods, so a string field would
// show the key wherever a struct holding a Secret in an unexported field
// is printed with %v; a pointer shows as an address. Making or copying a
// Secret allocates nothing.
//
// A Secret decodes from text (UnmarshalText, so a JSON string), which is
// how a key reaches the store in an import request; it never encodes to
// its raw form. The zero Secret is empty. Compare Secrets with Equal: ==
// compares where the bytes are, not what they say.
type Secret struct {
	p *byte
	n int
}

// redacted replaces what a Secret hides when it is printed.
const redacted = "[redacted]"

// NewSecret holds raw as a Secret. It does not copy raw.
func NewSecret(raw string) Secret {
	return Secret{p: unsafe.StringData(raw), n: len(raw)}
}

// Reveal returns the raw key. Each call is a place where a key leaves its
// wrapper: hash it, or hand it to its holder, and do not log it.
func (s Secret) Reveal() string { return unsafe.String(s.p, s.n) }

// IsZero reports whether s is empty.
func (s Secret) IsZero() bool { return s.n == 0 }

// Hash returns the SHA-256 of the raw key, as HashOf does.
func (s Secret) Hash() Hash { return HashOf(s.Reveal()) }

// Equal reports whether s and t hold the same key, in time that depends on
// their lengths only.
func (s Secret) Equal(t Secret) bool {
	return subtle.ConstantTimeCompare(bytesOf(s.Reveal()), bytesOf(t.Reveal())) == 1
}

// String returns the display prefix followed by "…[redacted]" (only
// "[redacted]" for a key too short to show any of), or "" for the zero
// Secret.
func (s Secret) String() string {
	if s.n == 0 {
		return ""
	}
	if p := DisplayPrefix(s.Reveal()); p != "" {
		return p + "…" + redacted
	}
	return redacted
}

// GoString is what %#v prints: apikey.Secret("ak_live_AB7K…[redacted]").
func (s Secret) GoString() string {
	return "apikey.Secret(" + strconv.Quote(s.String()) + ")"
}

// Format prints String for every verb (quoted for %q, with the width and
// flags given), and GoString for %#v, so that no verb reaches the key: a
// Secret with only a String method would print its fields with %d.
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		fmt.Fprint(f, s.GoString())
	case verb == 'q':
		fmt.Fprintf(f, fmt.FormatString(f, 'q'), s.String())
	default:
		fmt.Fprintf(f, fmt.FormatString(f, 's'), s.String())
	}
}

// MarshalText returns String: encoding/json and log/slog's handlers write a
// Secret redacted.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText holds a copy of text.
func (s *Secret) UnmarshalText(text []byte) error {
	*s = NewSecret(string(text))
	return nil
}

// LogValue logs String.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }
