package admin_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// failingBackend fails writes with fail's error once it is set, as a
// shared backend does when etcd is out of reach or a replica does not
// confirm.
type failingBackend struct {
	keystore.Backend
	fail atomic.Pointer[error]
}

func (b *failingBackend) Update(ctx context.Context, fn func(keystore.Tx) error) error {
	if err := b.fail.Load(); err != nil {
		return *err
	}
	return b.Backend.Update(ctx, fn)
}

// failingFixture is the admin API over a real bbolt store whose writes
// fail with what b.fail holds, when set.
func failingFixture(t *testing.T) (*failingBackend, *fixture) {
	t.Helper()
	bolt, err := keystore.OpenBolt(filepath.Join(t.TempDir(), "k.db"), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := &failingBackend{Backend: bolt}
	s, err := keystore.New(b, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return b, newFixtureOn(t, s, admin.Options{})
}

// TestStoreTroubleIsA503: a store out of reach, or a write some replica
// did not confirm, is a 503 with its own code, not a 500.
func TestStoreTroubleIsA503(t *testing.T) {
	b, f := failingFixture(t)
	for _, c := range []struct {
		err    error
		code   string
		inBody string
	}{
		{fmt.Errorf("%w: etcd commit: context deadline exceeded", keystore.ErrUnavailable), "unavailable", "unavailable"},
		{fmt.Errorf("%w: revision 42 not applied by r2 within 20s", keystore.ErrUnconfirmed), "unconfirmed", "r2"},
	} {
		b.fail.Store(&c.err)
		r := f.do("POST", "/v1/tenants", `{"name":"Acme"}`)
		if e := r.errBody(t); r.status != 503 || e.Code != c.code || !strings.Contains(e.Error, c.inBody) {
			t.Errorf("%v: %d %+v", c.err, r.status, e)
		}
	}
	b.fail.Store(nil)
	if r := f.do("POST", "/v1/tenants", `{"name":"Acme"}`); r.status != 201 {
		t.Fatalf("store back: %d %s", r.status, r.body)
	}
}
