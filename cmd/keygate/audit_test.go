package main

import (
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/secret"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// newAuditCLIFixture is newCLIFixture with the audit log on, as serve has it.
func newAuditCLIFixture(t *testing.T) *cliFixture {
	t.Helper()
	s, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	h, err := admin.New(s, admin.Options{Token: secret.New(cliTestToken), Audit: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &cliFixture{t: t, store: s, url: srv.URL, env: map[string]string{"KEYGATE_ADMIN_TOKEN": cliTestToken}}
}

type auditOut struct {
	Data       []keystore.AuditEntry `json:"data"`
	NextCursor string                `json:"next_cursor"`
	HasMore    bool                  `json:"has_more"`
}

func TestCLIAuditList(t *testing.T) {
	f := newAuditCLIFixture(t)
	tn := f.tenant()
	var k keystore.Key
	f.json(&k, "keys", "create", "--tenant", tn.ID, "--name", "k")
	if _, stderr, err := f.run("keys", "revoke", k.ID); err != nil {
		t.Fatalf("revoke: %v %s", err, stderr)
	}

	var all auditOut
	f.json(&all, "audit", "list", "--all", "--limit", "1")
	var actions []string
	for _, e := range all.Data {
		actions = append(actions, e.Action)
	}
	if strings.Join(actions, " ") != "tenants.create keys.create keys.revoke" || all.HasMore {
		t.Fatalf("audit list --all: %v (has_more %v)", actions, all.HasMore)
	}

	var page auditOut
	f.json(&page, "audit", "list", "--limit", "2")
	if len(page.Data) != 2 || !page.HasMore || page.NextCursor == "" {
		t.Fatalf("first page: %+v", page)
	}
	var rest auditOut
	f.json(&rest, "audit", "list", "--cursor", page.NextCursor)
	if len(rest.Data) != 1 || rest.Data[0].Action != "keys.revoke" {
		t.Fatalf("after the cursor: %+v", rest)
	}

	var byTarget auditOut
	f.json(&byTarget, "audit", "list", "--target", k.ID, "--action", "keys", "--since", "1h", "--until", time.Now().Add(time.Hour).Format(time.RFC3339))
	if len(byTarget.Data) != 2 {
		t.Fatalf("by target: %+v", byTarget)
	}
	var none auditOut
	f.json(&none, "audit", "list", "--until", "1h")
	if len(none.Data) != 0 {
		t.Fatalf("until an hour ago: %+v", none)
	}

	stdout, stderr, err := f.run("audit", "list", "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "ACTION") || !strings.Contains(stdout, "tenants.create") || !strings.Contains(stdout, "tenant_id="+tn.ID) || !strings.Contains(stderr, "--cursor") {
		t.Fatalf("table:\n%s\nstderr: %s", stdout, stderr)
	}

	for _, args := range [][]string{{"audit", "list", "--since", "yesterday"}, {"audit", "list", "--limit", "0"}, {"audit", "list", "extra"}} {
		if _, _, err := f.run(args...); exitCode(err) != exitCode(errUsage) {
			t.Errorf("keygate %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
}
