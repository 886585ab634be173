package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/internal/testetcd"
)

// The credit accounts of issue 21 through the real binary: a tenant's
// grant from the config, three keys spending the tenant's one balance to
// exactly zero, then 429 for every key; on bbolt and on three replicas
// over etcd.

const accountGrant = 12

func accountsConfig(extra string) string {
	return extra + fmt.Sprintf("credits:\n  accounts:\n    tenant: {grant: %d}\n", accountGrant)
}

// rawCheck sends one Check with key raw and returns the whole response.
func rawCheck(t *testing.T, c checker, raw string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/x", Headers: map[string]string{"x-api-key": raw}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// accountKeys creates a tenant-level, an org-level and a user's key of
// tenant through the replicas in turn.
func accountKeys(t *testing.T, rs []*server, tenant string) []string {
	t.Helper()
	org := rs[0].cli(t, "orgs", "create", "--tenant", tenant, "--name", "EU")["id"].(string)
	var raws []string
	for i, extra := range [][]string{nil, {"--org", org}, {"--user", "dev-1"}} {
		args := append([]string{"keys", "create", "--tenant", tenant, "--name", fmt.Sprint("k", i)}, extra...)
		raws = append(raws, rs[i%len(rs)].cli(t, args...)["key"].(string))
	}
	return raws
}

// spendDown sends Checks round robin (key i through checker i mod n)
// until a pass of every key on every checker allows nothing, waiting out
// the slices other replicas hold; it returns how many were allowed.
func spendDown(t *testing.T, cs []checker, raws []string) int {
	t.Helper()
	allowed := 0
	for pass := 0; pass < 6; pass++ {
		n := 0
		for round := 0; round < 2*accountGrant; round++ {
			for i, raw := range raws {
				ok, status, _ := cs[(i+round)%len(cs)].check(raw)
				switch {
				case ok:
					n++
				case status != 429:
					t.Fatalf("Check refused with %d, want 429 for an empty account", status)
				}
			}
		}
		allowed += n
		if n == 0 && pass > 0 {
			break
		}
		time.Sleep(1200 * time.Millisecond) // slices idle for a second go back
	}
	return allowed
}

func assertExhausted(t *testing.T, cs []checker, raws []string) {
	t.Helper()
	for _, c := range cs {
		for i, raw := range raws {
			d := rawCheck(t, c, raw).GetDeniedResponse()
			if d.GetStatus().GetCode() != 429 || !strings.Contains(d.GetBody(), "API credits exhausted") {
				t.Fatalf("key %d after the account ran out: %v", i, d)
			}
		}
	}
}

func TestAccountCreditsServe(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	writeFile(t, cfg, accountsConfig(""))
	s := startServerWith(t, dir, "KEYGATE_CONFIG="+cfg)
	tenant := s.cli(t, "tenants", "create", "--name", "Acme")["id"].(string)
	acct := s.cli(t, "credits", "get", "--tenant", tenant)
	if acct["credits_remaining"] != float64(accountGrant) || acct["granted"] != float64(accountGrant) || acct["granted_at"] == nil {
		t.Fatalf("credits get of a new tenant: %v", acct)
	}
	raws := accountKeys(t, []*server{s}, tenant)
	c := newChecker(t, s.grpcAddr)
	// An allow says what is left of the account, the balance that limits
	// the key.
	var left string
	for _, h := range rawCheck(t, c, raws[2]).GetOkResponse().GetResponseHeadersToAdd() {
		if h.GetHeader().GetKey() == "x-credits-remaining" {
			left = h.GetHeader().GetValue()
		}
	}
	if left != fmt.Sprint(accountGrant-1) {
		t.Fatalf("x-credits-remaining after the first Check: %q, want %d", left, accountGrant-1)
	}
	if n := 1 + spendDown(t, []checker{c}, raws); n != accountGrant {
		t.Fatalf("three keys spent %d of the account's %d", n, accountGrant)
	}
	assertExhausted(t, []checker{c}, raws)

	// An add opens room for exactly that much, for any of the keys.
	s.cli(t, "credits", "add", "2", "--tenant", tenant)
	if n := spendDown(t, []checker{c}, raws); n != 2 {
		t.Fatalf("after adding 2: %d allowed", n)
	}
	if u := s.cli(t, "credits", "usage", "--tenant", tenant, "--granularity", "day"); !strings.Contains(fmt.Sprint(u["data"]), fmt.Sprintf("credits:%d", accountGrant+2)) {
		t.Fatalf("credits usage: %v, want %d credits spent", u, accountGrant+2)
	}
	s.stop(t)
}

func TestAccountCreditsReplicas(t *testing.T) {
	node := testetcd.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	writeFile(t, cfg, accountsConfig("store:\n  etcd:\n    endpoints: [\""+strings.Join(node.Endpoints(), "\", \"")+"\"]\n    replica_ttl: 2s\n"))
	rs, cs := startReplicasOn(t, cfg, 3)

	// Tenants created at the same moment through two replicas: each has
	// its grant once, as every replica reads it.
	var wg sync.WaitGroup
	tenants := make([]string, 6)
	for i := range tenants {
		wg.Go(func() {
			out, err := tryCLI(rs[i%2], "tenants", "create", "--name", fmt.Sprint("t", i))
			if err != nil {
				t.Errorf("tenants create through r%d: %v\n%s", i%2, err, out)
				return
			}
			_, id, _ := strings.Cut(out, `"id":"`)
			tenants[i], _, _ = strings.Cut(id, `"`)
		})
	}
	wg.Wait()
	for _, tn := range tenants {
		for _, r := range rs {
			if a := r.cli(t, "credits", "get", "--tenant", tn); a["credits_remaining"] != float64(accountGrant) {
				t.Fatalf("tenant %s: %v", tn, a)
			}
		}
	}

	raws := accountKeys(t, rs, tenants[0])
	if n := spendDown(t, cs, raws); n != accountGrant {
		t.Fatalf("three keys through three replicas spent %d of the account's %d", n, accountGrant)
	}
	assertExhausted(t, cs, raws)
	if a := rs[2].cli(t, "credits", "get", "--tenant", tenants[0]); a["credits_remaining"] != float64(0) {
		t.Fatalf("the account after: %v", a)
	}
}
