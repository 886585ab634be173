// Package secret holds a credential other than an API key, such as the
// admin token, so that it is not printed by accident: printed with any fmt
// verb, encoded as text or JSON, or logged with log/slog, a Value shows
// "[redacted]". Reveal returns the credential where it must be used.
//
// API keys have their own type, apikey.Secret, in the leaf package the
// decision core imports; it shows a key's display prefix, which tells keys
// apart, while a Value shows nothing of what it holds.
package secret

import (
	"fmt"
	"log/slog"
	"unsafe"
)

// Value is a credential that prints and encodes as "[redacted]" (the zero
// Value as ""). Like apikey.Secret it holds its bytes by pointer and
// length, so that a struct holding a Value in an unexported field, which
// fmt prints by reflection without calling Format, shows an address.
type Value struct {
	p *byte
	n int
}

const redacted = "[redacted]"

// New holds s as a Value. It does not copy s.
func New(s string) Value { return Value{p: unsafe.StringData(s), n: len(s)} }

// Reveal returns the credential. Use it where the credential is sent or
// compared, never where it is printed.
func (v Value) Reveal() string { return unsafe.String(v.p, v.n) }

// IsZero reports whether v is empty.
func (v Value) IsZero() bool { return v.n == 0 }

// String returns "[redacted]", or "" for an empty Value.
func (v Value) String() string {
	if v.n == 0 {
		return ""
	}
	return redacted
}

// GoString is what %#v prints: secret.Value("[redacted]").
func (v Value) GoString() string { return fmt.Sprintf("secret.Value(%q)", v.String()) }

// Format prints String for every verb (quoted for %q) and GoString for
// %#v, so that no verb reaches the credential.
func (v Value) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		fmt.Fprint(f, v.GoString())
	case verb == 'q':
		fmt.Fprintf(f, fmt.FormatString(f, 'q'), v.String())
	default:
		fmt.Fprintf(f, fmt.FormatString(f, 's'), v.String())
	}
}

// MarshalText returns String, so encoding/json and log/slog's handlers
// write a Value redacted.
func (v Value) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// LogValue logs String.
func (v Value) LogValue() slog.Value { return slog.StringValue(v.String()) }
