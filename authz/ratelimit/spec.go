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

// UnmarshalJSON reads what MarshalJSON writes, refusing unknown fields. It
// does not Validate: a record's reader decides what to do with a limit
// that cannot work, and the admin API refuses one before it is stored.
func (l *Limit) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return errors.New("a limit cannot be null")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var j limitJSON
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("limit: %w", err)
	}
	alg, err := ParseAlgorithm(j.Algorithm)
	if err != nil {
		return err
	}
	w, err := ParseWindow(j.Window)
	if err != nil {
		return err
	}
	*l = Limit{Requests: j.Requests, Window: w, Algorithm: alg, Burst: j.Burst}
	return nil
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
