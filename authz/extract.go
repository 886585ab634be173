package authz

import (
	"fmt"
	"strings"

	"github.com/keygate/keygate/keystore/apikey"
)

// SourceAuthorization names the `Authorization: Bearer <key>` source in
// Config.Sources; every other entry is a header that carries the bare key.
const SourceAuthorization = "authorization"

// DefaultSources are the credential sources in the order DESIGN.md gives.
var DefaultSources = []string{SourceAuthorization, "x-api-key", "x-api-token"}

// extraction is the outcome of looking for a key in a request.
type extraction struct {
	raw    apikey.Secret
	source int    // index into the engine's sources; valid when reason is ReasonOK
	reason Reason // ReasonOK, ReasonMissingKey or ReasonInvalidKey
	// present has bit i set when the request carries sources[i] at all
	// (Authorization only with the Bearer scheme), empty or not: each is
	// stripped from an allowed request, a key read from it or not.
	present uint64
}

// extract finds the key among the configured sources. Exactly one source may
// carry a key: a request with two (even the same key twice) is ambiguous and
// rejected, since a proxy and a backend could read different ones. An
// Authorization header with another scheme (Basic, Digest) is not a key
// source and is left alone for the backend. Header values that Envoy joined
// with "," are two values and rejected.
func extract(sources []string, headers map[string]string) extraction {
	found := extraction{reason: ReasonMissingKey}
	ambiguous := false
	for i, name := range sources {
		v, ok := headers[name]
		if !ok {
			continue
		}
		if name == SourceAuthorization {
			var bearer bool
			if v, bearer = bearerToken(v); !bearer {
				continue
			}
		} else {
			v = trimOWS(v)
		}
		found.present |= 1 << i
		if v == "" {
			continue
		}
		if found.reason != ReasonMissingKey {
			ambiguous = true
			continue
		}
		found.raw, found.source, found.reason = apikey.NewSecret(v), i, ReasonOK
	}
	if ambiguous || found.reason == ReasonOK && !apikey.Plausible(found.raw.Reveal()) {
		return extraction{reason: ReasonInvalidKey, present: found.present}
	}
	return found
}

// bearerToken returns the credentials of an Authorization header whose
// scheme is Bearer (case-insensitive, RFC 9110 §11.1).
func bearerToken(v string) (string, bool) {
	v = trimOWS(v)
	const scheme = "bearer"
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	rest := v[len(scheme):]
	if rest == "" {
		return "", true
	}
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false // e.g. "Bearerfoo": another scheme
	}
	return trimOWS(rest), true
}

func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}

// maxSources bounds the credential sources (a bit each in a mask, and a
// precomputed removal list per source).
const maxSources = 16

// MaxKeyLen bounds a presented key; longer values are rejected before any
// hashing or lookup.
const MaxKeyLen = apikey.MaxLen

// validateSources checks a configured source list.
func validateSources(sources []string) error {
	if len(sources) == 0 {
		return fmt.Errorf("no credential sources configured")
	}
	if len(sources) > maxSources {
		return fmt.Errorf("%d credential sources: at most %d", len(sources), maxSources)
	}
	seen := map[string]bool{}
	for _, s := range sources {
		if s == "" || s != strings.ToLower(s) || strings.ContainsAny(s, " \t:,") {
			return fmt.Errorf("credential source %q: want a lower-case header name", s)
		}
		if seen[s] {
			return fmt.Errorf("credential source %q listed twice", s)
		}
		seen[s] = true
	}
	return nil
}
