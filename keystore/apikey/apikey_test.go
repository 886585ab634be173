package apikey

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
)

func TestGenerateParses(t *testing.T) {
	f := MustFormat("ak")
	seen := map[string]bool{}
	for _, env := range []string{EnvLive, EnvTest} {
		for i := 0; i < 200; i++ {
			k, err := f.Generate(env)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(k, "ak_"+env+"_") || len(k) != len("ak_"+env+"_")+BodyLen {
				t.Fatalf("key %q has the wrong layout", k)
			}
			p, err := f.Parse(k)
			if err != nil {
				t.Fatalf("Parse(generated %q): %v", k, err)
			}
			if p.Env != env {
				t.Fatalf("Parse(%q).Env = %q, want %q", k, p.Env, env)
			}
			if seen[k] {
				t.Fatalf("duplicate key %q", k)
			}
			seen[k] = true
		}
	}
}

func TestGenerateIsUniformOverAlphabet(t *testing.T) {
	// A biased generator (c % 62 over all 256 byte values) makes the first
	// 8 characters about 25% likelier; rejection sampling must remove that.
	b := make([]byte, 62*2000)
	if err := randomBase62(b, bytes.NewReader(bytes.Repeat(seq256(), 600))); err != nil {
		t.Fatal(err)
	}
	counts := map[byte]int{}
	for _, c := range b {
		counts[c]++
	}
	if len(counts) != 62 {
		t.Fatalf("got %d distinct characters, want 62", len(counts))
	}
	for c, n := range counts {
		if n != 2000 {
			t.Fatalf("character %q drawn %d times from a flat source, want exactly 2000", c, n)
		}
	}
}

func seq256() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func TestGenerateFailsOnShortRandomness(t *testing.T) {
	f := MustFormat("ak")
	if _, err := f.generate(EnvLive, bytes.NewReader(make([]byte, 10))); err == nil {
		t.Fatal("generate with a failing entropy source succeeded")
	}
	if _, err := f.Generate("prod"); !errors.Is(err, ErrInvalidEnv) {
		t.Fatalf("Generate(prod) = %v, want ErrInvalidEnv", err)
	}
}

func TestParseRejects(t *testing.T) {
	f := MustFormat("ak")
	good, err := f.Generate(EnvLive)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := []struct {
		name string
		raw  string
	}{
		{"empty", ""},
		{"alfaone example (no checksum)", "ak_live_a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6"},
		{"one char typo in random part", flip(good, 10)},
		{"one char typo in checksum", flip(good, len(good)-1)},
		{"env swapped", strings.Replace(good, "_live_", "_test_", 1)},
		{"other prefix", "sk" + good[2:]},
		{"unknown env", strings.Replace(good, "_live_", "_prod_", 1)},
		{"truncated", good[:len(good)-1]},
		{"extended", good + "a"},
		{"non base62", good[:20] + "-" + good[21:]},
		{"non ascii", good[:20] + "é" + good[22:]},
		{"nul", good[:20] + "\x00" + good[21:]},
		{"two keys joined", good + "," + good},
		{"leading space", " " + good[1:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.Parse(tt.raw); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q) = %v, want ErrMalformed", tt.raw, err)
			}
		})
	}
}

func TestParseAllocatesNothing(t *testing.T) {
	f := MustFormat("ak")
	good, _ := f.Generate(EnvLive)
	bad := good[:len(good)-1] + "0"
	for _, raw := range []string{good, bad, "garbage"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = f.Parse(raw) }); n != 0 {
			t.Errorf("Parse(%q) allocates %v times, want 0", raw, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = HashOf(good) }); n != 0 {
		t.Errorf("HashOf allocates %v times, want 0", n)
	}
}

func TestNewFormat(t *testing.T) {
	for _, p := range []string{"ak", "sk", "acme9", "abcdefghijklmnop"} {
		f, err := NewFormat(p)
		if err != nil {
			t.Fatalf("NewFormat(%q): %v", p, err)
		}
		k, err := f.Generate(EnvTest)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Parse(k); err != nil {
			t.Fatalf("prefix %q: Parse(%q): %v", p, k, err)
		}
		if other := MustFormat("zz"); p != "zz" {
			if _, err := other.Parse(k); err == nil {
				t.Fatalf("format zz accepted %q", k)
			}
		}
	}
	for _, p := range []string{"", "a_b", "Ak", "9a", "abcdefghijklmnopq", "a-b"} {
		if _, err := NewFormat(p); !errors.Is(err, ErrInvalidPrefix) {
			t.Errorf("NewFormat(%q) = %v, want ErrInvalidPrefix", p, err)
		}
	}
}

func TestDisplayPrefixAndHash(t *testing.T) {
	f := MustFormat("ak")
	k, _ := f.Generate(EnvLive)
	if got := DisplayPrefix(k); got != k[:12] || !strings.HasPrefix(got, "ak_live_") {
		t.Fatalf("DisplayPrefix = %q", got)
	}
	if got := DisplayPrefix("0123456789abcdef"); got != "0123" {
		t.Fatalf("DisplayPrefix(16-byte key) = %q, want its first 30%%", got)
	}
	if HashOf(k) == HashOf(k+"x") {
		t.Fatal("different keys hash alike")
	}
	h := HashOf(k)
	for _, s := range []string{h.String(), fmt.Sprintf("%v %s %#v", h, h, h)} {
		if strings.Contains(s, fmt.Sprintf("%x", h[:4])) {
			t.Fatalf("formatting a Hash leaks it: %q", s)
		}
	}
}

// FuzzParse: no input panics, and whatever Parse accepts is exactly a key of
// this format whose checksum matches, re-encoded byte for byte.
func FuzzParse(f *testing.F) {
	format := MustFormat("ak")
	good, _ := format.Generate(EnvLive)
	for _, s := range []string{good, "", "ak_live_", "ak_test_a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6", good + "," + good, "Bearer " + good} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := format.Parse(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v is not ErrMalformed", err)
			}
			return
		}
		if !ValidEnv(p.Env) || !strings.HasPrefix(raw, "ak_"+p.Env+"_") {
			t.Fatalf("accepted %q as env %q", raw, p.Env)
		}
		var sum [ChecksumLen]byte
		head := raw[:len(raw)-ChecksumLen]
		putChecksum(sum[:], crc32IEEE(head))
		if string(sum[:]) != raw[len(raw)-ChecksumLen:] {
			t.Fatalf("accepted %q with a wrong checksum", raw)
		}
	})
}

func crc32IEEE(s string) uint32 { return crc32.ChecksumIEEE([]byte(s)) }

func TestPlausible(t *testing.T) {
	for raw, want := range map[string]bool{
		"ak_live_abc":                 true,
		"legacy-key_123.XYZ~":         true,
		"":                            true, // empty is "no key", told apart by the caller
		"a,b":                         false,
		"a b":                         false,
		"a\tb":                        false,
		"ak_live_\u0430bc":            false, // Cyrillic a
		"\x7f":                        false,
		strings.Repeat("a", MaxLen):   true,
		strings.Repeat("a", MaxLen+1): false,
	} {
		if got := Plausible(raw); got != want {
			t.Errorf("Plausible(%q) = %v, want %v", raw, got, want)
		}
	}
}
