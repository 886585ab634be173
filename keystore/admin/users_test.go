package admin_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

func TestUsersRoutes(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, _, _ := f.seed()
	base := "/v1/tenants/" + tn.ID + "/users/"
	user := "ada/x@example.com" // a '/' in a user id travels escaped
	path := base + url.PathEscape(user)

	r := f.do("PUT", path, `{"name":"Ada","metadata":{"plan":"pro"},"limits":{"per_minute":{"requests":100,"window":"1m"},"per_day":{"requests":0,"window":"0s"}}}`)
	if r.status != http.StatusCreated || r.header.Get("Location") != path {
		t.Fatalf("create: %d %s (Location %q)", r.status, r.body, r.header.Get("Location"))
	}
	var u keystore.User
	r.decode(t, &u)
	if u.ID != user || u.TenantID != tn.ID || u.Name != "Ada" || u.Limits["per_minute"] != (ratelimit.Limit{Requests: 100, Window: time.Minute}) || len(u.Limits) != 2 {
		t.Fatalf("created %+v", u)
	}
	if !strings.Contains(string(r.body), `"per_minute":{"requests":100,"window":"1m","algorithm":"sliding_window"}`) {
		t.Fatalf("limits as answered: %s", r.body)
	}

	r = f.do("PUT", path, `{"limits":{"burst":{"requests":600,"window":"1m","algorithm":"token_bucket","burst":50}}}`)
	if r.status != http.StatusOK {
		t.Fatalf("replace: %d %s", r.status, r.body)
	}
	r = f.do("GET", path, "")
	u = keystore.User{}
	r.decode(t, &u)
	if r.status != http.StatusOK || u.Name != "" || len(u.Limits) != 1 || u.Limits["burst"].Burst != 50 {
		t.Fatalf("get after replace: %d %s", r.status, r.body)
	}

	for i := range 3 {
		if r := f.do("PUT", base+fmt.Sprint("u", i), `{}`); r.status != http.StatusCreated {
			t.Fatalf("create u%d: %d %s", i, r.status, r.body)
		}
	}
	var page keystore.UserPage
	r = f.do("GET", "/v1/tenants/"+tn.ID+"/users?limit=2", "")
	r.decode(t, &page)
	if r.status != http.StatusOK || len(page.Users) != 2 || !page.HasMore || page.NextCursor != page.Users[1].ID {
		t.Fatalf("first page: %d %s", r.status, r.body)
	}
	r = f.do("GET", "/v1/tenants/"+tn.ID+"/users?limit=2&cursor="+url.QueryEscape(page.NextCursor), "")
	r.decode(t, &page)
	if r.status != http.StatusOK || len(page.Users) != 2 || page.HasMore {
		t.Fatalf("second page: %d %s", r.status, r.body)
	}

	if r := f.do("DELETE", path, ""); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := f.do("GET", path, ""); r.status != http.StatusNotFound {
		t.Fatalf("get deleted: %d %s", r.status, r.body)
	}
	if r := f.do("DELETE", path, ""); r.status != http.StatusNotFound {
		t.Fatalf("delete again: %d %s", r.status, r.body)
	}
}

func TestUsersErrors(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, _, _ := f.seed()
	path := "/v1/tenants/" + tn.ID + "/users/ada"
	for _, c := range []struct {
		method, path, body string
		status             int
		msg                string // substring of the error message
	}{
		{"PUT", "/v1/tenants/nope/users/ada", `{}`, 404, `tenant "nope" not found`},
		{"GET", "/v1/tenants/nope/users/ada", "", 404, `tenant "nope" not found`},
		{"GET", "/v1/tenants/nope/users", "", 404, `tenant "nope" not found`},
		{"DELETE", "/v1/tenants/nope/users/ada", "", 404, `tenant "nope" not found`},
		{"GET", path, "", 404, `user "ada" not found`},
		{"PUT", path, ``, 400, "empty"},
		{"PUT", path, `{"nmae":"x"}`, 400, "unknown field"},
		{"PUT", path, `{"name":"a","name":"b"}`, 400, "duplicate field"},
		{"PUT", path, `{"limits":{"per_minute":{"requests":10,"window":"1x"}}}`, 400, `limit "per_minute": `},
		{"PUT", path, `{"limits":{"per_minute":{"requests":10,"window":"1m","algo":"x"}}}`, 400, `limit "per_minute"`},
		{"PUT", path, `{"limits":{"per_minute":{"requests":10,"window":"1m","algorithm":"leaky"}}}`, 400, `algorithm "leaky"`},
		{"PUT", path, `{"limits":{"per_minute":null}}`, 400, "null"},
		{"PUT", path, `{"limits":{"per_minute":{"requests":-1,"window":"1m"}}}`, 400, "or 0 to turn the limit off"},
		{"PUT", path, `{"limits":{"per_minute":{"requests":10,"window":"0s"}}}`, 400, `limit "per_minute": window`},
		{"PUT", path, `{"limits":{"Per Minute":{"requests":10,"window":"1m"}}}`, 400, "limit name"},
		{"PUT", path, `{"metadata":{"":"x"}}`, 400, "metadata key"},
		{"GET", "/v1/tenants/" + tn.ID + "/users?limit=0", "", 400, "limit"},
		{"GET", "/v1/tenants/" + tn.ID + "/users?tenant_id=x", "", 400, "unknown query parameter"},
	} {
		r := f.do(c.method, c.path, c.body)
		if r.status != c.status || !strings.Contains(r.errBody(t).Error, c.msg) {
			t.Errorf("%s %s %s: %d %s; want %d with %q", c.method, c.path, c.body, r.status, r.body, c.status, c.msg)
		}
	}
	many := make([]string, ratelimit.MaxNamed+1)
	for i := range many {
		many[i] = fmt.Sprintf(`"l%d":{"requests":1,"window":"1s"}`, i)
	}
	if r := f.do("PUT", path, `{"limits":{`+strings.Join(many, ",")+`}}`); r.status != 400 || !strings.Contains(r.errBody(t).Error, "more than 8 limits") {
		t.Errorf("too many limits: %d %s", r.status, r.body)
	}
}

// TestKeyLimitsRoutes: a key's limits are set on create, shown by GET,
// replaced and cleared by PATCH.
func TestKeyLimitsRoutes(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, _, _ := f.seed()
	r := f.do("POST", "/v1/keys", `{"tenant_id":"`+tn.ID+`","name":"k","limits":{"per_minute":{"requests":100,"window":"1m"}}}`)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var k keystore.Key
	r.decode(t, &k)
	r = f.do("GET", "/v1/keys/"+k.ID, "")
	r.decode(t, &k)
	if k.Limits["per_minute"] != (ratelimit.Limit{Requests: 100, Window: time.Minute}) {
		t.Fatalf("get: %s", r.body)
	}
	r = f.do("PATCH", "/v1/keys/"+k.ID, `{"limits":{"per_day":{"requests":0,"window":"0s"}}}`)
	k = keystore.Key{}
	r.decode(t, &k)
	if r.status != http.StatusOK || len(k.Limits) != 1 || k.Limits["per_day"] != (ratelimit.Limit{}) {
		t.Fatalf("replace: %d %s", r.status, r.body)
	}
	for body, want := range map[string]string{
		`{"limits":{"per_day":{"requests":5,"window":"1x"}}}`:                 `limit: window "1x"`,
		`{"limits":{"per_day":{"requests":5,"window":"1m","window":"1d"}}}`:   `duplicate field`,
		`{"limits":{"per_day":{"requests":5,"window":"1m","algo":"x"}}}`:      `limit: unknown field "algo"`,
		`{"limits":{"per_day":{"requests":"5","window":"1m"}}}`:               `limit: requests: want a int`,
		`{"limits":{"per_day":null}}`:                                         `cannot be null`,
		`{"limits":{"per_day":{"requests":5,"window":"1m","algorithm":"x"}}}`: `limit: algorithm "x"`,
	} {
		if r := f.do("PATCH", "/v1/keys/"+k.ID, body); r.status != 400 || !strings.Contains(r.errBody(t).Error, want) {
			t.Errorf("PATCH %s: %d %s, want 400 %q", body, r.status, r.body, want)
		}
	}
	if r := f.do("PATCH", "/v1/keys/"+k.ID, `{"limits":{"per_day":{"requests":0}}}`); r.status != http.StatusOK {
		t.Errorf("a limit turned off without a window: %d %s", r.status, r.body)
	}
	r = f.do("PATCH", "/v1/keys/"+k.ID, `{"limits":{}}`)
	if r.status != http.StatusOK || strings.Contains(string(r.body), `"limits"`) {
		t.Fatalf("clear: %d %s", r.status, r.body)
	}
	r = f.do("PATCH", "/v1/keys/"+k.ID, `{"limits":{"x":{"requests":5,"window":"0s"}}}`)
	if r.status != http.StatusBadRequest || !strings.Contains(r.errBody(t).Error, `limit "x"`) {
		t.Fatalf("invalid limit: %d %s", r.status, r.body)
	}
}
