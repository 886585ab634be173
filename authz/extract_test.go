package authz

import (
	"strings"
	"testing"

	"github.com/keygate/keygate/keystore/apikey"
)

// FuzzExtract: no header value panics the extractor, and a key it returns
// is exactly one source's value, trimmed, plausible, and never two keys.
func FuzzExtract(f *testing.F) {
	for _, seed := range [][3]string{
		{"Bearer ak_live_x", "", ""},
		{"", "ak_live_a,ak_live_b", ""},
		{"Basic abc", "k", ""},
		{"bearer\tabc", "", "def"},
		{"Bearerabc", "", ""},
		{"Bearer " + strings.Repeat("a", 300), "", ""},
		{"", " \t", "\x00"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, auth, apiKey, apiToken string) {
		h := map[string]string{}
		if auth != "" {
			h["authorization"] = auth
		}
		if apiKey != "" {
			h["x-api-key"] = apiKey
		}
		if apiToken != "" {
			h["x-api-token"] = apiToken
		}
		ex := extract(DefaultSources, h)
		raw := ex.raw.Reveal()
		switch ex.reason {
		case ReasonMissingKey, ReasonInvalidKey:
			if raw != "" {
				t.Fatalf("%s with a key %q", ex.reason, raw)
			}
		case ReasonOK:
			if !apikey.Plausible(raw) || raw == "" {
				t.Fatalf("implausible key %q accepted", raw)
			}
			src := h[DefaultSources[ex.source]]
			if !strings.Contains(src, raw) {
				t.Fatalf("key %q is not from source %s=%q", raw, DefaultSources[ex.source], src)
			}
		default:
			t.Fatalf("unexpected reason %s", ex.reason)
		}
	})
}
