package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/keygate/keygate/keystore"
)

// FuzzParseRefill: --refill never panics, refuses with a usage error, and
// what it accepts the store accepts too and reads back the same.
func FuzzParseRefill(f *testing.F) {
	for _, s := range []string{"daily:100", "monthly:1:100000", "monthly:31:0", "monthly:0:5", "daily:-1", "weekly:5", "daily:", ":", "monthly:1:9223372036854775807"} {
		f.Add(s)
	}
	m := newMgmtCommand(&cli{getenv: func(string) string { return "" }}, "update ID", "")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRefill(m, s)
		if err != nil {
			if !errors.Is(err, errUsage) {
				t.Fatalf("%q: %v is not a usage error", s, err)
			}
			return
		}
		back := fmt.Sprintf("%s:%d", r.Interval, r.Amount)
		if r.Interval == keystore.RefillMonthly {
			back = fmt.Sprintf("%s:%d:%d", r.Interval, r.Day, r.Amount)
		}
		if r2, err := parseRefill(m, back); err != nil || r2 != r {
			t.Fatalf("%q: %+v reads back from %q as %+v, %v", s, r, back, r2, err)
		}
		if err := keystore.ValidRefill(r); err != nil && r.Amount <= 1<<53 {
			t.Fatalf("%q: %+v accepted here, refused by the store: %v", s, r, err)
		}
	})
}
