package keystore

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate/keystore/apikey"
)

func TestValidCIDRs(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"none", nil, nil},
		{"empty list", []string{}, nil},
		{"bare IPv4", []string{"192.0.2.7"}, []string{"192.0.2.7/32"}},
		{"bare IPv6", []string{"2001:DB8::1"}, []string{"2001:db8::1/128"}},
		{"IPv4 CIDR", []string{"10.0.0.0/8"}, []string{"10.0.0.0/8"}},
		{"host bits masked", []string{"10.1.2.3/8", "2001:db8::1/32"}, []string{"10.0.0.0/8", "2001:db8::/32"}},
		{"mapped address", []string{"::ffff:10.0.0.1"}, []string{"10.0.0.1/32"}},
		{"mapped network", []string{"::ffff:10.1.2.3/104"}, []string{"10.0.0.0/8"}},
		{"whole mapped range", []string{"::ffff:0:0/96"}, []string{"0.0.0.0/0"}},
		// A prefix shorter than /96 covers more than the mapped range.
		{"wider than mapped range", []string{"::ffff:0:0/80"}, []string{"::/80"}},
		{"everything", []string{"0.0.0.0/0", "::/0"}, []string{"0.0.0.0/0", "::/0"}},
		{"dedupe after canonical form", []string{"10.0.0.1", "10.0.0.1/32", "::ffff:10.0.0.1", "10.0.0.0/8", "10.9.9.9/8"},
			[]string{"10.0.0.1/32", "10.0.0.0/8"}},
		{"order kept", []string{"198.51.100.0/24", "192.0.2.0/24"}, []string{"198.51.100.0/24", "192.0.2.0/24"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := validCIDRs(tt.in)
			if err != nil {
				t.Fatalf("validCIDRs(%q): %v", tt.in, err)
			}
			if d := cmp.Diff(got, tt.want); d != "" {
				t.Errorf("validCIDRs(%q) (-got +want):\n%s", tt.in, d)
			}
		})
	}
}

func TestValidCIDRsRefuses(t *testing.T) {
	tooMany := make([]string, maxAllowedCIDRs+1)
	for i := range tooMany {
		tooMany[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String()
	}
	long := strings.Repeat("1", 10_000)
	tests := []struct {
		name     string
		in       []string
		wantText string // the error names the bad entry
	}{
		{"empty entry", []string{"10.0.0.1", ""}, `""`},
		{"not an address", []string{"example.com"}, `"example.com"`},
		{"octet out of range", []string{"10.0.0.256"}, `"10.0.0.256"`},
		{"leading zero", []string{"010.0.0.1"}, `"010.0.0.1"`},
		{"IPv4 bits out of range", []string{"10.0.0.0/33"}, `"10.0.0.0/33"`},
		{"IPv6 bits out of range", []string{"2001:db8::/129"}, `"2001:db8::/129"`},
		{"no bits", []string{"10.0.0.0/"}, `"10.0.0.0/"`},
		{"two slashes", []string{"10.0.0.0/8/8"}, `"10.0.0.0/8/8"`},
		{"space", []string{" 10.0.0.1"}, `" 10.0.0.1"`},
		{"zone", []string{"fe80::1%eth0"}, `"fe80::1%eth0"`},
		{"zone in CIDR", []string{"fe80::1%eth0/64"}, `"fe80::1%eth0/64"`},
		{"port", []string{"10.0.0.1:80"}, `"10.0.0.1:80"`},
		{"range", []string{"10.0.0.1-10.0.0.9"}, `"10.0.0.1-10.0.0.9"`},
		{"control character", []string{"10.0.0.1\n"}, `"10.0.0.1\n"`},
		{"too long", []string{long}, strings.Repeat("1", maxCIDRLen) + `..."`},
		{"too many", tooMany, "more than 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := validCIDRs(tt.in)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("validCIDRs = %q, %v; want ErrInvalid", got, err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not name %s", err, tt.wantText)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}

func prefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

var cmpPrefix = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

// TestAllowedCIDRs follows an allowlist through create, lookup, update,
// clear and rotate; every change is seen by the very next lookup.
func TestAllowedCIDRs(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{AllowedCIDRs: []string{"192.0.2.7", "10.1.2.3/8", "::ffff:192.0.2.7"}})
	if d := cmp.Diff(ck.AllowedCIDRs, []string{"192.0.2.7/32", "10.0.0.0/8"}); d != "" {
		t.Errorf("created AllowedCIDRs (-got +want):\n%s", d)
	}
	if k, err := f.s.Key(t.Context(), ck.ID); err != nil || !cmp.Equal(k.AllowedCIDRs, ck.AllowedCIDRs) {
		t.Errorf("stored AllowedCIDRs = %q, %v; want %q", k.AllowedCIDRs, err, ck.AllowedCIDRs)
	}
	c := f.lookupWarm(t, ck.Secret.Reveal())
	if d := cmp.Diff(c.AllowedIPs, prefixes(t, "192.0.2.7/32", "10.0.0.0/8"), cmpPrefix); d != "" {
		t.Errorf("credential AllowedIPs (-got +want):\n%s", d)
	}

	u, err := f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{AllowedCIDRs: &[]string{"2001:db8::/32"}})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(u.AllowedCIDRs, []string{"2001:db8::/32"}); d != "" {
		t.Errorf("updated AllowedCIDRs (-got +want):\n%s", d)
	}
	if c := f.lookup(t, ck.Secret.Reveal()); !cmp.Equal(c.AllowedIPs, prefixes(t, "2001:db8::/32"), cmpPrefix) {
		t.Errorf("lookup after update: AllowedIPs = %v", c.AllowedIPs)
	}

	// Other updates leave the list alone; a bad list changes nothing.
	f.lookupWarm(t, ck.Secret.Reveal())
	if u, err = f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{Name: new("renamed")}); err != nil || !cmp.Equal(u.AllowedCIDRs, []string{"2001:db8::/32"}) {
		t.Errorf("rename: AllowedCIDRs = %q, %v", u.AllowedCIDRs, err)
	}
	if _, err := f.s.UpdateKey(t.Context(), ck.ID, KeyUpdate{AllowedCIDRs: &[]string{"10.0.0.0/8", "nope"}}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("bad update = %v, want ErrInvalid naming \"nope\"", err)
	}
	if c := f.lookup(t, ck.Secret.Reveal()); !cmp.Equal(c.AllowedIPs, prefixes(t, "2001:db8::/32"), cmpPrefix) {
		t.Errorf("lookup after refused update: AllowedIPs = %v", c.AllowedIPs)
	}

	// Rotation must not widen where a key works.
	rot, err := f.s.RotateKey(t.Context(), ck.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(rot.AllowedCIDRs, []string{"2001:db8::/32"}) {
		t.Errorf("rotated AllowedCIDRs = %q", rot.AllowedCIDRs)
	}
	if c := f.lookup(t, rot.Secret.Reveal()); !cmp.Equal(c.AllowedIPs, prefixes(t, "2001:db8::/32"), cmpPrefix) {
		t.Errorf("rotated key's AllowedIPs = %v", c.AllowedIPs)
	}

	f.lookupWarm(t, rot.Secret.Reveal())
	if u, err = f.s.UpdateKey(t.Context(), rot.ID, KeyUpdate{AllowedCIDRs: &[]string{}}); err != nil || u.AllowedCIDRs != nil {
		t.Fatalf("clear: AllowedCIDRs = %q, %v", u.AllowedCIDRs, err)
	}
	if c := f.lookup(t, rot.Secret.Reveal()); c.AllowedIPs != nil {
		t.Errorf("lookup after clear: AllowedIPs = %v, want none", c.AllowedIPs)
	}
}

func TestAllowedCIDRsOnCreateAndImport(t *testing.T) {
	f := newFixture(t, Options{})
	if _, err := f.s.CreateKey(t.Context(), KeySpec{TenantID: f.tenant.ID, Name: "k", AllowedCIDRs: []string{"10.0.0.0/40"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("create with a bad CIDR = %v, want ErrInvalid", err)
	}
	raw := "legacy_0123456789abcdef0123456789"
	im := Import{KeySpec: KeySpec{TenantID: f.tenant.ID, Name: "legacy", AllowedCIDRs: []string{"bad"}}, Raw: apikey.NewSecret(raw)}
	if _, err := f.s.ImportKey(t.Context(), im); !errors.Is(err, ErrInvalid) {
		t.Errorf("import with a bad CIDR = %v, want ErrInvalid", err)
	}
	im.AllowedCIDRs = []string{"2001:db8::7"}
	k, err := f.s.ImportKey(t.Context(), im)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(k.AllowedCIDRs, []string{"2001:db8::7/128"}) {
		t.Errorf("imported AllowedCIDRs = %q", k.AllowedCIDRs)
	}
	if c := f.lookup(t, raw); !cmp.Equal(c.AllowedIPs, prefixes(t, "2001:db8::7/128"), cmpPrefix) {
		t.Errorf("imported key's AllowedIPs = %v", c.AllowedIPs)
	}
	if c := f.lookup(t, f.create(t, KeySpec{}).Secret.Reveal()); c.AllowedIPs != nil {
		t.Errorf("key without an allowlist has AllowedIPs %v", c.AllowedIPs)
	}
}

// TestDamagedAllowlistFailsClosed: an entry that no longer parses must not
// vanish from the list, which could leave the key working from anywhere.
func TestDamagedAllowlistFailsClosed(t *testing.T) {
	k := Key{AllowedCIDRs: []string{"garbage"}}
	c := k.credential()
	if len(c.AllowedIPs) != 1 {
		t.Fatalf("AllowedIPs = %v, want one entry that matches nothing", c.AllowedIPs)
	}
	for _, a := range []string{"10.0.0.1", "::1", "0.0.0.0"} {
		if c.AllowedIPs[0].Contains(netip.MustParseAddr(a)) {
			t.Errorf("damaged entry contains %s", a)
		}
	}
}

func TestOrgTenant(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()

	tenant, found, err := f.s.OrgTenant(ctx, f.org.ID)
	if err != nil || !found || tenant != f.tenant.ID {
		t.Fatalf("OrgTenant(known) = %q, %v, %v; want %q, true, nil", tenant, found, err, f.tenant.ID)
	}
	if _, ok := f.s.orgTenants.Load(f.org.ID); !ok {
		t.Error("known org not remembered")
	}
	// Served from memory, even once the context is done: no I/O is left
	// to cut short.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if tenant, found, err := f.s.OrgTenant(done, f.org.ID); err != nil || !found || tenant != f.tenant.ID {
		t.Errorf("OrgTenant(cached, cancelled) = %q, %v, %v", tenant, found, err)
	}

	for _, id := range []string{"", "nope", f.tenant.ID, strings.Repeat("x", 100_000)} {
		if tenant, found, err := f.s.OrgTenant(ctx, id); err != nil || found || tenant != "" {
			t.Errorf("OrgTenant(%.20q) = %q, %v, %v; want not found", id, tenant, found, err)
		}
	}
	n := 0
	f.s.orgTenants.Range(func(_, _ any) bool { n++; return true })
	if n != 1 {
		t.Errorf("%d orgs remembered, want only the one found", n)
	}

	// Not found is not remembered: an org created afterwards is found.
	o2, err := f.s.CreateOrg(t.Context(), f.tenant.ID, "Acme US")
	if err != nil {
		t.Fatal(err)
	}
	if _, found, err := f.s.OrgTenant(done, o2.ID); !errors.Is(err, context.Canceled) || found {
		t.Errorf("OrgTenant(uncached, cancelled) = %v, %v; want context.Canceled", found, err)
	}
	if tenant, found, err := f.s.OrgTenant(ctx, o2.ID); err != nil || !found || tenant != f.tenant.ID {
		t.Errorf("OrgTenant(new org) = %q, %v, %v", tenant, found, err)
	}

	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{f.org.ID, "nope"} {
		if _, found, err := f.s.OrgTenant(ctx, id); !errors.Is(err, ErrClosed) || found {
			t.Errorf("OrgTenant(%q) after Close = %v, %v; want ErrClosed", id, found, err)
		}
	}
}
