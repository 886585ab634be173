package authz

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Signing configures the signed-identity header: proof for a backend that
// the identity headers it got were set by Keygate, even if the mesh is
// bypassed and a client reaches the backend directly.
//
// The header value is "t=<unix seconds>,v1=<hex HMAC-SHA256>", where the
// HMAC (keyed with Secret) is over
//
//	<t>\n<tenant>\n<org>\n<user>\n<key id>\n<key name>\n<environment>\n<tier>\n<scopes>
//
// with each identity value as set upstream (empty when not set). A backend
// recomputes it from the headers it received, compares in constant time and
// refuses a t older than its tolerance (e.g. 5 minutes).
type Signing struct {
	// Secret is the HMAC key; at least 32 bytes. Empty: no signing.
	Secret []byte
	// Header carries the signature. Empty: x-keygate-signature.
	Header string
}

// DefaultSignatureHeader is the header name when Signing.Header is empty.
const DefaultSignatureHeader = "x-keygate-signature"

type signer struct {
	header string
	pool   sync.Pool // of hash.Hash, keyed with the secret
}

// newSigner returns the signer of settings validate accepted; nil without a
// secret.
func newSigner(s Signing) *signer {
	if len(s.Secret) == 0 {
		return nil
	}
	secret := append([]byte(nil), s.Secret...)
	sg := &signer{header: s.header()}
	sg.pool.New = func() any { return hmac.New(sha256.New, secret) }
	return sg
}

func (s *signer) sign(values [numIdentity]string, now time.Time) Header {
	t := strconv.FormatInt(now.Unix(), 10)
	return Header{Name: s.header, Value: "t=" + t + ",v1=" + s.mac(t, values)}
}

func (s *signer) mac(t string, values [numIdentity]string) string {
	h := s.pool.Get().(hash.Hash)
	defer s.pool.Put(h)
	h.Reset()
	return signed(h, t, values)
}

// signed is the signature of t and values with h (an HMAC-SHA256 keyed
// with the secret): the one definition of the signed string, for signing
// and for VerifySignature alike.
func signed(h hash.Hash, t string, values [numIdentity]string) string {
	h.Write([]byte(t))
	for _, v := range values {
		h.Write([]byte{'\n'})
		h.Write([]byte(v))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// VerifySignature checks a signature header value against the identity
// values a backend received, in the order of the signed string, with a
// tolerance for the timestamp. It is the reference for backends written in
// Go, and what the tests verify against.
func VerifySignature(secret []byte, value string, values [numIdentity]string, now time.Time, tolerance time.Duration) bool {
	tpart, vpart, ok := strings.Cut(value, ",")
	t, okT := strings.CutPrefix(tpart, "t=")
	mac, okV := strings.CutPrefix(vpart, "v1=")
	if !ok || !okT || !okV {
		return false
	}
	ts, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return false
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return false
	}
	want := signed(hmac.New(sha256.New, secret), t, values)
	return hmac.Equal([]byte(want), []byte(mac))
}
