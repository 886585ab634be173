package admin_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/keygate/keygate/internal/testetcd"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// TestAuditAcrossReplicas: three replicas on one etcd, each writing through
// its own admin API. The audit log listed through any replica holds every
// write once, whichever replica it went through.
func TestAuditAcrossReplicas(t *testing.T) {
	testetcd.Each(t, func(t *testing.T, start func(testing.TB) testetcd.Server) {
		rs := threeReplicas(t, start(t), admin.Options{Audit: true})

		var tn keystore.Tenant
		rs[0].do("POST", "/v1/tenants", `{"name":"Acme"}`).decode(t, &tn)
		want := map[string]string{} // target id -> action
		want[tn.ID] = "tenants.create"
		for i := range 9 {
			f := rs[i%3]
			var k struct {
				ID string `json:"id"`
			}
			resp := f.do("POST", "/v1/keys", fmt.Sprintf(`{"tenant_id":%q,"name":"k%d"}`, tn.ID, i))
			resp.decode(t, &k)
			if resp.status != http.StatusCreated {
				t.Fatalf("create through replica %d: %d %s", i%3, resp.status, resp.body)
			}
			// Revoked through the next replica.
			if r := rs[(i+1)%3].do("POST", "/v1/keys/"+k.ID+"/revoke", ""); r.status != http.StatusOK {
				t.Fatalf("revoke: %d %s", r.status, r.body)
			}
			want[k.ID] = "keys.create keys.revoke"
		}

		for j, f := range rs {
			got := map[string]string{}
			ids := map[string]bool{}
			for _, e := range f.audit("") {
				if ids[e.ID] {
					t.Fatalf("replica %d: entry %s twice", j, e.ID)
				}
				ids[e.ID] = true
				id := e.Targets["key_id"]
				if id == "" {
					id = e.Targets["tenant_id"]
				}
				if got[id] != "" {
					got[id] += " "
				}
				got[id] += e.Action
				if e.Outcome != keystore.AuditOK || e.TenantID != tn.ID {
					t.Errorf("replica %d: entry %+v", j, e)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("replica %d lists\n%v\nwant\n%v", j, got, want)
			}
		}
	})
}
