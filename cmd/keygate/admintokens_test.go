package main

import (
	"strings"
	"testing"

	"github.com/keygate/keygate/keystore"
)

func TestCLIAdminTokens(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	var o keystore.Org
	f.json(&o, "orgs", "create", "--tenant", tn.ID, "--name", "EU")

	var created struct {
		keystore.AdminToken
		Token string `json:"token"`
	}
	f.json(&created, "admin-tokens", "create", "--name", "ci", "--scopes", "keys:read, keys:write", "--org", o.ID, "--expires-in", "24h")
	if created.Token == "" || created.OrgID != o.ID || created.TenantID != tn.ID || created.ExpiresAt == nil || len(created.Scopes) != 2 {
		t.Fatalf("create: %+v", created.AdminToken)
	}

	// The new token works from the CLI, within its org only.
	f.env = map[string]string{"KEYGATE_ADMIN_TOKEN": created.Token}
	var k struct {
		ID string `json:"id"`
	}
	f.json(&k, "keys", "create", "--tenant", tn.ID, "--org", o.ID, "--name", "k")
	if _, _, err := f.run("keys", "create", "--tenant", tn.ID, "--name", "tenant-level"); exitCode(err) != 6 {
		t.Fatalf("out of reach: exit %d (%v), want 6", exitCode(err), err)
	}
	if _, _, err := f.run("tenants", "create", "--name", "x"); err == nil || !strings.Contains(err.Error(), "insufficient_scope") {
		t.Fatalf("missing scope: %v", err)
	}
	f.env = map[string]string{"KEYGATE_ADMIN_TOKEN": cliTestToken}

	stdout, _, err := f.run("admin-tokens", "list")
	if err != nil || !strings.Contains(stdout, created.ID) || !strings.Contains(stdout, created.Prefix) || strings.Contains(stdout, created.Token) {
		t.Fatalf("list: %v\n%s", err, stdout)
	}
	stdout, _, err = f.run("admin-tokens", "create", "--name", "table", "--scopes", "tenants:read")
	if err != nil || !strings.Contains(stdout, "shown once") || !strings.Contains(stdout, "kga_live_") {
		t.Fatalf("create table: %v\n%s", err, stdout)
	}

	var rev struct {
		Revoked bool `json:"revoked"`
	}
	f.json(&rev, "admin-tokens", "revoke", created.ID)
	if !rev.Revoked {
		t.Fatal("revoke did not say so")
	}
	f.env = map[string]string{"KEYGATE_ADMIN_TOKEN": created.Token}
	if _, _, err := f.run("keys", "list"); exitCode(err) != 6 || !strings.Contains(err.Error(), "401") {
		t.Fatalf("revoked token: exit %d (%v)", exitCode(err), err)
	}
	f.env = map[string]string{"KEYGATE_ADMIN_TOKEN": cliTestToken}

	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{"admin-tokens", "create", "--name", "x"}, 2},
		{[]string{"admin-tokens", "create", "--scopes", "keys:read"}, 2},
		{[]string{"admin-tokens", "create", "--name", "x", "--scopes", "keys:read", "--expires-in", "-1h"}, 2},
		{[]string{"admin-tokens", "create", "--name", "x", "--scopes", "nope"}, 1},
		{[]string{"admin-tokens", "revoke"}, 2},
		{[]string{"admin-tokens", "revoke", created.ID}, 4},
	} {
		if _, _, err := f.run(tt.args...); exitCode(err) != tt.want {
			t.Errorf("keygate %s: exit %d (%v), want %d", strings.Join(tt.args, " "), exitCode(err), err, tt.want)
		}
	}
}
