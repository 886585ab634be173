package keystore

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore/apikey"
)

// TestCopy moves a store with every kind of record (slots, rotations,
// balances, last-used times) to a new file and finds it whole there; a
// second copy into the now full file is refused.
func TestCopy(t *testing.T) {
	f := newFixture(t, Options{})
	var raws []string
	for i := range 250 { // more than two chunks
		ck := f.create(t, KeySpec{OrgID: f.org.ID, Slot: "s" + string(rune('a'+i%3)), CreditsRemaining: new(int64(int64(i)))})
		raws = append(raws, ck.Secret.Reveal())
	}
	plain := f.create(t, KeySpec{Scopes: []string{"x:read"}})
	rot, err := f.s.RotateKey(t.Context(), plain.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.s.KeyUsed(mustLookupCred(t, f.s, rot.Secret.Reveal()), f.clock.Now())
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	src, err := OpenBolt(f.path, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dstPath := filepath.Join(t.TempDir(), "copy.db")
	dst, err := OpenBolt(dstPath, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Copy(context.Background(), dst, src)
	if err != nil {
		t.Fatal(err)
	}
	if st.Tenants != 1 || st.Orgs != 1 || st.Keys != 252 {
		t.Fatalf("copied %+v", st)
	}
	if _, err := Copy(context.Background(), dst, src); !errors.Is(err, ErrConflict) {
		t.Fatalf("copy into a full store: %v", err)
	}
	dst.Close()
	c, err := Open(dstPath, Options{Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, raw := range append(raws, plain.Secret.Reveal(), rot.Secret.Reveal()) {
		mustLookupCred(t, c, raw)
	}
	k, err := c.Key(t.Context(), rot.ID)
	if err != nil || k.LastUsedAt == nil || k.RotatedFrom != plain.ID {
		t.Fatalf("rotated key after copy: %+v %v", k, err)
	}
	page, err := c.ListKeys(t.Context(), ListFilter{OrgID: f.org.ID, State: StateActive})
	if err != nil || len(page.Keys) != 3 {
		t.Fatalf("active keys in the org (one per slot): %d %v", len(page.Keys), err)
	}
}

func mustLookupCred(t *testing.T, s *Store, raw string) *authz.Credential {
	t.Helper()
	c, ok, err := s.LookupKey(context.Background(), apikey.HashOf(raw))
	if err != nil || !ok {
		t.Fatalf("lookup: %v %v", ok, err)
	}
	return c
}
