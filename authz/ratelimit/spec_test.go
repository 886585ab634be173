package ratelimit

import (
	"encoding/json"
	"testing"
	"time"
)

func TestWindowRoundTrip(t *testing.T) {
	for s, want := range map[string]string{"1m": "1m", "60s": "1m", "24h": "1d", "30d": "30d", "1.5h": "90m", "90s": "90s", "1500ms": "1.5s"} {
		d, err := ParseWindow(s)
		if err != nil || FormatWindow(d) != want {
			t.Errorf("ParseWindow(%q) = %v, %v; formatted %q, want %q", s, d, err, FormatWindow(d), want)
		}
	}
	for _, bad := range []string{"", "d", "1x", "-d", "+1d", "106752d", "1d1h", "99999999999999999999d"} {
		if d, err := ParseWindow(bad); err == nil {
			t.Errorf("ParseWindow(%q) = %v, want an error", bad, d)
		}
	}
}

// FuzzParseWindow: windows come from configs and the admin API. Parsing
// never panics, and what parses formats to a string that parses back to
// the same window and formats the same again.
func FuzzParseWindow(f *testing.F) {
	for _, s := range []string{"1m", "24h", "30d", "90s", "1.5h", "0", "0d", "-1m", "d", "00d", "106751d", "1e3s", "2562047h47m16.854775807s", "-2562047h47m16.854775808s", ".5s", "1µs"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseWindow(s)
		if err != nil {
			return
		}
		text := FormatWindow(d)
		d2, err := ParseWindow(text)
		if err != nil || d2 != d {
			t.Fatalf("ParseWindow(%q) = %v, formatted %q, parsed back %v, %v", s, d, text, d2, err)
		}
		if again := FormatWindow(d2); again != text {
			t.Fatalf("%v formats as %q, then %q", d, text, again)
		}
	})
}

// FuzzLimitJSON: limits come in records and admin API bodies. Decoding
// never panics, and a valid limit survives MarshalJSON and back.
func FuzzLimitJSON(f *testing.F) {
	for _, s := range []string{
		`{"requests":100,"window":"1m"}`,
		`{"requests":600,"window":"1m","algorithm":"token_bucket","burst":50}`,
		`{"requests":1000,"window":"30d","algorithm":"sliding_window"}`,
		`{"requests":1,"window":"1m","burst":3}`,
		`{"requests":1,"window":"1m","algorithm":"leaky"}`,
		`{"requests":1,"window":"1m","extra":1}`,
		`null`, `{}`, `[]`, `{"requests":1e3,"window":"1h"}`, `{"requests":-1,"window":"-1m"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var direct Limit
		_ = direct.UnmarshalJSON(b)
		var l Limit
		if err := json.Unmarshal(b, &l); err != nil || l.Validate() != nil {
			return
		}
		out, err := json.Marshal(l)
		if err != nil {
			t.Fatalf("%+v: %v", l, err)
		}
		var back Limit
		if err := json.Unmarshal(out, &back); err != nil || back != l {
			t.Fatalf("%+v marshals as %s, reads back %+v, %v", l, out, back, err)
		}
	})
}

func TestLimitJSON(t *testing.T) {
	for _, l := range []Limit{minute, standard, {Requests: 600, Window: 30 * 24 * time.Hour, Burst: 50, Algorithm: TokenBucket}} {
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		var back Limit
		if err := json.Unmarshal(b, &back); err != nil || back != l {
			t.Fatalf("%+v -> %s -> %+v, %v", l, b, back, err)
		}
	}
}
