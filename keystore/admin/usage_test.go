package admin_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

type keyUsageAnswer struct {
	KeyID       string                 `json:"key_id"`
	Granularity string                 `json:"granularity"`
	Data        []keystore.UsageBucket `json:"data"`
}

// TestUsageRoutes: Checks through a real engine over the served store
// show in both usage routes, exactly, before any flush.
func TestUsageRoutes(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, o, k := f.seed()
	e, err := authz.New(authz.Config{Recorder: f.store, RateLimits: authz.RateLimits{PerKeyOff: true},
		Policy: authz.Policy{Rules: []authz.Rule{{Name: "w", PathPrefix: "/w", Scopes: []string{"vault:write"}}}}}, f.store)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		path := "/r"
		if i%4 == 0 {
			path = "/w"
		}
		if _, err := e.Decide(context.Background(), &authz.Request{Method: "GET", Path: path, Peer: "10.0.0.1",
			Headers: map[string]string{"x-api-key": k.Secret.Reveal()}}); err != nil {
			t.Fatal(err)
		}
	}
	want := keystore.UsageCounts{Allowed: 9, Denied403: 3}

	res := f.do("GET", "/v1/keys/"+k.ID+"/usage", "")
	if res.status != http.StatusOK {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	var ku keyUsageAnswer
	res.decode(t, &ku)
	if ku.KeyID != k.ID || ku.Granularity != "hour" || len(ku.Data) != 24 || ku.Data[23].UsageCounts != want {
		t.Fatalf("default: %+v", ku)
	}

	from := time.Now().Add(-72 * time.Hour).UTC().Format(time.RFC3339)
	res = f.do("GET", "/v1/keys/"+k.ID+"/usage?granularity=day&from="+url.QueryEscape(from), "")
	res.decode(t, &ku)
	if res.status != http.StatusOK || len(ku.Data) != 4 || ku.Data[3].UsageCounts != want {
		t.Fatalf("days: %d %+v", res.status, ku)
	}

	for _, q := range []string{"?tenant_id=" + tn.ID, "?org_id=" + o.ID, "?tenant_id=" + tn.ID + "&org_id=" + o.ID} {
		res = f.do("GET", "/v1/usage"+q, "")
		var rep keystore.UsageReport
		res.decode(t, &rep)
		if res.status != http.StatusOK || rep.Totals != want || len(rep.Keys) != 1 || rep.Keys[0].KeyID != k.ID {
			t.Fatalf("%s: %d %+v", q, res.status, rep)
		}
	}

	for path, status := range map[string]int{
		"/v1/keys/" + k.ID + "/usage?granularity=week":              http.StatusBadRequest,
		"/v1/keys/" + k.ID + "/usage?from=yesterday":                http.StatusBadRequest,
		"/v1/keys/" + k.ID + "/usage?limit=3":                       http.StatusBadRequest,
		"/v1/keys/" + k.ID + "/usage?from=2026-01-02&to=2026-01-01": http.StatusBadRequest,
		"/v1/keys/key_unknown/usage":                                http.StatusNotFound,
		"/v1/usage":                                                 http.StatusBadRequest,
		"/v1/usage?tenant_id=nope":                                  http.StatusNotFound,
		"/v1/usage?org_id=nope":                                     http.StatusNotFound,
	} {
		if res := f.do("GET", path, ""); res.status != status {
			t.Errorf("%s: status %d, want %d: %s", path, res.status, status, res.body)
		}
	}
}

// TestUsageReach: the usage routes need usage:read, and a bound token
// sees its own tenant's or org's keys only.
func TestUsageReach(t *testing.T) {
	f := newFixture(t, admin.Options{})
	w := f.reachWorld()
	keysOnly := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeKeysRead}})
	wantStatus(t, "no usage:read", f.as(keysOnly, "GET", "/v1/keys/"+w.kA1.ID+"/usage", ""), http.StatusForbidden, "insufficient_scope")
	wantStatus(t, "no usage:read, totals", f.as(keysOnly, "GET", "/v1/usage?tenant_id="+w.tA.ID, ""), http.StatusForbidden, "insufficient_scope")

	wantStatus(t, "tenant token, own key", f.as(w.tenantTok, "GET", "/v1/keys/"+w.kA2.ID+"/usage", ""), http.StatusOK, "")
	wantStatus(t, "tenant token, other tenant's key", f.as(w.tenantTok, "GET", "/v1/keys/"+w.kB1.ID+"/usage", ""), http.StatusForbidden, "out_of_reach")
	wantStatus(t, "tenant token, other tenant", f.as(w.tenantTok, "GET", "/v1/usage?tenant_id="+w.tB.ID, ""), http.StatusForbidden, "out_of_reach")
	wantStatus(t, "tenant token, other tenant's org", f.as(w.tenantTok, "GET", "/v1/usage?org_id="+w.oB1.ID, ""), http.StatusForbidden, "out_of_reach")
	wantStatus(t, "org token, tenant-level key", f.as(w.orgTok, "GET", "/v1/keys/"+w.kAT.ID+"/usage", ""), http.StatusForbidden, "out_of_reach")
	wantStatus(t, "org token, sibling org", f.as(w.orgTok, "GET", "/v1/usage?org_id="+w.oA2.ID, ""), http.StatusForbidden, "out_of_reach")

	// Without filters a bound token's totals are its own tenant's or org's.
	e, err := authz.New(authz.Config{Recorder: f.store, RateLimits: authz.RateLimits{PerKeyOff: true}}, f.store)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []keystore.CreatedKey{w.kA1, w.kA2, w.kAT, w.kB1} {
		if _, err := e.Decide(context.Background(), &authz.Request{Method: "GET", Path: "/x", Peer: "10.0.0.1",
			Headers: map[string]string{"x-api-key": k.Secret.Reveal()}}); err != nil {
			t.Fatal(err)
		}
	}
	for tok, want := range map[string]int64{w.tenantTok: 3, w.orgTok: 1} {
		res := f.as(tok, "GET", "/v1/usage", "")
		var rep keystore.UsageReport
		res.decode(t, &rep)
		if res.status != http.StatusOK || rep.Totals.Allowed != want {
			t.Errorf("bound totals: %d %+v, want %d allowed", res.status, rep, want)
		}
	}
}
