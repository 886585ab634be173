package admin_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testetcd"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
	"github.com/keygate/keygate/keystore/etcdstore"
)

// threeReplicas serves the admin API of three stores on one etcd, as three
// keygate replicas would, each with opts.
func threeReplicas(t *testing.T, srv testetcd.Server, opts admin.Options) []*fixture {
	t.Helper()
	var rs []*fixture
	for i := range 3 {
		b, err := etcdstore.Open(etcdstore.Config{
			Endpoints: srv.Endpoints(), ReplicaTTL: 2 * time.Second, ReplicaID: fmt.Sprint("tok", i),
			DialTimeout: 3 * time.Second,
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		s, err := keystore.New(b, keystore.Options{})
		if err != nil {
			b.Close()
			t.Fatal(err)
		}
		rs = append(rs, newFixtureOn(t, s, opts))
	}
	return rs
}

// TestAdminTokensAcrossReplicas: a token created through one replica works
// on every replica; revoked through another, its next request is refused
// on every replica, with no wait. An org-bound token is held to its org on
// every replica.
func TestAdminTokensAcrossReplicas(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		rs := threeReplicas(t, start(t), admin.Options{})
		var (
			tA, tB keystore.Tenant
			oA, oB keystore.Org
		)
		rs[0].do("POST", "/v1/tenants", `{"name":"A"}`).decode(t, &tA)
		rs[1].do("POST", "/v1/tenants", `{"name":"B"}`).decode(t, &tB)
		rs[2].do("POST", "/v1/orgs", `{"tenant_id":"`+tA.ID+`","name":"A1"}`).decode(t, &oA)
		rs[0].do("POST", "/v1/orgs", `{"tenant_id":"`+tB.ID+`","name":"B1"}`).decode(t, &oB)
		var kB keystore.Key
		rs[1].do("POST", "/v1/keys", `{"tenant_id":"`+tB.ID+`","org_id":"`+oB.ID+`","name":"b"}`).decode(t, &kB)

		var created struct {
			keystore.AdminToken
			Token string `json:"token"`
		}
		r := rs[0].do("POST", "/v1/admin-tokens", `{"name":"org A1","scopes":["keys:read","keys:write","admin-tokens:write"],"org_id":"`+oA.ID+`"}`)
		wantStatus(t, "create", r, http.StatusCreated, "")
		r.decode(t, &created)

		for i, f := range rs {
			who := fmt.Sprint("replica ", i)
			wantStatus(t, who+": own org's key", f.as(created.Token, "POST", "/v1/keys", `{"tenant_id":"`+tA.ID+`","org_id":"`+oA.ID+`","name":"a"}`), http.StatusCreated, "")
			wantStatus(t, who+": other org's key", f.as(created.Token, "GET", "/v1/keys/"+kB.ID, ""), http.StatusForbidden, "out_of_reach")
			wantStatus(t, who+": revoke other org's key", f.as(created.Token, "POST", "/v1/keys/"+kB.ID+"/revoke", ""), http.StatusForbidden, "out_of_reach")
			wantStatus(t, who+": key in other org", f.as(created.Token, "POST", "/v1/keys", `{"tenant_id":"`+tB.ID+`","org_id":"`+oB.ID+`","name":"x"}`), http.StatusForbidden, "out_of_reach")
			wantStatus(t, who+": raise scopes", f.as(created.Token, "POST", "/v1/admin-tokens", `{"name":"x","scopes":["tenants:write"]}`), http.StatusForbidden, "insufficient_scope")
			wantStatus(t, who+": widen reach", f.as(created.Token, "POST", "/v1/admin-tokens", `{"name":"x","scopes":["keys:read"],"tenant_id":"`+tB.ID+`"}`), http.StatusForbidden, "out_of_reach")
			wantStatus(t, who+": tenants", f.as(created.Token, "GET", "/v1/tenants", ""), http.StatusForbidden, "insufficient_scope")
		}
		if k, err := rs[2].store.Key(t.Context(), kB.ID); err != nil || k.RevokedAt != nil {
			t.Fatalf("other org's key: %+v, %v", k, err)
		}

		wantStatus(t, "revoke", rs[1].do("DELETE", "/v1/admin-tokens/"+created.ID, ""), http.StatusNoContent, "")
		for i, f := range rs {
			wantStatus(t, fmt.Sprint("replica ", i, " after revoke"), f.as(created.Token, "GET", "/v1/keys", ""), http.StatusUnauthorized, "unauthorized")
		}
	})
}
