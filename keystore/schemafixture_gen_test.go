package keystore

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore/apikey"
)

// fixtureClock is the clock the schema fixtures were written under, and
// that the upgrade test reads it under: balances with a refill schedule and
// keys in a rotation's grace period then read the same at any later date.
var fixtureClock = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// fixtureSecrets is testdata/schema<N>.secrets.json: the secrets of the
// fixture's keys and admin token, so the upgrade test can prove they still
// authenticate. Test data only; these keys exist nowhere else.
type fixtureSecrets struct {
	Keys       map[string]string `json:"keys"` // key id -> raw key
	AdminToken string            `json:"admin_token"`
	AdminID    string            `json:"admin_token_id"`
}

// TestWriteSchemaFixture writes testdata/schema<N>.db with the code of
// schema N, together with the keys as that code stored them, in ListKeys
// order (schema<N>.keys.json), and their secrets (schema<N>.secrets.json).
// schema1.db was written at commit 041799d (before the binary key record),
// schema2.db at 123cb2b (before the record moved under its hash). It is
// kept to show how the files were made; run with KEYGATE_WRITE_FIXTURE=N
// at that schema's commit to write one again. Today's code writes a schema
// the upgrade tests do not start from, so it refuses to run here.
func TestWriteSchemaFixture(t *testing.T) {
	ver := os.Getenv("KEYGATE_WRITE_FIXTURE")
	if ver == "" {
		t.Skip("writes testdata/schema<N>.db; set KEYGATE_WRITE_FIXTURE=N (at schema N's commit) to rewrite it")
	}
	if string(schemaVersion) != ver {
		t.Fatalf("this build writes schema %s: the fixture of schema %s must be written by that schema's code", schemaVersion, ver)
	}
	ctx := t.Context()
	dir := "testdata"
	name := "schema" + ver
	path := filepath.Join(dir, name+".db")
	_ = os.Remove(path)
	bk, err := OpenBolt(path, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	now := fixtureClock
	s, err := New(bk, Options{Now: func() time.Time { return now }, MaxOrgKeys: -1})
	if err != nil {
		t.Fatal(err)
	}
	secrets := fixtureSecrets{Keys: map[string]string{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var tenants []Tenant
	for _, name := range []string{"Acme", "Globex", "Initech"} {
		tn, err := s.CreateTenant(ctx, name)
		must(err)
		tenants = append(tenants, tn)
	}
	org, err := s.CreateOrg(ctx, tenants[0].ID, "Research")
	must(err)
	org2, err := s.CreateOrg(ctx, tenants[1].ID, "Sales")
	must(err)
	_, _, err = s.PutUser(ctx, tenants[0].ID, "alice@example.com", UserSpec{Name: "Alice", Metadata: map[string]string{"plan": "pro"},
		Limits: map[string]ratelimit.Limit{"minute": {Requests: 50, Window: time.Minute}}})
	must(err)
	_, _, err = s.PutUser(ctx, tenants[1].ID, "bob", UserSpec{})
	must(err)
	for _, o := range []Owner{{Kind: AccountTenant, TenantID: tenants[0].ID}, {Kind: AccountOrg, TenantID: tenants[0].ID, OrgID: org.ID},
		{Kind: AccountUser, TenantID: tenants[0].ID, UserID: "alice@example.com"}} {
		_, err := s.SetAccountCredits(ctx, o, 1000)
		must(err)
	}
	_, err = s.SetAccountRefill(ctx, Owner{Kind: AccountTenant, TenantID: tenants[0].ID}, &Refill{Interval: "monthly", Day: 15, Amount: 5000})
	must(err)
	admin, err := s.CreateAdminToken(ctx, AdminTokenSpec{Name: "ops", Scopes: []string{"keys:read", "keys:write"}, TenantID: tenants[0].ID})
	must(err)
	secrets.AdminToken, secrets.AdminID = admin.Secret.Reveal(), admin.ID

	create := func(spec KeySpec) CreatedKey {
		t.Helper()
		k, err := s.CreateKey(ctx, spec)
		must(err)
		secrets.Keys[k.ID] = k.Secret.Reveal()
		return k
	}
	credits := func(n int64) *int64 { return &n }
	far := time.Date(2099, 1, 2, 3, 4, 5, 6000, time.UTC)
	// A plain key, and one with every optional field.
	create(KeySpec{TenantID: tenants[0].ID, Name: "plain"})
	full := create(KeySpec{TenantID: tenants[0].ID, OrgID: org.ID, UserID: "alice@example.com", Name: "everything", Environment: apikey.EnvTest,
		Tier: "enterprise", Scopes: []string{"vault:read", "vault:*"}, ExpiresAt: &far, Metadata: map[string]string{"team": "blue", "ticket": "KG-1"},
		CreditsRemaining: credits(250), AllowedCIDRs: []string{"10.0.0.0/8", "2001:db8::1"},
		Limits: map[string]ratelimit.Limit{"minute": {Requests: 100, Window: time.Minute}, "burst": {Requests: 10, Window: time.Second, Burst: 20, Algorithm: ratelimit.TokenBucket},
			"hour": {}},
		Refill: &Refill{Interval: "daily", Amount: 300}})
	// A monthly refill on the 31st; a balance set twice (epoch 2).
	monthly := create(KeySpec{TenantID: tenants[1].ID, OrgID: org2.ID, Name: "monthly", Refill: &Refill{Interval: "monthly", Day: 31, Amount: 9}})
	_, err = s.SetCredits(ctx, monthly.ID, 5)
	must(err)
	_, err = s.SetCredits(ctx, monthly.ID, 7)
	must(err)
	// Inactive, revoked, expiring soon.
	inactive := create(KeySpec{TenantID: tenants[1].ID, Name: "inactive"})
	st := authz.StatusInactive
	_, err = s.UpdateKey(ctx, inactive.ID, KeyUpdate{Status: &st})
	must(err)
	revoked := create(KeySpec{TenantID: tenants[1].ID, Name: "revoked", CreditsRemaining: credits(3)})
	_, err = s.RevokeKey(ctx, revoked.ID)
	must(err)
	soon := now.Add(time.Hour)
	create(KeySpec{TenantID: tenants[2].ID, Name: "expires", ExpiresAt: &soon})
	// A rotated pair in grace (credits move to the successor), rotated
	// twice so the chain has a key spending its successor's balance.
	rot := create(KeySpec{TenantID: tenants[0].ID, OrgID: org.ID, Name: "rotating", CreditsRemaining: credits(40), Scopes: []string{}})
	next, err := s.RotateKey(ctx, rot.ID, 48*time.Hour)
	must(err)
	secrets.Keys[next.ID] = next.Secret.Reveal()
	next2, err := s.RotateKey(ctx, next.ID, 24*time.Hour)
	must(err)
	secrets.Keys[next2.ID] = next2.Secret.Reveal()
	// A slot: the second key revokes the first.
	create(KeySpec{TenantID: tenants[0].ID, OrgID: org.ID, Name: "slot one", Slot: "default"})
	create(KeySpec{TenantID: tenants[0].ID, OrgID: org.ID, Name: "slot two", Slot: "default"})
	// Imported: raw in Keygate's format, raw foreign, and by hash.
	raw := genKey(t, s)
	k, err := s.ImportKey(ctx, Import{KeySpec: KeySpec{TenantID: tenants[2].ID, Name: "imported raw"}, Raw: apikey.NewSecret(raw)})
	must(err)
	secrets.Keys[k.ID] = raw
	foreign := "sk_foreign_0123456789abcdef"
	k, err = s.ImportKey(ctx, Import{KeySpec: KeySpec{TenantID: tenants[2].ID, Name: "imported foreign", Metadata: map[string]string{"from": "legacy"}}, Raw: apikey.NewSecret(foreign)})
	must(err)
	secrets.Keys[k.ID] = foreign
	byHash := "sk_hashed_fedcba9876543210"
	h := apikey.HashOf(byHash)
	k, err = s.ImportKey(ctx, Import{KeySpec: KeySpec{TenantID: tenants[2].ID, Name: "imported by hash"}, SHA256: hex.EncodeToString(h[:]), DisplayPrefix: "sk_hashed"})
	must(err)
	secrets.Keys[k.ID] = byHash
	var ims []Import
	for i := range 30 {
		r := genKey(t, s)
		ims = append(ims, Import{KeySpec: KeySpec{TenantID: tenants[i%3].ID, Name: "bulk"}, Raw: apikey.NewSecret(r)})
	}
	res, err := s.ImportKeys(ctx, ims)
	must(err)
	for i, r := range res {
		must(r.Err)
		secrets.Keys[r.Key.ID] = ims[i].Raw.Reveal()
	}
	// Last used and usage counts, flushed; an audit entry.
	c, ok, err := s.LookupKey(ctx, apikey.HashOf(secrets.Keys[full.ID]))
	if err != nil || !ok {
		t.Fatalf("look up: %v %v", ok, err)
	}
	s.KeyUsed(c, now)
	s.KeyDecided(c, now, authz.Use{Status: 200, Admitted: true, Credits: 2})
	_, err = s.AppendAudit(ctx, AuditEntry{Action: "keys.create", Targets: map[string]string{"key_id": full.ID}, TenantID: tenants[0].ID})
	must(err)
	must(s.Flush())
	// A reserved slice left behind, as by a process that crashed holding
	// it: the store's own reservation, then no Close.
	c, ok, err = s.LookupKey(ctx, apikey.HashOf(secrets.Keys[monthly.ID]))
	if err != nil || !ok {
		t.Fatalf("look up: %v %v", ok, err)
	}
	_, _, err = s.Spend(ctx, c, 1)
	must(err)

	var keys []Key
	for cursor := ""; ; {
		p, err := s.ListKeys(ctx, ListFilter{Cursor: cursor, Limit: 7})
		must(err)
		// The records as stored, without this process's unspent slice
		// (a process that opens the file later holds none).
		for _, k := range p.Keys {
			must(s.view(ctx, func(tx Tx) error {
				sk, err := getKey(tx, k.ID)
				keys = append(keys, sk.Key)
				return err
			}))
		}
		if !p.HasMore {
			break
		}
		cursor = p.NextCursor
	}
	// No flush, no return of slices: a crash.
	s.usage.once.Do(func() { close(s.usage.done); <-s.usage.stopped })
	must(bk.Close())
	writeJSONFile(t, filepath.Join(dir, name+".keys.json"), keys)
	writeJSONFile(t, filepath.Join(dir, name+".secrets.json"), secrets)
	t.Logf("wrote %s: %d keys", path, len(keys))
}

func writeJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
