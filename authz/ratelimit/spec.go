package ratelimit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Algorithm is how a Limit counts requests.
type Algorithm uint8

const (
	// SlidingWindow, the default, admits at most Requests in any rolling
	// Window: what a customer reading "100 requests/minute" expects.
	SlidingWindow Algorithm = iota
	// TokenBucket admits Requests per Window on average and up to Burst at
	// once: bursts above the average, for operators who want them.
	TokenBucket
)

// Algorithm names, as configs and the admin API spell them.
const (
	NameSlidingWindow = "sliding_window"
	NameTokenBucket   = "token_bucket"
)

func (a Algorithm) String() string {
	switch a {
	case SlidingWindow:
		return NameSlidingWindow
	case TokenBucket:
		return NameTokenBucket
	}
	return "algorithm(" + strconv.Itoa(int(a)) + ")"
}

// ParseAlgorithm reads an algorithm name; empty is SlidingWindow.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch s {
	case "", NameSlidingWindow:
		return SlidingWindow, nil
	case NameTokenBucket:
		return TokenBucket, nil
	}
	return 0, fmt.Errorf("algorithm %q: want %q or %q", s, NameSlidingWindow, NameTokenBucket)
}

// ParseWindow reads a window: a Go duration ("90s", "1m", "24h") or whole
// days ("1d", "30d"), which Go durations cannot spell.
func ParseWindow(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok && d != "" && strings.Trim(d, "0123456789") == "" {
		n, err := strconv.ParseInt(d, 10, 64)
		if err != nil || n > int64(maxDuration/(24*time.Hour)) {
			return 0, fmt.Errorf("window %q: too long", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%w: want a duration such as 1m, 24h or 30d", err)
	}
	return d, nil
}

const maxDuration = time.Duration(1<<63 - 1)

// FormatWindow spells a window the shortest way ParseWindow reads back:
// whole days as "30d", whole hours as "24h", whole minutes as "1m", whole
// seconds as "90s", anything else as a Go duration.
func FormatWindow(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		unit string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d > 0 && d%u.d == 0 {
			return strconv.FormatInt(int64(d/u.d), 10) + u.unit
		}
	}
	return d.String()
}

// limitJSON is a Limit as records and the admin API hold it.
type limitJSON struct {
	Requests  int    `json:"requests"`
	Window    string `json:"window"`
	Algorithm string `json:"algorithm,omitempty"`
	Burst     int    `json:"burst,omitempty"`
}

// MarshalJSON writes {"requests": 100, "window": "1m", "algorithm": ...}.
func (l Limit) MarshalJSON() ([]byte, error) {
	return json.Marshal(limitJSON{Requests: l.Requests, Window: FormatWindow(l.Window), Algorithm: l.Algorithm.String(), Burst: l.Burst})
}

// SpecError is a limit that cannot be read: its message names what was
// wrong in the sender's own terms, quoting at most a short field value, so
// an API can show it to the client that sent it.
type SpecError struct{ msg string }

func (e *SpecError) Error() string { return "limit: " + e.msg }

func specError(format string, args ...any) error {
	return &SpecError{msg: fmt.Sprintf(format, args...)}
}

// UnmarshalJSON reads what MarshalJSON writes, refusing unknown and
// repeated fields. A limit of zero requests (off, as an override) may
// leave the window out. It does not Validate: a record's reader decides
// what to do with a limit that cannot work, and the admin API refuses one
// before it is stored.
func (l *Limit) UnmarshalJSON(b []byte) error {
	if err := uniqueFields(b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var j limitJSON
	if err := dec.Decode(&j); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			return specError("%s: want a %s, not a JSON %s", te.Field, te.Type, te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return specError("unknown field %s", short(strings.TrimPrefix(err.Error(), "json: unknown field ")))
		}
		return specError("want an object such as {\"requests\": 100, \"window\": \"1m\"}")
	}
	alg, err := ParseAlgorithm(j.Algorithm)
	if err != nil {
		return specError("algorithm %q: want %q or %q", short(j.Algorithm), NameSlidingWindow, NameTokenBucket)
	}
	var w time.Duration
	if j.Window != "" || j.Requests != 0 {
		if w, err = ParseWindow(j.Window); err != nil {
			return specError("window %q: want a duration such as 1m, 24h or 30d", short(j.Window))
		}
	}
	*l = Limit{Requests: j.Requests, Window: w, Algorithm: alg, Burst: j.Burst}
	return nil
}

// uniqueFields refuses an object that is not one, or names a field twice
// (encoding/json would let the last win, so a body could mean one thing
// to Keygate and another to whatever read it first).
func uniqueFields(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	t, err := dec.Token()
	if err == nil && t == nil {
		return specError("a limit cannot be null (requests 0 turns one off)")
	}
	if err != nil || t != json.Delim('{') {
		return specError("want an object such as {\"requests\": 100, \"window\": \"1m\"}")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return specError("malformed JSON")
		}
		name, _ := t.(string)
		if seen[name] {
			return specError("field %q twice", short(name))
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return specError("malformed JSON")
		}
	}
	return nil
}

// short bounds what an error quotes back.
func short(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// MaxNamed bounds the limits of one set (a tier's, a key's, a user's), so
// that a request's charges stay few and its headers short.
const MaxNamed = 8

// ValidName reports whether name can name a limit: 1 to 64 of a-z, 0-9,
// '_' and '-', starting with a letter or digit, so that it reads the same
// in configs, URLs, Redis keys and the RateLimit headers.
func ValidName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("limit name %q: want 1 to 64 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '_' || c == '-')
		if !ok {
			return fmt.Errorf("limit name %q: want a-z, 0-9, '_' and '-', starting with a letter or digit", name)
		}
	}
	return nil
}
