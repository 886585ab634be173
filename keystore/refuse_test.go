package keystore

import (
	"errors"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/vizerror"
)

// TestRefusalsMarkTheirMessage: a refused request's error keeps its full
// text and its sentinel, and marks as visible only what was wrong, which
// an API shows its client without "rotate key: invalid: ".
func TestRefusalsMarkTheirMessage(t *testing.T) {
	f := newFixture(t, Options{})
	k := f.create(t, KeySpec{})
	bad := authz.Status("revoked")
	_, rotateErr := f.s.RotateKey(t.Context(), k.ID, 87600*time.Hour)
	_, updateErr := f.s.UpdateKey(t.Context(), k.ID, KeyUpdate{Status: &bad})
	_, getErr := f.s.Key(t.Context(), "nope")
	_, createErr := f.s.CreateKey(t.Context(), KeySpec{TenantID: f.tenant.ID, Name: " padded"})
	for _, c := range []struct {
		err           error
		kind          error
		text, visible string
	}{
		{rotateErr, ErrInvalid, "rotate key: invalid: grace period 87600h is longer than the maximum of 168h", "grace period 87600h is longer than the maximum of 168h"},
		{updateErr, ErrInvalid, `update key: invalid: status "revoked": want active or inactive (revoke a key with revoke)`, `status "revoked": want active or inactive (revoke a key with revoke)`},
		{getErr, ErrNotFound, `get key: key "nope": not found`, `key "nope" not found`},
		{createErr, ErrInvalid, "create key: invalid: name has leading or trailing space", "name has leading or trailing space"},
	} {
		if c.err == nil || c.err.Error() != c.text || !errors.Is(c.err, c.kind) {
			t.Errorf("error %v, want %q matching %v", c.err, c.text, c.kind)
			continue
		}
		if msg, ok := vizerror.As(c.err); !ok || msg != c.visible {
			t.Errorf("%v: visible %q, %v; want %q", c.err, msg, ok, c.visible)
		}
	}
}
