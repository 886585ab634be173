package keystore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore/apikey"
)

func perMinute(n int) ratelimit.Limit { return ratelimit.Limit{Requests: n, Window: time.Minute} }

func TestUsersCRUD(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := t.Context()
	spec := UserSpec{Name: "Ada", Metadata: map[string]string{"plan": "pro"}, Limits: map[string]ratelimit.Limit{"per_minute": perMinute(100)}}
	u, created, err := f.s.PutUser(ctx, f.tenant.ID, "ada@example.com", spec)
	if err != nil || !created {
		t.Fatalf("PutUser = %+v, %v, %v", u, created, err)
	}
	if u.TenantID != f.tenant.ID || u.ID != "ada@example.com" || u.Name != "Ada" || !u.CreatedAt.Equal(f.clock.Now()) || !u.UpdatedAt.Equal(u.CreatedAt) {
		t.Fatalf("created user %+v", u)
	}
	f.clock.Add(time.Hour)
	u2, created, err := f.s.PutUser(ctx, f.tenant.ID, "ada@example.com", UserSpec{Name: "Ada L."})
	if err != nil || created {
		t.Fatalf("replace = %+v, %v, %v", u2, created, err)
	}
	if !u2.CreatedAt.Equal(u.CreatedAt) || !u2.UpdatedAt.Equal(f.clock.Now()) || u2.Limits != nil || u2.Metadata != nil {
		t.Fatalf("a put replaces the record and keeps created_at: %+v", u2)
	}
	got, err := f.s.User(ctx, f.tenant.ID, "ada@example.com")
	if err != nil || !reflect.DeepEqual(got, u2) {
		t.Fatalf("User = %+v, %v; want %+v", got, err, u2)
	}

	other, err := f.s.CreateTenant(ctx, "Other")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ tenant, user string }{
		{other.ID, "ada@example.com"}, // another tenant's user of the same id
		{f.tenant.ID, "nobody"},
		{"no-such-tenant", "ada@example.com"},
		{f.tenant.ID + "/ada@example.com", ""},
	} {
		if _, err := f.s.User(ctx, c.tenant, c.user); !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
			t.Errorf("User(%q, %q) = %v, want not found", c.tenant, c.user, err)
		}
	}
	if _, _, err := f.s.PutUser(ctx, "no-such-tenant", "u", UserSpec{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("PutUser in an unknown tenant: %v", err)
	}
	for _, bad := range []struct {
		user string
		spec UserSpec
	}{
		{"", UserSpec{}},
		{" padded", UserSpec{}},
		{strings.Repeat("u", maxIDLen+1), UserSpec{}},
		{"u", UserSpec{Name: "tab\there"}},
		{"u", UserSpec{Metadata: map[string]string{"": "x"}}},
	} {
		if _, _, err := f.s.PutUser(ctx, f.tenant.ID, bad.user, bad.spec); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutUser(%q, %+v) = %v, want ErrInvalid", bad.user, bad.spec, err)
		}
	}

	if err := f.s.DeleteUser(ctx, f.tenant.ID, "ada@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.User(ctx, f.tenant.ID, "ada@example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted user: %v", err)
	}
	if err := f.s.DeleteUser(ctx, f.tenant.ID, "ada@example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// TestListUsersPaging: pages follow user id order, the cursor neither
// skips nor repeats, and a user id with '/' stays in its tenant.
func TestListUsersPaging(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := t.Context()
	other, err := f.s.CreateTenant(ctx, "Other")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 7 {
		id := fmt.Sprintf("u%d/x", i)
		want = append(want, id)
		if _, _, err := f.s.PutUser(ctx, f.tenant.ID, id, UserSpec{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := f.s.PutUser(ctx, other.ID, "u0", UserSpec{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	cursor := ""
	for range 10 {
		p, err := f.s.ListUsers(ctx, f.tenant.ID, cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range p.Users {
			if u.TenantID != f.tenant.ID {
				t.Fatalf("listed another tenant's user %+v", u)
			}
			got = append(got, u.ID)
		}
		if !p.HasMore {
			break
		}
		cursor = p.NextCursor
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("listed %q, want %q", got, want)
	}
	if p, err := f.s.ListUsers(ctx, other.ID, "", 0); err != nil || len(p.Users) != 1 || p.HasMore {
		t.Fatalf("other tenant: %+v, %v", p, err)
	}
	if _, err := f.s.ListUsers(ctx, "no-such-tenant", "", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
	if _, err := f.s.ListUsers(ctx, f.tenant.ID, "", maxPageSize+1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized page: %v", err)
	}
}

func TestValidLimits(t *testing.T) {
	many := map[string]ratelimit.Limit{}
	for i := range ratelimit.MaxNamed + 1 {
		many[fmt.Sprint("l", i)] = perMinute(1)
	}
	for _, c := range []struct {
		name   string
		limits map[string]ratelimit.Limit
		want   string // substring of the error; empty: valid
	}{
		{"none", nil, ""},
		{"one", map[string]ratelimit.Limit{"per_minute": perMinute(100)}, ""},
		{"token bucket", map[string]ratelimit.Limit{"burst": {Requests: 600, Window: time.Minute, Algorithm: ratelimit.TokenBucket, Burst: 50}}, ""},
		{"off", map[string]ratelimit.Limit{"per_day": {}}, ""},
		{"off ignores the rest", map[string]ratelimit.Limit{"per_day": {Window: -time.Second, Burst: 3}}, ""},
		{"too many", many, "more than 8 limits"},
		{"bad name", map[string]ratelimit.Limit{"Per Minute": perMinute(1)}, "limit name"},
		{"negative", map[string]ratelimit.Limit{"x": {Requests: -1, Window: time.Minute}}, "or 0 to turn the limit off"},
		{"no window", map[string]ratelimit.Limit{"x": {Requests: 10}}, `limit "x": window`},
		{"negative burst", map[string]ratelimit.Limit{"x": {Requests: 10, Window: time.Minute, Burst: -1}}, "burst"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := validLimits(c.limits)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("err = %v, want ErrInvalid with %q", err, c.want)
			case c.want == "":
				for name, l := range out {
					if c.limits[name].Requests == 0 && l != (ratelimit.Limit{}) {
						t.Fatalf("an off limit is stored as %+v", l)
					}
				}
			}
		})
	}
}

// TestKeyLimits: a key's own limits are validated on create, import and
// update, stored, replaced and cleared by an update, and reach the
// credential sorted by name on the next lookup.
func TestKeyLimits(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := t.Context()
	ck := f.create(t, KeySpec{Limits: map[string]ratelimit.Limit{"per_minute": perMinute(100), "per_day": {}}})
	want := []authz.NamedLimit{{Name: "per_day"}, {Name: "per_minute", Limit: perMinute(100)}}
	if c := f.lookupWarm(t, ck.Secret.Reveal()); !reflect.DeepEqual(c.Limits, want) {
		t.Fatalf("credential limits %+v, want %+v", c.Limits, want)
	}
	k, err := f.s.Key(ctx, ck.ID)
	if err != nil || len(k.Limits) != 2 {
		t.Fatalf("stored limits %+v, %v", k.Limits, err)
	}
	if _, err := f.s.UpdateKey(ctx, ck.ID, KeyUpdate{Limits: &map[string]ratelimit.Limit{"burst": {Requests: 5, Window: time.Second, Algorithm: ratelimit.TokenBucket, Burst: 10}}}); err != nil {
		t.Fatal(err)
	}
	want = []authz.NamedLimit{{Name: "burst", Limit: ratelimit.Limit{Requests: 5, Window: time.Second, Algorithm: ratelimit.TokenBucket, Burst: 10}}}
	if c := f.lookupWarm(t, ck.Secret.Reveal()); !reflect.DeepEqual(c.Limits, want) {
		t.Fatalf("after update: %+v, want %+v", c.Limits, want)
	}
	if k, err := f.s.UpdateKey(ctx, ck.ID, KeyUpdate{Limits: &map[string]ratelimit.Limit{}}); err != nil || k.Limits != nil {
		t.Fatalf("clear: %+v, %v", k.Limits, err)
	}
	if c := f.lookup(t, ck.Secret.Reveal()); c.Limits != nil {
		t.Fatalf("after clear: %+v", c.Limits)
	}
	bad := map[string]ratelimit.Limit{"x": {Requests: 1}}
	if _, err := f.s.UpdateKey(ctx, ck.ID, KeyUpdate{Limits: &bad}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("update with a bad limit: %v", err)
	}
	if _, err := f.s.CreateKey(ctx, KeySpec{TenantID: f.tenant.ID, Name: "k", Limits: bad}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("create with a bad limit: %v", err)
	}
	if _, err := f.s.ImportKey(ctx, Import{KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "k", Limits: bad}, Raw: apikey.NewSecret("legacy_0123456789abcdef")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("import with a bad limit: %v", err)
	}
	if _, err := f.s.RevokeKey(ctx, ck.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.UpdateKey(ctx, ck.ID, KeyUpdate{Limits: &map[string]ratelimit.Limit{"x": perMinute(1)}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("limits of a revoked key changed: %v", err)
	}
}

// TestUserLimitsReachCredentials: a key's credential carries its user's
// limits, and every write to the user record (create, change, delete)
// shows on the next lookup of a cached key.
func TestUserLimitsReachCredentials(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := t.Context()
	mine := f.create(t, KeySpec{UserID: "ada"})
	other := f.create(t, KeySpec{UserID: "bob"})
	anon := f.create(t, KeySpec{})
	if c := f.lookupWarm(t, mine.Secret.Reveal()); c.UserLimits != nil {
		t.Fatalf("user without a record: %+v", c.UserLimits)
	}
	f.lookupWarm(t, other.Secret.Reveal())
	f.lookupWarm(t, anon.Secret.Reveal())

	if _, _, err := f.s.PutUser(ctx, f.tenant.ID, "ada", UserSpec{Limits: map[string]ratelimit.Limit{"per_minute": perMinute(10), "per_day": {}}}); err != nil {
		t.Fatal(err)
	}
	want := []authz.NamedLimit{{Name: "per_day"}, {Name: "per_minute", Limit: perMinute(10)}}
	if c := f.lookupWarm(t, mine.Secret.Reveal()); !reflect.DeepEqual(c.UserLimits, want) {
		t.Fatalf("after put: %+v, want %+v", c.UserLimits, want)
	}
	if c := f.lookup(t, other.Secret.Reveal()); c.UserLimits != nil {
		t.Fatalf("another user's key got %+v", c.UserLimits)
	}
	if c := f.lookup(t, anon.Secret.Reveal()); c.UserLimits != nil {
		t.Fatalf("a key without a user got %+v", c.UserLimits)
	}

	if _, _, err := f.s.PutUser(ctx, f.tenant.ID, "ada", UserSpec{Limits: map[string]ratelimit.Limit{"per_minute": perMinute(20)}}); err != nil {
		t.Fatal(err)
	}
	want = []authz.NamedLimit{{Name: "per_minute", Limit: perMinute(20)}}
	if c := f.lookupWarm(t, mine.Secret.Reveal()); !reflect.DeepEqual(c.UserLimits, want) {
		t.Fatalf("after change: %+v, want %+v", c.UserLimits, want)
	}
	if err := f.s.DeleteUser(ctx, f.tenant.ID, "ada"); err != nil {
		t.Fatal(err)
	}
	if c := f.lookup(t, mine.Secret.Reveal()); c.UserLimits != nil {
		t.Fatalf("after delete: %+v", c.UserLimits)
	}

	// A user's record in another tenant is another user.
	t2, err := f.s.CreateTenant(ctx, "Other")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.s.PutUser(ctx, t2.ID, "bob", UserSpec{Limits: map[string]ratelimit.Limit{"x": perMinute(1)}}); err != nil {
		t.Fatal(err)
	}
	if c := f.lookup(t, other.Secret.Reveal()); c.UserLimits != nil {
		t.Fatalf("another tenant's user record applied: %+v", c.UserLimits)
	}
}

// TestFollowerUsersInvalidate: another replica's write to a user record
// drops this replica's cached credentials.
func TestFollowerUsersInvalidate(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{UserID: "ada"})
	f.lookupWarm(t, ck.Secret.Reveal())
	follower{f.s}.Changed(bucketUsers, userKey(f.tenant.ID, "ada"), []byte(`{}`), nil)
	if _, ok := f.s.cache.get(apikey.HashOf(ck.Secret.Reveal())); ok {
		t.Fatal("a user write left a cached credential")
	}
}

// TestUsersCopied: store migrate carries user records.
func TestUsersCopied(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{UserID: "ada"})
	if _, _, err := f.s.PutUser(t.Context(), f.tenant.ID, "ada", UserSpec{Limits: map[string]ratelimit.Limit{"per_minute": perMinute(10)}}); err != nil {
		t.Fatal(err)
	}
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
	if st, err := Copy(context.Background(), dst, src); err != nil || st.Users != 1 {
		t.Fatalf("copied %+v, %v", st, err)
	}
	dst.Close()
	c, err := Open(dstPath, Options{Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cred := mustLookupCred(t, c, ck.Secret.Reveal()); len(cred.UserLimits) != 1 {
		t.Fatalf("user limits after copy: %+v", cred.UserLimits)
	}
}

// TestReadOnlyOlderFile: a file written before the users bucket existed
// opens read-only (keygate check) and its keys are found, without user
// limits; a writable open adds the bucket.
func TestReadOnlyOlderFile(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{UserID: "ada"})
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(f.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte(bucketUsers)) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	ro, err := Open(f.path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if c := mustLookupCred(t, ro, ck.Secret.Reveal()); c.UserLimits != nil {
		t.Fatalf("user limits from nowhere: %+v", c.UserLimits)
	}
	ro.Close()
	rw, err := Open(f.path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	if _, _, err := rw.PutUser(t.Context(), f.tenant.ID, "ada", UserSpec{}); err != nil {
		t.Fatalf("writable open did not add the bucket: %v", err)
	}
}
