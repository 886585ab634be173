package secret

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const raw = "admin-token-Zq8xW2vLp0"

func TestValueRedacts(t *testing.T) {
	v := New(raw)
	type exported struct{ Token Value }
	type unexported struct{ token Value }
	values := map[string]any{
		"value":      v,
		"pointer":    &v,
		"exported":   exported{v},
		"unexported": unexported{v},
		"slice":      []Value{v},
		"error":      fmt.Errorf("token %v: %w", v, errors.New("refused")),
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s", "%#q", "%o", "%c", "%U", "%t", "%p"}
	var out strings.Builder
	for name, x := range values {
		for _, verb := range verbs {
			out.WriteString(name + " " + verb + ": " + fmt.Sprintf(verb, x) + "\n")
		}
		if b, err := json.Marshal(x); err == nil {
			out.WriteString(name + " json: " + string(b) + "\n")
		}
	}
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		slog.New(h).Info("token", "token", v, "ptr", &v, "in", exported{v}, "un", unexported{v})
	}
	out.WriteString(logs.String())
	for _, leak := range []string{raw, raw[:6], fmt.Sprintf("%x", raw[:6]), strings.Trim(fmt.Sprint([]byte(raw[:4])), "[]")} {
		if strings.Contains(out.String(), leak) {
			t.Errorf("output shows the token (%q):\n%s", leak, out.String())
		}
	}
	if got := fmt.Sprintf("%v %s %q %#v", v, v, v, v); got != `[redacted] [redacted] "[redacted]" secret.Value("[redacted]")` {
		t.Errorf("printed %s", got)
	}
	if v.Reveal() != raw || v.IsZero() || !(Value{}).IsZero() || (Value{}).String() != "" {
		t.Error("Reveal or IsZero is wrong")
	}
}
