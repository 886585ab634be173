package keystore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/keystore/apikey"
)

type callerKey struct{}

// ctxBackend records, for each View and Update, whether it ran under the
// caller's context (it carries callerKey) bounded by opTimeout.
type ctxBackend struct {
	Backend
	mu    sync.Mutex
	calls int
	bad   []string
}

func (b *ctxBackend) record(op string, ctx context.Context) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	d, ok := ctx.Deadline()
	if ctx.Value(callerKey{}) == nil || !ok || time.Until(d) > opTimeout {
		b.bad = append(b.bad, fmt.Sprintf("%s: caller's value %v, deadline %v (set %v)", op, ctx.Value(callerKey{}), time.Until(d), ok))
	}
}

func (b *ctxBackend) View(ctx context.Context, fn func(Tx) error) error {
	b.record("View", ctx)
	return b.Backend.View(ctx, fn)
}

func (b *ctxBackend) Update(ctx context.Context, fn func(Tx) error) error {
	b.record("Update", ctx)
	return b.Backend.Update(ctx, fn)
}

func (b *ctxBackend) result() (int, []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls, b.bad
}

// TestOperationsRunUnderCallerContext: every admin operation reaches the
// backend with its caller's context, bounded by opTimeout, so a client that
// hangs up cancels it (the etcd backend acts on that; see etcdstore tests).
func TestOperationsRunUnderCallerContext(t *testing.T) {
	bolt, err := OpenBolt(filepath.Join(t.TempDir(), "keygate.db"), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The caller's deadline, far beyond opTimeout, must not lift the bound.
	ctx, cancel := context.WithTimeout(context.WithValue(t.Context(), callerKey{}, "caller"), time.Hour)
	defer cancel()
	b := &ctxBackend{Backend: bolt}
	s, err := New(b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// New checked the schema under its own context.
	b.mu.Lock()
	b.calls, b.bad = 0, nil
	b.mu.Unlock()

	var (
		tn   Tenant
		o    Org
		k, r CreatedKey
	)
	ops := []struct {
		name string
		op   func() error
	}{
		{"CreateTenant", func() (err error) { tn, err = s.CreateTenant(ctx, "Acme"); return err }},
		{"Tenant", func() error { _, err := s.Tenant(ctx, tn.ID); return err }},
		{"Tenants", func() error { _, err := s.Tenants(ctx); return err }},
		{"CreateOrg", func() (err error) { o, err = s.CreateOrg(ctx, tn.ID, "Acme EU"); return err }},
		{"Org", func() error { _, err := s.Org(ctx, o.ID); return err }},
		{"Orgs", func() error { _, err := s.Orgs(ctx, tn.ID); return err }},
		{"CreateKey", func() (err error) {
			k, err = s.CreateKey(ctx, KeySpec{TenantID: tn.ID, OrgID: o.ID, Name: "k"})
			return err
		}},
		{"ImportKey", func() error {
			_, err := s.ImportKey(ctx, Import{KeySpec: KeySpec{TenantID: tn.ID, Name: "i"}, Raw: apikey.NewSecret("legacy-key-0123456789")})
			return err
		}},
		{"Key", func() error { _, err := s.Key(ctx, k.ID); return err }},
		{"ListKeys", func() error { _, err := s.ListKeys(ctx, ListFilter{TenantID: tn.ID}); return err }},
		{"CountKeys", func() error { _, err := s.CountKeys(ctx); return err }},
		{"UpdateKey", func() error { _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Name: new("renamed")}); return err }},
		{"SetCredits", func() error { _, err := s.SetCredits(ctx, k.ID, 10); return err }},
		{"AddCredits", func() error { _, err := s.AddCredits(ctx, k.ID, 5); return err }},
		{"RotateKey", func() (err error) { r, err = s.RotateKey(ctx, k.ID, 0); return err }},
		{"RevokeKey", func() error { _, err := s.RevokeKey(ctx, r.ID); return err }},
		{"DeleteKey", func() error { return s.DeleteKey(ctx, r.ID) }},
	}
	for _, op := range ops {
		before, _ := b.result()
		if err := op.op(); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		if after, _ := b.result(); after == before {
			t.Errorf("%s did not reach the backend", op.name)
		}
	}
	if _, bad := b.result(); len(bad) > 0 {
		t.Errorf("transactions not under the caller's bounded context:\n%v", bad)
	}
}
