package apikey

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const secretRaw = "ak_live_AB7KxQ2mZp9RtV4wYc8NdE1fGh3jk0Lm" // 40 bytes, as generated

// TestSecretRedacts prints a Secret in every way a program might by
// accident, alone and inside structs, and finds neither the key nor any
// of it beyond the display prefix.
func TestSecretRedacts(t *testing.T) {
	s := NewSecret(secretRaw)
	type exported struct {
		Name string
		Key  Secret
	}
	type unexported struct {
		name string
		key  Secret
	}
	type pointers struct {
		Key *Secret
		key *Secret
	}
	values := map[string]any{
		"value":      s,
		"pointer":    &s,
		"exported":   exported{"n", s},
		"unexported": unexported{"n", s},
		"pointers":   pointers{&s, &s},
		"slice":      []Secret{s},
		"map":        map[string]Secret{"k": s},
		"interface":  any(s),
		"error":      fmt.Errorf("bad key %v", s),
		"wrapped":    fmt.Errorf("import: %w", fmt.Errorf("key %s", s)),
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%10s", "%-40v", "%#q", "%+q", "%#x", "%o", "%b", "%c", "%U", "%e", "%t", "%p"}
	var out strings.Builder
	for name, v := range values {
		for _, verb := range verbs {
			got := fmt.Sprintf(verb, v)
			checkRedacted(t, name+" "+verb, got)
			out.WriteString(got + "\n")
		}
		checkRedacted(t, name+" Sprint", fmt.Sprint(v))
		checkRedacted(t, name+" Sprintln", fmt.Sprintln(v))
		b, err := json.Marshal(v)
		if err == nil {
			checkRedacted(t, name+" json", string(b))
		}
	}
	for _, verb := range []string{"%v", "%s", "%+v"} {
		if got := fmt.Sprintf(verb, s); got != "ak_live_AB7K…[redacted]" {
			t.Errorf("Sprintf(%s) = %q, want the display prefix and [redacted]", verb, got)
		}
	}
	if got, want := fmt.Sprintf("%#v", s), `apikey.Secret("ak_live_AB7K…[redacted]")`; got != want {
		t.Errorf("%%#v = %s, want %s", got, want)
	}
	if got, want := fmt.Sprintf("%q", s), `"ak_live_AB7K…[redacted]"`; got != want {
		t.Errorf("%%q = %s, want %s", got, want)
	}
	if !strings.Contains(out.String(), "ak_live_AB7K") {
		t.Error("no output shows the display prefix")
	}
	if got := s.Reveal(); got != secretRaw {
		t.Errorf("Reveal = %q, want %q", got, secretRaw)
	}
}

func checkRedacted(t *testing.T, what, got string) {
	t.Helper()
	// The first character after the display prefix is where the secret
	// part begins; no output may show it.
	if strings.Contains(got, secretRaw[:DisplayLen+1]) {
		t.Errorf("%s shows the key: %s", what, got)
	}
	// Nor the key as bytes (%x, %d of its bytes).
	for _, enc := range []string{fmt.Sprintf("%x", secretRaw[DisplayLen:DisplayLen+8]), fmt.Sprint([]byte(secretRaw[DisplayLen : DisplayLen+4]))} {
		if strings.Contains(got, enc) {
			t.Errorf("%s shows the key encoded: %s", what, got)
		}
	}
	if strings.Contains(got, strings.Trim(fmt.Sprint([]byte(secretRaw[DisplayLen:DisplayLen+4])), "[]")) {
		t.Errorf("%s shows the key's bytes: %s", what, got)
	}
}

func TestSecretJSON(t *testing.T) {
	s := NewSecret(secretRaw)
	b, err := json.Marshal(struct {
		Key   Secret  `json:"key"`
		Ptr   *Secret `json:"ptr"`
		Empty Secret  `json:"empty,omitzero"`
	}{s, &s, Secret{}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"key":"ak_live_AB7K…[redacted]","ptr":"ak_live_AB7K…[redacted]"}`; got != want {
		t.Errorf("json = %s, want %s", got, want)
	}
	// A key is read in from a JSON string (an import request), and only
	// Reveal gives it back.
	var in struct {
		Key Secret `json:"key"`
	}
	if err := json.Unmarshal([]byte(`{"key":"`+secretRaw+`"}`), &in); err != nil {
		t.Fatal(err)
	}
	if in.Key.Reveal() != secretRaw || !in.Key.Equal(s) {
		t.Errorf("decoded %q, want %q", in.Key.Reveal(), secretRaw)
	}
	if err := json.Unmarshal([]byte(`{"key":5}`), &in); err == nil {
		t.Error("a number decoded as a key")
	}
}

func TestSecretSlog(t *testing.T) {
	s := NewSecret(secretRaw)
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		log := slog.New(h)
		log.Info("key", "key", s, "ptr", &s, "any", slog.AnyValue(s), "group", slog.GroupValue(slog.Any("key", s)))
		log.Info("in a struct", "v", struct{ Key Secret }{s}, "u", struct{ key Secret }{s})
		log.Error("failed", "error", fmt.Errorf("lookup %v: %w", s, errors.New("boom")))
	}
	checkRedacted(t, "slog", buf.String())
	if !strings.Contains(buf.String(), "ak_live_AB7K…[redacted]") {
		t.Errorf("slog does not show the display prefix:\n%s", buf.String())
	}
}

func TestSecretZeroAndShort(t *testing.T) {
	var z Secret
	if !z.IsZero() || z.Reveal() != "" || z.String() != "" || !z.Equal(NewSecret("")) {
		t.Errorf("zero Secret: IsZero %v, Reveal %q, String %q", z.IsZero(), z.Reveal(), z.String())
	}
	if NewSecret("x").IsZero() {
		t.Error("NewSecret(\"x\") is zero")
	}
	// Too short to show any of.
	if got := fmt.Sprint(NewSecret("abc")); got != "[redacted]" {
		t.Errorf("short secret prints %q", got)
	}
	if NewSecret("abc").Equal(NewSecret("abd")) || !NewSecret("abc").Equal(NewSecret(string([]byte("abc")))) {
		t.Error("Equal compares wrongly")
	}
	if NewSecret(secretRaw).Hash() != HashOf(secretRaw) {
		t.Error("Hash differs from HashOf")
	}
}

// TestSecretAllocatesNothing: the decision core holds the presented key as
// a Secret on its allocation-free path.
func TestSecretAllocatesNothing(t *testing.T) {
	raw := strings.Repeat("k", 40)
	var sink Hash
	if n := testing.AllocsPerRun(100, func() {
		s := NewSecret(raw)
		if !s.IsZero() {
			sink = s.Hash()
		}
	}); n != 0 {
		t.Errorf("%v allocations", n)
	}
	_ = sink
}
