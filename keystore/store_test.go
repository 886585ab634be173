package keystore

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore/apikey"
)

// fakeClock is an injectable clock: tests move time instead of sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	s      *Store
	path   string
	clock  *fakeClock
	tenant Tenant
	org    Org
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	f := &fixture{path: filepath.Join(t.TempDir(), "keygate.db"), clock: &fakeClock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}}
	opts.Now = f.clock.Now
	f.open(t, opts)
	var err error
	if f.tenant, err = f.s.CreateTenant(t.Context(), "Acme"); err != nil {
		t.Fatal(err)
	}
	if f.org, err = f.s.CreateOrg(t.Context(), f.tenant.ID, "Acme EU"); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) open(t *testing.T, opts Options) {
	t.Helper()
	opts.Now = f.clock.Now
	b, err := OpenBolt(f.path, opts.ReadOnly, opts.OpenTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if wrapBackend != nil {
		b = wrapBackend(b)
	}
	s, err := New(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f.s = s
}

func (f *fixture) create(t *testing.T, spec KeySpec) CreatedKey {
	t.Helper()
	if spec.TenantID == "" {
		spec.TenantID = f.tenant.ID
	}
	if spec.Name == "" {
		spec.Name = "test key"
	}
	k, err := f.s.CreateKey(t.Context(), spec)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return k
}

// lookup goes through the cache exactly like a Check.
func (f *fixture) lookup(t *testing.T, raw string) *authz.Credential {
	t.Helper()
	c, found, err := f.s.LookupKey(context.Background(), apikey.HashOf(raw))
	if err != nil {
		t.Fatalf("LookupKey: %v", err)
	}
	if !found {
		return nil
	}
	return c
}

// lookupWarm looks a key up until the cache serves it, so that a later
// lookup proves the cache was invalidated rather than never filled.
func (f *fixture) lookupWarm(t *testing.T, raw string) *authz.Credential {
	t.Helper()
	// A write that invalidated everything clears the cache aside: the
	// clear must not come after this fill (TestUserLimitsReachCredentials
	// failed 1 run in 8 so).
	f.s.cache.settle()
	c := f.lookup(t, raw)
	f.s.cache.pos.Wait()
	if f.s.cache.neg != nil {
		f.s.cache.neg.Wait()
	}
	if got, ok := f.s.cache.get(apikey.HashOf(raw)); !ok || (got == nil) != (c == nil) {
		t.Fatalf("cache not warm after lookup (ok=%v)", ok)
	}
	return c
}

// settle waits for a clear that invalidateAll started aside to finish.
func (c *cache) settle() {
	for c.clearing.Load() {
		runtime.Gosched()
	}
	// The clear under way holds the lock until it is done.
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
}

func TestCreateAndLookup(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{OrgID: f.org.ID, UserID: "u1", Name: "Production", Scopes: []string{"vault:read", "chat:write", "vault:read"}, Environment: "test", Tier: "enterprise"})
	if _, err := apikey.MustFormat("ak").Parse(ck.Secret.Reveal()); err != nil {
		t.Fatalf("created key does not parse: %v", err)
	}
	if ck.DisplayPrefix != ck.Secret.Reveal()[:12] || ck.Status != authz.StatusActive || ck.CreatedAt.IsZero() {
		t.Fatalf("created record = %+v", ck.Key)
	}
	c := f.lookupWarm(t, ck.Secret.Reveal())
	if c == nil {
		t.Fatal("created key not found")
	}
	want := authz.Credential{ID: ck.ID, Name: "Production", DisplayPrefix: ck.DisplayPrefix, TenantID: f.tenant.ID, OrgID: f.org.ID, UserID: "u1",
		Environment: "test", Tier: "enterprise", Scopes: []string{"vault:read", "chat:write"}, Status: authz.StatusActive, ScopesHeader: "vault:read,chat:write"}
	if c.ID != want.ID || c.ScopesHeader != want.ScopesHeader || c.OrgID != want.OrgID || c.Tier != want.Tier || c.Environment != want.Environment || c.UserID != want.UserID {
		t.Fatalf("credential = %+v, want %+v", *c, want)
	}
	if f.lookup(t, ck.Secret.Reveal()+"x") != nil {
		t.Fatal("unknown key found")
	}
}

func TestCreateValidation(t *testing.T) {
	f := newFixture(t, Options{})
	other, _ := f.s.CreateTenant(t.Context(), "Other")
	past := f.clock.Now().Add(-time.Hour)
	tests := []struct {
		name string
		spec KeySpec
		want error
	}{
		{"no tenant", KeySpec{Name: "k"}, ErrInvalid},
		{"unknown tenant", KeySpec{TenantID: "nope", Name: "k"}, ErrNotFound},
		{"unknown org", KeySpec{TenantID: f.tenant.ID, OrgID: "nope", Name: "k"}, ErrNotFound},
		{"org of another tenant", KeySpec{TenantID: other.ID, OrgID: f.org.ID, Name: "k"}, ErrInvalid},
		{"no name", KeySpec{TenantID: f.tenant.ID}, ErrInvalid},
		{"name with newline", KeySpec{TenantID: f.tenant.ID, Name: "a\r\nx-tenant-id: evil"}, ErrInvalid},
		{"bad env", KeySpec{TenantID: f.tenant.ID, Name: "k", Environment: "prod"}, ErrInvalid},
		{"bad tier", KeySpec{TenantID: f.tenant.ID, Name: "k", Tier: "gold"}, ErrInvalid},
		{"bad scope", KeySpec{TenantID: f.tenant.ID, Name: "k", Scopes: []string{"a b"}}, ErrInvalid},
		{"expired already", KeySpec{TenantID: f.tenant.ID, Name: "k", ExpiresAt: &past}, ErrInvalid},
		{"negative credits", KeySpec{TenantID: f.tenant.ID, Name: "k", CreditsRemaining: new(int64(-1))}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.s.CreateKey(t.Context(), tt.spec); !errors.Is(err, tt.want) {
				t.Fatalf("CreateKey = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestWritesVisibleOnNextLookup: every write is seen by the very next lookup
// even though the key was cached just before it.
func TestWritesVisibleOnNextLookup(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{Scopes: []string{"a", "b"}})

	f.lookupWarm(t, ck.Secret.Reveal())
	if _, err := f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{Scopes: &[]string{"a"}, Name: new("renamed")}); err != nil {
		t.Fatal(err)
	}
	if c := f.lookup(t, ck.Secret.Reveal()); c.ScopesHeader != "a" || c.Name != "renamed" {
		t.Fatalf("after update: %+v", c)
	}

	f.lookupWarm(t, ck.Secret.Reveal())
	if _, err := f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{Status: new(authz.StatusInactive)}); err != nil {
		t.Fatal(err)
	}
	if c := f.lookup(t, ck.Secret.Reveal()); c.Status != authz.StatusInactive {
		t.Fatalf("after deactivate: %+v", c)
	}
	if _, err := f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{Status: new(authz.StatusActive)}); err != nil {
		t.Fatal(err)
	}

	f.lookupWarm(t, ck.Secret.Reveal())
	if _, err := f.s.RevokeKey(t.Context(), ck.ID); err != nil {
		t.Fatal(err)
	}
	if c := f.lookup(t, ck.Secret.Reveal()); c.Status != authz.StatusRevoked || c.RevokesAt.IsZero() {
		t.Fatalf("after revoke: %+v", c)
	}
	if _, err := f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{Status: new(authz.StatusActive)}); !errors.Is(err, ErrConflict) {
		t.Fatalf("reactivating a revoked key = %v, want ErrConflict", err)
	}

	f.lookupWarm(t, ck.Secret.Reveal())
	if err := f.s.DeleteKey(t.Context(), ck.ID); err != nil {
		t.Fatal(err)
	}
	if c := f.lookup(t, ck.Secret.Reveal()); c != nil {
		t.Fatalf("after delete: found %+v", c)
	}
}

// TestNegativeCacheInvalidatedByImport: a key looked up (and remembered as
// unknown) before it was imported works right after the import.
func TestNegativeCacheInvalidatedByImport(t *testing.T) {
	f := newFixture(t, Options{})
	raw := "legacy_0123456789abcdef0123456789"
	f.lookupWarm(t, raw)
	if _, err := f.s.ImportKey(t.Context(), Import{KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "legacy"}, Raw: apikey.NewSecret(raw)}); err != nil {
		t.Fatal(err)
	}
	if f.lookup(t, raw) == nil {
		t.Fatal("imported key still unknown: negative cache entry survived the import")
	}
}

// TestRevokeRacingCacheFill interleaves a lookup and a revoke the way peers
// got wrong: the lookup misses and reads the active record, the revoke
// commits and invalidates, and only then does the lookup fill the cache.
// The stale fill must never be served.
func TestRevokeRacingCacheFill(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{})
	h := apikey.HashOf(ck.Secret.Reveal())

	revoked := false
	f.s.testHookBeforeFill = func() {
		if revoked {
			return
		}
		revoked = true
		if _, err := f.s.RevokeKey(t.Context(), ck.ID); err != nil {
			t.Errorf("RevokeKey: %v", err)
		}
	}
	// The racing lookup itself got the record it read before the revoke:
	// it was in flight when the revoke happened.
	if c := f.lookup(t, ck.Secret.Reveal()); c == nil || c.Status != authz.StatusActive {
		t.Fatalf("racing lookup = %+v, want the active record it read", c)
	}
	f.s.testHookBeforeFill = nil
	// Make sure ristretto has applied the stale Set: without the generation
	// check it would now be served.
	f.s.cache.pos.Wait()
	if e, ok := f.s.cache.pos.Get(cacheKey(h)); !ok || e.cred.Status != authz.StatusActive {
		t.Fatalf("stale entry not in ristretto (ok=%v): the test no longer reproduces the race", ok)
	}
	for i := 0; i < 3; i++ {
		if c := f.lookup(t, ck.Secret.Reveal()); c == nil || c.Status != authz.StatusRevoked {
			t.Fatalf("lookup %d after revoke returned %+v, want the revoked record", i, c)
		}
	}
}

// TestRevokeUnderConcurrentLookups: once RevokeKey returns, no lookup that
// starts afterwards sees the key active, while lookups race the revoke.
func TestRevokeUnderConcurrentLookups(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{})
	h := apikey.HashOf(ck.Secret.Reveal())
	const workers, warm, after = 8, 200, 2000
	var (
		revoked  atomic.Bool
		bad      atomic.Int64
		warmedUp sync.WaitGroup
		done     sync.WaitGroup
	)
	warmedUp.Add(workers)
	done.Add(workers)
	for g := 0; g < workers; g++ {
		go func() {
			defer done.Done()
			n, left := 0, after
			for left > 0 {
				started := revoked.Load()
				c, _, err := f.s.LookupKey(context.Background(), h)
				if err != nil {
					t.Error(err)
					return
				}
				if started && c.Status != authz.StatusRevoked {
					bad.Add(1)
				}
				if n++; n == warm {
					warmedUp.Done()
				}
				if started {
					left--
				}
			}
		}()
	}
	warmedUp.Wait()
	if _, err := f.s.RevokeKey(t.Context(), ck.ID); err != nil {
		t.Fatal(err)
	}
	revoked.Store(true)
	done.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d lookups started after the revoke returned saw the key active", n)
	}
}

func TestExpiry(t *testing.T) {
	f := newFixture(t, Options{})
	at := f.clock.Now().Add(time.Hour)
	ck := f.create(t, KeySpec{ExpiresAt: &at})
	if c := f.lookupWarm(t, ck.Secret.Reveal()); !c.ExpiresAt.Equal(at) {
		t.Fatalf("ExpiresAt = %v, want %v", c.ExpiresAt, at)
	}
	k, _ := f.s.Key(t.Context(), ck.ID)
	if k.StateAt(f.clock.Now()) != StateActive {
		t.Fatal("fresh key not active")
	}
	f.clock.Add(time.Hour)
	if k.StateAt(f.clock.Now()) != StateExpired {
		t.Fatal("key not expired at its expiry")
	}
	later := f.clock.Now().Add(24 * time.Hour)
	if _, err := f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{ExpiresAt: &later}); err != nil {
		t.Fatal(err)
	}
	if c := f.lookup(t, ck.Secret.Reveal()); !c.ExpiresAt.Equal(later) {
		t.Fatalf("extended ExpiresAt = %v, want %v", c.ExpiresAt, later)
	}
	if _, err := f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{ClearExpiry: true}); err != nil {
		t.Fatal(err)
	}
	if c := f.lookup(t, ck.Secret.Reveal()); !c.ExpiresAt.IsZero() {
		t.Fatalf("cleared ExpiresAt = %v", c.ExpiresAt)
	}
}

func TestRotate(t *testing.T) {
	f := newFixture(t, Options{})
	at := f.clock.Now().Add(30 * 24 * time.Hour)
	old := f.create(t, KeySpec{OrgID: f.org.ID, Name: "Bot", Scopes: []string{"chat:write"}, Tier: "enterprise", ExpiresAt: &at, Metadata: map[string]string{"team": "x"}})
	f.lookupWarm(t, old.Secret.Reveal())
	f.clock.Add(24 * time.Hour)

	nk, err := f.s.RotateKey(t.Context(), old.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if nk.ID == old.ID || nk.Secret.Reveal() == old.Secret.Reveal() {
		t.Fatal("rotation returned the old key")
	}
	if nk.Name != "Bot" || nk.OrgID != f.org.ID || nk.Tier != "enterprise" || len(nk.Scopes) != 1 || nk.Metadata["team"] != "x" {
		t.Fatalf("rotated key lost settings: %+v", nk.Key)
	}
	if want := f.clock.Now().Add(30 * 24 * time.Hour); !nk.ExpiresAt.Equal(want) {
		t.Fatalf("rotated key expires %v, want the old lifetime from now %v", nk.ExpiresAt, want)
	}
	if c := f.lookup(t, old.Secret.Reveal()); c.Status != authz.StatusRevoked {
		t.Fatalf("old key after rotation without grace: %+v", c)
	}
	if c := f.lookup(t, nk.Secret.Reveal()); c == nil || c.Status != authz.StatusActive {
		t.Fatalf("new key after rotation: %+v", c)
	}
	if _, err := f.s.RotateKey(t.Context(), old.ID, 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("rotating a revoked key = %v, want ErrConflict", err)
	}

	// With a grace period the old key works until it ends.
	nk2, err := f.s.RotateKey(t.Context(), nk.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := f.lookup(t, nk.Secret.Reveal())
	if c.Status != authz.StatusActive || !c.RevokesAt.Equal(f.clock.Now().Add(time.Hour)) {
		t.Fatalf("old key during grace: %+v", c)
	}
	k, _ := f.s.Key(t.Context(), nk.ID)
	if k.RotatedTo != nk2.ID || k.StateAt(f.clock.Now()) != StateActive {
		t.Fatalf("old key during grace: %+v", k)
	}
	f.clock.Add(time.Hour)
	if k.StateAt(f.clock.Now()) != StateRevoked {
		t.Fatal("old key not revoked when grace ended")
	}
	if _, err := f.s.RotateKey(t.Context(), nk.ID, time.Hour); !errors.Is(err, ErrConflict) {
		t.Fatalf("rotating a key already in grace = %v, want ErrConflict", err)
	}
	past := f.clock.Now().Add(-time.Second)
	if _, err := f.s.UpdateKey(t.Context(), nk2.ID, KeyUpdate{ExpiresAt: &past}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("update to a past expiry = %v, want ErrInvalid", err)
	}
	// Revoking during grace ends it at once.
	nk3, _ := f.s.RotateKey(t.Context(), nk2.ID, time.Hour)
	_ = nk3
	if _, err := f.s.RevokeKey(t.Context(), nk2.ID); err != nil {
		t.Fatal(err)
	}
	if c := f.lookup(t, nk2.Secret.Reveal()); c.Status != authz.StatusRevoked || !c.RevokesAt.Equal(f.clock.Now()) {
		t.Fatalf("revoke during grace: %+v", c)
	}
}

func TestOrgKeyLimit(t *testing.T) {
	f := newFixture(t, Options{})
	var keys []CreatedKey
	for i := 0; i < 5; i++ {
		keys = append(keys, f.create(t, KeySpec{OrgID: f.org.ID}))
	}
	_, err := f.s.CreateKey(t.Context(), KeySpec{TenantID: f.tenant.ID, OrgID: f.org.ID, Name: "sixth"})
	if !errors.Is(err, ErrOrgKeyLimit) {
		t.Fatalf("6th org key = %v, want ErrOrgKeyLimit", err)
	}
	// Tenant-level keys and other orgs are not limited by it.
	f.create(t, KeySpec{})
	other, _ := f.s.CreateOrg(t.Context(), f.tenant.ID, "Other")
	f.create(t, KeySpec{OrgID: other.ID})
	// Import counts too.
	if _, err := f.s.ImportKey(t.Context(), Import{KeySpec: KeySpec{TenantID: f.tenant.ID, OrgID: f.org.ID, Name: "imp"}, Raw: apikey.NewSecret("legacy-key-0123456789")}); !errors.Is(err, ErrOrgKeyLimit) {
		t.Fatalf("import past the limit = %v, want ErrOrgKeyLimit", err)
	}
	// Deactivating one frees a place; reactivating it past the limit fails.
	if _, err := f.s.UpdateKey(t.Context(), keys[0].ID, KeyUpdate{Status: new(authz.StatusInactive)}); err != nil {
		t.Fatal(err)
	}
	f.create(t, KeySpec{OrgID: f.org.ID, Name: "replacement"})
	if _, err := f.s.UpdateKey(t.Context(), keys[0].ID, KeyUpdate{Status: new(authz.StatusActive)}); !errors.Is(err, ErrOrgKeyLimit) {
		t.Fatalf("reactivating past the limit = %v, want ErrOrgKeyLimit", err)
	}
	// Revoking frees a place; an expired key does not count either.
	if _, err := f.s.RevokeKey(t.Context(), keys[1].ID); err != nil {
		t.Fatal(err)
	}
	soon := f.clock.Now().Add(time.Minute)
	if _, err := f.s.UpdateKey(t.Context(), keys[2].ID, KeyUpdate{ExpiresAt: &soon}); err != nil {
		t.Fatal(err)
	}
	f.create(t, KeySpec{OrgID: f.org.ID})
	f.clock.Add(time.Minute)
	f.create(t, KeySpec{OrgID: f.org.ID})
	// Un-expiring a key brings it back into the count, like reactivating.
	if _, err := f.s.UpdateKey(t.Context(), keys[2].ID, KeyUpdate{ClearExpiry: true}); !errors.Is(err, ErrOrgKeyLimit) {
		t.Fatalf("un-expiring past the limit = %v, want ErrOrgKeyLimit", err)
	}
	// In a full org a rotation with a grace period is refused: the old key
	// keeps working beside the new one until the grace ends, so both count.
	// Without grace the new key takes the old one's place, so a full org
	// can still rotate away a key that leaked.
	if _, err := f.s.RotateKey(t.Context(), keys[3].ID, time.Hour); !errors.Is(err, ErrOrgKeyLimit) || !strings.Contains(err.Error(), "rotate without a grace period") {
		t.Fatalf("rotation with grace in a full org = %v, want ErrOrgKeyLimit saying to rotate without grace", err)
	}
	if _, err := f.s.RotateKey(t.Context(), keys[3].ID, 0); err != nil {
		t.Fatalf("rotation without grace in a full org: %v", err)
	}
	if _, err := f.s.CreateKey(t.Context(), KeySpec{TenantID: f.tenant.ID, OrgID: f.org.ID, Name: "x"}); !errors.Is(err, ErrOrgKeyLimit) {
		t.Fatalf("org not full after rotation = %v", err)
	}

	// The limit is configurable.
	g := newFixture(t, Options{MaxOrgKeys: 2})
	g.create(t, KeySpec{OrgID: g.org.ID})
	g.create(t, KeySpec{OrgID: g.org.ID})
	if _, err := g.s.CreateKey(t.Context(), KeySpec{TenantID: g.tenant.ID, OrgID: g.org.ID, Name: "third"}); !errors.Is(err, ErrOrgKeyLimit) {
		t.Fatalf("3rd key with limit 2 = %v", err)
	}
}

// usableOrgKeys counts the keys of org that a Check would let through now,
// by trying every secret handed out in it, and checks the store's own count
// (keys listed as active) agrees.
func (f *fixture) usableOrgKeys(t *testing.T, org string, secrets []string) int {
	t.Helper()
	now := f.clock.Now()
	n := 0
	for _, raw := range secrets {
		c := f.lookup(t, raw)
		if c == nil || c.OrgID != org || c.Status != authz.StatusActive ||
			!c.RevokesAt.IsZero() && !now.Before(c.RevokesAt) || !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt) {
			continue
		}
		n++
	}
	p, err := f.s.ListKeys(t.Context(), ListFilter{OrgID: org, State: StateActive, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Keys) != n {
		t.Fatalf("%d secrets work, but the store lists %d active keys", n, len(p.Keys))
	}
	return n
}

// TestRotationGraceKeepsOrgLimit replays the attack on the org limit:
// rotating every key with a grace period, again and again, used to leave
// the old keys working outside the count (10 usable keys in an org limited
// to 5 after one round). The usable keys never exceed the limit now, and
// the grace periods that were refused were refused as the org limit.
func TestRotationGraceKeepsOrgLimit(t *testing.T) {
	const limit = 5
	f := newFixture(t, Options{MaxOrgKeys: limit})
	var secrets, ids []string // ids: the keys not yet rotated
	for range limit - 1 {
		k := f.create(t, KeySpec{OrgID: f.org.ID})
		secrets = append(secrets, k.Secret.Reveal())
		ids = append(ids, k.ID)
	}
	rotated, refused := 0, 0
	for round := range 6 {
		for i, id := range ids {
			nk, err := f.s.RotateKey(t.Context(), id, 24*time.Hour)
			switch {
			case err == nil:
				rotated++
				ids[i] = nk.ID
				secrets = append(secrets, nk.Secret.Reveal())
			case errors.Is(err, ErrOrgKeyLimit):
				refused++
			default:
				t.Fatalf("round %d: rotate: %v", round, err)
			}
			if n := f.usableOrgKeys(t, f.org.ID, secrets); n > limit {
				t.Fatalf("round %d: %d usable keys in an org limited to %d", round, n, limit)
			}
		}
		// Creating keys and rotating without grace stay within it too.
		if k, err := f.s.CreateKey(t.Context(), KeySpec{TenantID: f.tenant.ID, OrgID: f.org.ID, Name: "more"}); err == nil {
			secrets = append(secrets, k.Secret.Reveal())
			ids = append(ids, k.ID)
		} else if !errors.Is(err, ErrOrgKeyLimit) {
			t.Fatal(err)
		}
		nk, err := f.s.RotateKey(t.Context(), ids[0], 0)
		if err != nil {
			t.Fatalf("round %d: rotation without grace: %v", round, err)
		}
		ids[0] = nk.ID
		secrets = append(secrets, nk.Secret.Reveal())
		if n := f.usableOrgKeys(t, f.org.ID, secrets); n > limit {
			t.Fatalf("round %d: %d usable keys in an org limited to %d", round, n, limit)
		}
		f.clock.Add(6 * time.Hour)
	}
	if rotated == 0 || refused == 0 {
		t.Fatalf("%d rotations with grace went through and %d were refused; want some of each", rotated, refused)
	}
}

// TestRotationCannotReviveExpiredKeys: an expired key is outside the org's
// count, and its successor would be a usable key, so rotating it needs a
// free place like creating a key does.
func TestRotationCannotReviveExpiredKeys(t *testing.T) {
	f := newFixture(t, Options{MaxOrgKeys: 2})
	soon := f.clock.Now().Add(time.Minute)
	expiring := f.create(t, KeySpec{OrgID: f.org.ID, ExpiresAt: &soon})
	f.clock.Add(time.Minute)
	f.create(t, KeySpec{OrgID: f.org.ID})
	f.create(t, KeySpec{OrgID: f.org.ID})
	for _, grace := range []time.Duration{0, time.Hour} {
		if _, err := f.s.RotateKey(t.Context(), expiring.ID, grace); !errors.Is(err, ErrOrgKeyLimit) {
			t.Fatalf("rotating an expired key (grace %v) in a full org = %v, want ErrOrgKeyLimit", grace, err)
		}
	}
	// An inactive key's successor is inactive: no place needed.
	g := newFixture(t, Options{MaxOrgKeys: 1})
	paused := g.create(t, KeySpec{OrgID: g.org.ID})
	if _, err := g.s.UpdateKey(t.Context(), paused.ID, KeyUpdate{Status: new(authz.StatusInactive)}); err != nil {
		t.Fatal(err)
	}
	g.create(t, KeySpec{OrgID: g.org.ID})
	nk, err := g.s.RotateKey(t.Context(), paused.ID, time.Hour)
	if err != nil || nk.Status != authz.StatusInactive {
		t.Fatalf("rotating an inactive key in a full org = %+v, %v; want an inactive successor", nk.Key, err)
	}
}

func TestMaxRotationGrace(t *testing.T) {
	f := newFixture(t, Options{})
	k := f.create(t, KeySpec{})
	_, err := f.s.RotateKey(t.Context(), k.ID, 87600*time.Hour)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "maximum of 168h") {
		t.Fatalf("grace of 87600h = %v, want ErrInvalid naming the maximum of 168h", err)
	}
	if _, err := f.s.RotateKey(t.Context(), k.ID, DefaultMaxRotationGrace+time.Second); !errors.Is(err, ErrInvalid) {
		t.Fatalf("grace a second over 7 days = %v, want ErrInvalid", err)
	}
	if _, err := f.s.RotateKey(t.Context(), k.ID, DefaultMaxRotationGrace); err != nil {
		t.Fatalf("grace of exactly 7 days: %v", err)
	}
	if c := f.lookup(t, k.Secret.Reveal()); !c.RevokesAt.Equal(f.clock.Now().Add(DefaultMaxRotationGrace)) {
		t.Fatalf("old key revokes at %v", c.RevokesAt)
	}

	g := newFixture(t, Options{MaxRotationGrace: 90 * time.Minute})
	gk := g.create(t, KeySpec{})
	if _, err := g.s.RotateKey(t.Context(), gk.ID, 2*time.Hour); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "maximum of 1h30m") {
		t.Fatalf("grace of 2h with a maximum of 90m = %v", err)
	}
	// Negative: no maximum.
	h := newFixture(t, Options{MaxRotationGrace: -1})
	if _, err := h.s.RotateKey(t.Context(), h.create(t, KeySpec{}).ID, 87600*time.Hour); err != nil {
		t.Fatalf("grace of 87600h without a maximum: %v", err)
	}
}

func TestRegenerateInSlot(t *testing.T) {
	f := newFixture(t, Options{MaxOrgKeys: 1})
	first := f.create(t, KeySpec{OrgID: f.org.ID, Slot: "production"})
	f.lookupWarm(t, first.Secret.Reveal())
	// The org is at its limit of 1, but regenerating replaces the slot's key.
	second := f.create(t, KeySpec{OrgID: f.org.ID, Slot: "production"})
	if c := f.lookup(t, first.Secret.Reveal()); c.Status != authz.StatusRevoked {
		t.Fatalf("previous slot key after regenerate: %+v", c)
	}
	if c := f.lookup(t, second.Secret.Reveal()); c == nil || c.Status != authz.StatusActive {
		t.Fatalf("new slot key: %+v", c)
	}
	// Slots are per org (and tenant): another org's slot of the same name is separate.
	other, _ := f.s.CreateOrg(t.Context(), f.tenant.ID, "Other")
	third := f.create(t, KeySpec{OrgID: other.ID, Slot: "production"})
	if c := f.lookup(t, second.Secret.Reveal()); c.Status != authz.StatusActive {
		t.Fatal("a slot in another org revoked this org's key")
	}
	// With the org full, rotating a slot's key needs no grace period;
	// regenerating keeps working.
	if _, err := f.s.RotateKey(t.Context(), third.ID, time.Hour); !errors.Is(err, ErrOrgKeyLimit) {
		t.Fatalf("rotation with grace in a full org = %v, want ErrOrgKeyLimit", err)
	}
	// Rotation moves the slot to the new key.
	rot, err := f.s.RotateKey(t.Context(), third.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	fourth := f.create(t, KeySpec{OrgID: other.ID, Slot: "production"})
	if c := f.lookup(t, rot.Secret.Reveal()); c.Status != authz.StatusRevoked {
		t.Fatal("regenerating after a rotation did not revoke the rotated key")
	}
	_ = fourth
}

func TestImport(t *testing.T) {
	f := newFixture(t, Options{})
	// An AlfaOne-style key without Keygate's checksum, imported raw.
	raw := "ak_live_a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6"
	k, err := f.s.ImportKey(t.Context(), Import{KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "migrated", Environment: "live"}, Raw: apikey.NewSecret(raw)})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Imported || k.DisplayPrefix != "ak_live_a1b2" {
		t.Fatalf("imported = %+v", k)
	}
	if c := f.lookup(t, raw); c == nil || c.ID != k.ID {
		t.Fatal("imported raw key not found")
	}
	if _, err := f.s.ImportKey(t.Context(), Import{KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "again"}, Raw: apikey.NewSecret(raw)}); !errors.Is(err, ErrConflict) {
		t.Fatalf("importing the same key twice = %v, want ErrConflict", err)
	}
	// By hash: the holder's key works though Keygate never saw it.
	secret := "sk_test_hashonly_0123456789abcdef"
	h := apikey.HashOf(secret)
	hk, err := f.s.ImportKey(t.Context(), Import{KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "hashed", Environment: "test"}, SHA256: hexOf(h[:]), DisplayPrefix: "sk_test_hash"})
	if err != nil {
		t.Fatal(err)
	}
	if c := f.lookup(t, secret); c == nil || c.ID != hk.ID || c.Environment != "test" {
		t.Fatalf("hash-imported key lookup = %+v", c)
	}
	// A Keygate-format key keeps its own environment.
	gen, _ := apikey.MustFormat("ak").Generate("test")
	gk, err := f.s.ImportKey(t.Context(), Import{KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "from other keygate"}, Raw: apikey.NewSecret(gen)})
	if err != nil || gk.Environment != "test" {
		t.Fatalf("import of a test key = %+v, %v", gk, err)
	}
	for name, im := range map[string]Import{
		"neither":      {KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "x"}},
		"both":         {KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "x"}, Raw: apikey.NewSecret(secret + "1"), SHA256: hexOf(h[:])},
		"short hash":   {KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "x"}, SHA256: "abcd"},
		"short raw":    {KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "x"}, Raw: apikey.NewSecret("short")},
		"raw w/ comma": {KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "x"}, Raw: apikey.NewSecret("abcdefghijklmnop,q")},
		"env mismatch": {KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "x", Environment: "live"}, Raw: apikey.NewSecret(func() string { k, _ := apikey.MustFormat("ak").Generate("test"); return k }())},
	} {
		if _, err := f.s.ImportKey(t.Context(), im); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: ImportKey = %v, want ErrInvalid", name, err)
		}
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	f := newFixture(t, Options{LastUsedFlush: time.Hour})
	active := f.create(t, KeySpec{OrgID: f.org.ID, Scopes: []string{"s"}})
	revoked := f.create(t, KeySpec{})
	if _, err := f.s.RevokeKey(t.Context(), revoked.ID); err != nil {
		t.Fatal(err)
	}
	c := f.lookup(t, active.Secret.Reveal())
	used := f.clock.Now()
	f.s.KeyUsed(c, used)
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.s.LookupKey(context.Background(), apikey.HashOf(active.Secret.Reveal())); !errors.Is(err, ErrClosed) {
		t.Fatalf("lookup after Close = %v, want ErrClosed", err)
	}

	f.open(t, Options{})
	if c := f.lookup(t, active.Secret.Reveal()); c == nil || c.Status != authz.StatusActive || c.ScopesHeader != "s" {
		t.Fatalf("active key after restart: %+v", c)
	}
	if c := f.lookup(t, revoked.Secret.Reveal()); c == nil || c.Status != authz.StatusRevoked {
		t.Fatalf("revoked key after restart: %+v", c)
	}
	k, err := f.s.Key(t.Context(), active.ID)
	if err != nil {
		t.Fatal(err)
	}
	if k.LastUsedAt == nil || !k.LastUsedAt.Equal(used) {
		t.Fatalf("last used after restart = %v, want %v (flushed on Close)", k.LastUsedAt, used)
	}
	if ts, _ := f.s.Tenants(t.Context()); len(ts) != 1 || ts[0].ID != f.tenant.ID {
		t.Fatalf("tenants after restart: %+v", ts)
	}
	if os, _ := f.s.Orgs(t.Context(), f.tenant.ID); len(os) != 1 || os[0].ID != f.org.ID {
		t.Fatalf("orgs after restart: %+v", os)
	}
}

func TestSecondProcessCannotOpen(t *testing.T) {
	f := newFixture(t, Options{})
	if _, err := Open(f.path, Options{OpenTimeout: 50 * time.Millisecond}); err == nil {
		t.Fatal("a second Open of a file in use succeeded")
	}
}

func TestLastUsedBatched(t *testing.T) {
	f := newFixture(t, Options{LastUsedFlush: time.Hour})
	ck := f.create(t, KeySpec{})
	c := f.lookup(t, ck.Secret.Reveal())
	t1 := f.clock.Now()
	f.s.KeyUsed(c, t1)
	f.s.KeyUsed(c, t1.Add(-time.Minute)) // out of order: must not move back
	if k, _ := f.s.Key(t.Context(), ck.ID); k.LastUsedAt != nil {
		t.Fatal("last used written before a flush: Checks would write to disk")
	}
	if err := f.s.Flush(); err != nil {
		t.Fatal(err)
	}
	if k, _ := f.s.Key(t.Context(), ck.ID); k.LastUsedAt == nil || !k.LastUsedAt.Equal(t1) {
		t.Fatalf("last used after flush = %v, want %v", k.LastUsedAt, t1)
	}
	// A key deleted before the flush is skipped, not resurrected.
	f.s.KeyUsed(c, t1.Add(time.Minute))
	if err := f.s.DeleteKey(t.Context(), ck.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Key(t.Context(), ck.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key after flush: %v", err)
	}
}

func TestListPagination(t *testing.T) {
	f := newFixture(t, Options{MaxOrgKeys: -1})
	other, _ := f.s.CreateTenant(t.Context(), "Other")
	want := map[string]bool{}
	for i := 0; i < 7; i++ {
		k := f.create(t, KeySpec{OrgID: f.org.ID})
		want[k.ID] = true
	}
	f.create(t, KeySpec{}) // tenant-level, not in the org
	f.create(t, KeySpec{TenantID: other.ID})
	revoked := f.create(t, KeySpec{OrgID: f.org.ID})
	want[revoked.ID] = true
	if _, err := f.s.RevokeKey(t.Context(), revoked.ID); err != nil {
		t.Fatal(err)
	}

	seen := map[string]bool{}
	cursor := ""
	pages := 0
	for {
		p, err := f.s.ListKeys(t.Context(), ListFilter{OrgID: f.org.ID, Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, k := range p.Keys {
			if seen[k.ID] {
				t.Fatalf("key %s listed twice", k.ID)
			}
			seen[k.ID] = true
		}
		if !p.HasMore {
			break
		}
		cursor = p.NextCursor
	}
	if len(seen) != len(want) || pages != 3 {
		t.Fatalf("listed %d keys in %d pages, want %d in 3", len(seen), pages, len(want))
	}
	for id := range want {
		if !seen[id] {
			t.Fatalf("key %s not listed", id)
		}
	}
	all, _ := f.s.ListKeys(t.Context(), ListFilter{Limit: 1000})
	byTenant, _ := f.s.ListKeys(t.Context(), ListFilter{TenantID: f.tenant.ID, Limit: 1000})
	rev, _ := f.s.ListKeys(t.Context(), ListFilter{TenantID: f.tenant.ID, State: StateRevoked})
	if len(all.Keys) != 10 || len(byTenant.Keys) != 9 || len(rev.Keys) != 1 || rev.Keys[0].ID != revoked.ID {
		t.Fatalf("all=%d tenant=%d revoked=%d", len(all.Keys), len(byTenant.Keys), len(rev.Keys))
	}
	if _, err := f.s.ListKeys(t.Context(), ListFilter{State: "gone"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad status filter = %v", err)
	}
	counts, err := f.s.CountKeys(t.Context())
	if err != nil || counts[StateActive] != 9 || counts[StateRevoked] != 1 {
		t.Fatalf("CountKeys = %v, %v", counts, err)
	}
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

func TestReadOnly(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{})
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(f.path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if c, found, err := ro.LookupKey(context.Background(), apikey.HashOf(ck.Secret.Reveal())); err != nil || !found || c.ID != ck.ID {
		t.Fatalf("read-only lookup = %v, %v, %v", c, found, err)
	}
	if _, err := ro.CreateTenant(t.Context(), "x"); err == nil {
		t.Fatal("a read-only store accepted a write")
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.db"), Options{ReadOnly: true}); err == nil {
		t.Fatal("read-only open created a store")
	}
}

// TestRawKeyNeverStored: the file holds each key's hash and display prefix
// and never the key, so lookups can only go by hash and the raw key is
// never compared, byte by byte or otherwise.
func TestRawKeyNeverStored(t *testing.T) {
	f := newFixture(t, Options{})
	var raws []string
	for i := 0; i < 5; i++ {
		raws = append(raws, f.create(t, KeySpec{}).Secret.Reveal())
	}
	rot, err := f.s.RotateKey(t.Context(), f.create(t, KeySpec{}).ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	raws = append(raws, rot.Secret.Reveal())
	imported := "legacy_secret_0123456789abcdef"
	if _, err := f.s.ImportKey(t.Context(), Import{KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "i"}, Raw: apikey.NewSecret(imported)}); err != nil {
		t.Fatal(err)
	}
	raws = append(raws, imported)
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range raws {
		if bytes.Contains(file, []byte(raw)) || bytes.Contains(file, []byte(raw[len(raw)-20:])) {
			t.Fatalf("the store file contains (part of) a raw key")
		}
		h := apikey.HashOf(raw)
		if !bytes.Contains(file, h[:]) {
			t.Fatalf("the store file lacks a key's hash: lookups could not find it")
		}
		if !bytes.Contains(file, []byte(apikey.DisplayPrefix(raw))) {
			t.Fatalf("the store file lacks a display prefix")
		}
	}
}
