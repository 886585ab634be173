package admin_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// auditList is GET /v1/audit's answer.
type auditList struct {
	Data       []keystore.AuditEntry `json:"data"`
	NextCursor string                `json:"next_cursor"`
	HasMore    bool                  `json:"has_more"`
}

// audit lists the whole log through the API, page by page.
func (f *fixture) audit(query string) []keystore.AuditEntry {
	f.t.Helper()
	var all []keystore.AuditEntry
	cursor := ""
	for range 100 {
		q := query
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		resp := f.do("GET", "/v1/audit?limit=2&"+q, "")
		if resp.status != http.StatusOK {
			f.t.Fatalf("GET /v1/audit?%s: %d %s", q, resp.status, resp.body)
		}
		var page auditList
		resp.decode(f.t, &page)
		all = append(all, page.Data...)
		if !page.HasMore {
			return all
		}
		cursor = page.NextCursor
	}
	f.t.Fatal("audit paging does not end")
	return nil
}

func auditFixture(t *testing.T) *fixture {
	return newFixture(t, admin.Options{Audit: true})
}

func TestAuditRecordsEveryWriteOnce(t *testing.T) {
	f := auditFixture(t)
	var tn keystore.Tenant
	resp := f.do("POST", "/v1/tenants", `{"name":"Acme"}`)
	resp.decode(t, &tn)
	var org keystore.Org
	f.do("POST", "/v1/orgs", fmt.Sprintf(`{"tenant_id":%q,"name":"EU"}`, tn.ID)).decode(t, &org)
	var created struct {
		ID     string `json:"id"`
		Secret string `json:"key"`
	}
	resp = f.do("POST", "/v1/keys", fmt.Sprintf(`{"tenant_id":%q,"org_id":%q,"name":"k"}`, tn.ID, org.ID))
	resp.decode(t, &created)
	if created.Secret == "" {
		t.Fatalf("create key: %d %s", resp.status, resp.body)
	}
	if r := f.do("POST", "/v1/keys/"+created.ID+"/revoke", ""); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	// A refused write is recorded too; a read that succeeds is not.
	if r := f.do("POST", "/v1/keys/no-such-key/revoke", ""); r.status != http.StatusNotFound {
		t.Fatalf("revoke unknown: %d", r.status)
	}
	f.do("GET", "/v1/keys/"+created.ID, "")
	f.do("GET", "/v1/tenants", "")

	got := f.audit("")
	type row struct {
		Action, Outcome string
		Status          int
		Targets         string
		TenantID, OrgID string
	}
	var rows []row
	for _, e := range got {
		rows = append(rows, row{e.Action, e.Outcome, e.Status, fmt.Sprint(e.Targets), e.TenantID, e.OrgID})
		if e.TokenName != "bootstrap" || e.TokenID != "" || e.RequestID == "" || e.ClientAddr != "127.0.0.1" || e.Time.IsZero() {
			t.Errorf("entry %+v: want the bootstrap token, a request id, the client address and a time", e)
		}
	}
	want := []row{
		{"tenants.create", "ok", 201, fmt.Sprint(map[string]string{"tenant_id": tn.ID}), tn.ID, ""},
		{"orgs.create", "ok", 201, fmt.Sprint(map[string]string{"org_id": org.ID}), tn.ID, org.ID},
		{"keys.create", "ok", 201, fmt.Sprint(map[string]string{"key_id": created.ID}), tn.ID, org.ID},
		{"keys.revoke", "ok", 200, fmt.Sprint(map[string]string{"key_id": created.ID}), tn.ID, org.ID},
		{"keys.revoke", "refused", 404, fmt.Sprint(map[string]string{"key_id": "no-such-key"}), "", ""},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Fatalf("audit\n%+v\nwant\n%+v", rows, want)
	}

	// The key's secret is nowhere in the log, stored or logged.
	raw, _ := json.Marshal(got)
	if strings.Contains(string(raw), created.Secret) || strings.Contains(f.logs.String(), created.Secret) {
		t.Fatal("the key's secret reached the audit log")
	}
	if strings.Contains(string(raw), token) || strings.Contains(f.logs.String(), token) {
		t.Fatal("the admin token reached the audit log")
	}
	// Each entry is also one Info line.
	if n := strings.Count(f.logs.String(), `"msg":"admin audit"`); n != len(want) {
		t.Fatalf("%d audit log lines, want %d", n, len(want))
	}

	// Filters.
	if es := f.audit("target=" + created.ID); len(es) != 2 {
		t.Fatalf("by target: %d entries", len(es))
	}
	if es := f.audit("action=keys.create"); len(es) != 1 || es[0].Targets["key_id"] != created.ID {
		t.Fatalf("by action: %+v", es)
	}
	if es := f.audit("action=keys"); len(es) != 3 {
		t.Fatalf("by kind of action: %d entries", len(es))
	}
	future := url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339))
	if es := f.audit("since=" + future); len(es) != 0 {
		t.Fatalf("since the future: %d entries", len(es))
	}
	if es := f.audit("until=" + future); len(es) != len(want) {
		t.Fatalf("until the future: %d entries", len(es))
	}
}

func TestAuditRecordsRefusals(t *testing.T) {
	f := auditFixture(t)
	resp := f.doAuth("GET", "/v1/keys", "", "Bearer wrong-token")
	if resp.status != http.StatusUnauthorized {
		t.Fatalf("status %d", resp.status)
	}
	f.doAuth("POST", "/v1/tenants", `{"name":"x"}`, "")
	// A write that fails the request's own checks is recorded; so is a write
	// to no route.
	f.do("POST", "/v1/tenants", `{"nme":"typo"}`)
	f.do("POST", "/v1/nowhere", `{}`)
	// A read refused on its own terms is not.
	f.do("GET", "/v1/keys/nope", "")
	f.do("GET", "/v1/audit?since=yesterday", "")

	es := f.audit("")
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("%s %s %d %s token=%q", e.Action, e.Outcome, e.Status, e.Route, e.TokenName))
	}
	want := []string{
		`admin.unauthorized refused 401 GET /v1/keys token=""`,
		`admin.unauthorized refused 401 POST /v1/tenants token=""`,
		`tenants.create refused 400 POST /v1/tenants token="bootstrap"`,
		`admin.no_route refused 404  token="bootstrap"`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("audit\n%q\nwant\n%q", got, want)
	}
	if es[0].TokenID != "" || es[0].Targets != nil || strings.Contains(f.logs.String(), "wrong-token") {
		t.Fatalf("a 401 names no token: %+v", es[0])
	}
}

func TestAuditRequestID(t *testing.T) {
	f := auditFixture(t)
	for _, tc := range []struct {
		sent string
		kept bool
	}{
		{"req-0123_abc.def:1", true},
		{"", false},
		{"has space", false},
		{`quo"te`, false},
		{"ünï", false},
		{strings.Repeat("a", 129), false},
	} {
		req, _ := http.NewRequest("POST", f.srv.URL+"/v1/tenants", strings.NewReader(`{"name":"A"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		if tc.sent != "" {
			req.Header["X-Request-Id"] = []string{tc.sent}
		}
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		id := resp.Header.Get("X-Request-Id")
		if tc.kept != (id == tc.sent) || id == "" {
			t.Errorf("sent %q, answered %q (kept %v)", tc.sent, id, tc.kept)
		}
		es := f.audit("")
		if last := es[len(es)-1]; last.RequestID != id {
			t.Errorf("entry's request id %q, answered %q", last.RequestID, id)
		}
	}
	// Every answer carries one, reads and probes included.
	for _, path := range []string{"/v1/tenants", "/healthz"} {
		if r := f.do("GET", path, ""); r.header.Get("X-Request-Id") == "" {
			t.Errorf("GET %s: no X-Request-Id", path)
		}
	}
}

func TestAuditListBadParams(t *testing.T) {
	f := auditFixture(t)
	for _, q := range []string{"since=yesterday", "until=2026-13-01T00:00:00Z", "limit=0", "limit=x", "limit=5000", "cursor=nope", "bogus=1",
		"since=2026-11-30T12:00:00Z&until=2026-11-30T11:00:00Z"} {
		if r := f.do("GET", "/v1/audit?"+q, ""); r.status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", q, r.status, r.body)
		}
	}
}

// TestAuditAppendOnly: the API offers no way to change or remove an entry.
func TestAuditAppendOnly(t *testing.T) {
	f := auditFixture(t)
	f.do("POST", "/v1/tenants", `{"name":"A"}`)
	id := url.PathEscape(f.audit("")[0].ID)
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		for _, path := range []string{"/v1/audit", "/v1/audit/" + id} {
			if r := f.do(m, path, `{}`); r.status != http.StatusMethodNotAllowed && r.status != http.StatusNotFound {
				t.Errorf("%s %s: %d", m, path, r.status)
			}
		}
	}
	if es := f.audit("action=tenants.create"); len(es) != 1 {
		t.Fatalf("entries: %+v", es)
	}
}

// TestAuditDisabled: without Options.Audit nothing is recorded and the
// route does not exist.
func TestAuditDisabled(t *testing.T) {
	f := newFixture(t, admin.Options{})
	f.do("POST", "/v1/tenants", `{"name":"A"}`)
	if r := f.do("GET", "/v1/audit", ""); r.status != http.StatusNotFound {
		t.Fatalf("GET /v1/audit: %d", r.status)
	}
	p, err := f.store.ListAudit(t.Context(), keystore.AuditFilter{}, "", 0)
	if err != nil || len(p.Entries) != 0 {
		t.Fatalf("entries %+v, %v", p.Entries, err)
	}
}

// TestAuditUnauthenticatedFlood: anyone who reaches the port can send
// requests without a token; past a burst they are logged but not stored,
// so they cannot turn into as many store writes.
func TestAuditUnauthenticatedFlood(t *testing.T) {
	admin.SetAnonAuditLimit(t, 0.001, 5)
	f := auditFixture(t)
	const sent = 12
	for range sent {
		f.doAuth("POST", "/v1/tenants", `{"name":"x"}`, "Bearer nope")
	}
	stored := len(f.audit("action=admin.unauthorized"))
	if stored != 5 {
		t.Fatalf("%d of %d unauthenticated requests stored", stored, sent)
	}
	logs := f.logs.String()
	if n := strings.Count(logs, `"msg":"admin audit"`); n != sent {
		t.Fatalf("%d audit lines, want %d", n, sent)
	}
	if n := strings.Count(logs, `"stored":false`); n != sent-stored {
		t.Fatalf("%d lines say not stored, want %d", n, sent-stored)
	}
}

// TestAuditScopedTokens: an admin token's entries name it (id and name,
// never the token); a request refused for want of a scope is recorded; a
// token bound to a tenant lists only the entries about its tenant.
func TestAuditScopedTokens(t *testing.T) {
	f := auditFixture(t)
	var acme, globex keystore.Tenant
	f.do("POST", "/v1/tenants", `{"name":"Acme"}`).decode(t, &acme)
	f.do("POST", "/v1/tenants", `{"name":"Globex"}`).decode(t, &globex)
	var tok struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	resp := f.do("POST", "/v1/admin-tokens", fmt.Sprintf(`{"name":"ci","scopes":["keys:write","keys:read","audit:read"],"tenant_id":%q}`, acme.ID))
	resp.decode(t, &tok)
	if resp.status != http.StatusCreated || tok.Token == "" {
		t.Fatalf("create admin token: %d %s", resp.status, resp.body)
	}
	bearer := "Bearer " + tok.Token
	var key struct {
		ID string `json:"id"`
	}
	if r := f.doAuth("POST", "/v1/keys", fmt.Sprintf(`{"tenant_id":%q,"name":"k"}`, acme.ID), bearer); r.status != http.StatusCreated {
		t.Fatalf("create key with the token: %d %s", r.status, r.body)
	} else {
		r.decode(t, &key)
	}
	// No scope for tenants: refused, and recorded.
	if r := f.doAuth("POST", "/v1/tenants", `{"name":"x"}`, bearer); r.status != http.StatusForbidden {
		t.Fatalf("create tenant with the token: %d", r.status)
	}
	// A key of another tenant is out of its reach.
	var other struct {
		ID string `json:"id"`
	}
	f.do("POST", "/v1/keys", fmt.Sprintf(`{"tenant_id":%q,"name":"g"}`, globex.ID)).decode(t, &other)
	if r := f.doAuth("POST", "/v1/keys/"+other.ID+"/revoke", "", bearer); r.status != http.StatusForbidden && r.status != http.StatusNotFound {
		t.Fatalf("revoke out of reach: %d", r.status)
	}

	all := f.audit("")
	byToken := 0
	for _, e := range all {
		if e.TokenID != tok.ID {
			continue
		}
		byToken++
		if e.TokenName != "ci" || e.TenantID != acme.ID {
			t.Errorf("entry by the token: %+v", e)
		}
	}
	if byToken != 3 {
		t.Fatalf("%d entries by the token, want 3: %+v", byToken, all)
	}
	raw, _ := json.Marshal(all)
	if strings.Contains(string(raw), tok.Token) || strings.Contains(f.logs.String(), tok.Token) {
		t.Fatal("the admin token reached the audit log")
	}
	if es := f.audit("action=admin_tokens.create"); len(es) != 1 || es[0].Targets["admin_token_id"] != tok.ID {
		t.Fatalf("the token's creation: %+v", es)
	}

	// Listed with the bound token: its tenant's entries only.
	r := f.doAuth("GET", "/v1/audit?limit=1000", "", bearer)
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/audit with the token: %d %s", r.status, r.body)
	}
	var page auditList
	r.decode(t, &page)
	if len(page.Data) == 0 {
		t.Fatal("the bound token sees nothing")
	}
	for _, e := range page.Data {
		if e.TenantID != acme.ID {
			t.Errorf("the token bound to %s sees %+v", acme.ID, e)
		}
		if e.Targets["key_id"] == other.ID && e.TokenID == "" {
			t.Errorf("sees the other tenant's key: %+v", e)
		}
	}
}

// TestAuditRotation: a rotation names the old key and the new one.
func TestAuditRotation(t *testing.T) {
	f := auditFixture(t)
	var tn keystore.Tenant
	f.do("POST", "/v1/tenants", `{"name":"Acme"}`).decode(t, &tn)
	var old, rotated struct {
		ID string `json:"id"`
	}
	f.do("POST", "/v1/keys", fmt.Sprintf(`{"tenant_id":%q,"name":"k"}`, tn.ID)).decode(t, &old)
	if r := f.do("POST", "/v1/keys/"+old.ID+"/rotate", ""); r.status != http.StatusCreated {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	} else {
		r.decode(t, &rotated)
	}
	es := f.audit("action=keys.rotate")
	if len(es) != 1 || es[0].Targets["key_id"] != old.ID || es[0].Targets["new_key_id"] != rotated.ID || es[0].TenantID != tn.ID {
		t.Fatalf("rotation entry: %+v", es)
	}
	if es := f.audit("target=" + rotated.ID); len(es) != 1 {
		t.Fatalf("by the new key's id: %+v", es)
	}
}
