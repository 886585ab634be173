package admin_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// TestErrorsShowOnlyTheirMessage: a refused request shows the client the
// message the store wrote for it, without the operation names and sentinel
// texts its error wraps ("rotate key: invalid: "), and the log keeps the
// whole error.
func TestErrorsShowOnlyTheirMessage(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, _, k := f.seed()
	tests := []struct {
		name, method, path, body string
		status                   int
		code, msg, logged        string
	}{
		{"grace over the maximum", "POST", "/v1/keys/" + k.ID + "/rotate", `{"grace_period":"87600h"}`, 400, "invalid_request",
			"grace period 87600h is longer than the maximum of 168h", "rotate key: invalid: grace period 87600h"},
		{"unknown tier", "POST", "/v1/keys", `{"tenant_id":"` + tn.ID + `","name":"n","tier":"gold"}`, 400, "invalid_request",
			`tier "gold": want one of ["standard" "enterprise"]`, `create key: invalid: tier \"gold\"`},
		{"unknown key", "GET", "/v1/keys/nope", "", 404, "not_found", `key "nope" not found`, `get key: key \"nope\": not found`},
		{"unknown tenant's orgs", "GET", "/v1/orgs?tenant_id=nope", "", 404, "not_found", `tenant "nope" not found`, `tenant \"nope\": not found`},
		{"not metered", "POST", "/v1/keys/" + k.ID + "/credits", `{"add":5}`, 409, "not_metered",
			"key " + k.ID + " has no credit balance (set a balance first)", "key has no credit balance: key " + k.ID},
		{"bad status", "PATCH", "/v1/keys/" + k.ID, `{"status":"revoked"}`, 400, "invalid_request",
			`status "revoked": want active or inactive (revoke a key with revoke)`, "update key: invalid: status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(tt.method, tt.path, tt.body)
			if e := r.errBody(t); r.status != tt.status || e.Code != tt.code || e.Error != tt.msg {
				t.Errorf("%d %s %q, want %d %s %q", r.status, e.Code, e.Error, tt.status, tt.code, tt.msg)
			}
			if logs := f.logs.String(); !strings.Contains(logs, tt.logged) {
				t.Errorf("log does not keep the cause %q:\n%s", tt.logged, logs)
			}
		})
	}
}

// TestUnmarkedErrorsShowAGenericMessage: a store error that marks no
// message for the client is answered with its status, its code and a
// generic message; its text is logged, not shown.
func TestUnmarkedErrorsShowAGenericMessage(t *testing.T) {
	b, f := failingFixture(t)
	for _, c := range []struct {
		kind          error
		status        int
		code, generic string
	}{
		{keystore.ErrInvalid, 400, "invalid_request", "invalid request"},
		{keystore.ErrNotFound, 404, "not_found", "not found"},
		{keystore.ErrConflict, 409, "conflict", "the request conflicts with the stored state"},
		{keystore.ErrOrgKeyLimit, 409, "org_key_limit", "the organization already has its maximum of usable keys"},
		{keystore.ErrNotMetered, 409, "not_metered", "the key has no credit balance"},
	} {
		err := fmt.Errorf("backend detail db7f: %w", c.kind)
		b.fail.Store(&err)
		r := f.do("POST", "/v1/tenants", `{"name":"Acme"}`)
		if e := r.errBody(t); r.status != c.status || e.Code != c.code || e.Error != c.generic {
			t.Errorf("%v: %d %+v, want %d %s %q", c.kind, r.status, e, c.status, c.code, c.generic)
		}
		if strings.Contains(string(r.body), "db7f") {
			t.Errorf("%v: the body shows the cause: %s", c.kind, r.body)
		}
	}
	if !strings.Contains(f.logs.String(), "backend detail db7f") {
		t.Errorf("the cause is not logged:\n%s", f.logs.String())
	}
}
