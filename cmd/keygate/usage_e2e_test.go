package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testetcd"
	"github.com/keygate/keygate/keystore"
)

type usageTotal = keystore.UsageCounts

// keyUsageTotal sums a key's usage over the last day through s's admin API.
func keyUsageTotal(t *testing.T, s *server, id string) usageTotal {
	t.Helper()
	var ans keyUsageAnswer
	status, err := adminOf(t, s).call("GET", "/v1/keys/"+id+"/usage?granularity=day&from="+time.Now().Add(-24*time.Hour).UTC().Format(time.DateOnly), nil, &ans)
	if err != nil || status != 200 {
		t.Fatalf("usage of %s: %d %v", id, status, err)
	}
	var c usageTotal
	for _, b := range ans.Data {
		c.Allowed += b.Allowed
		c.Denied401 += b.Denied401
		c.Denied403 += b.Denied403
		c.Denied429 += b.Denied429
		c.Credits += b.Credits
	}
	return c
}

// TestUsageServeBolt: Checks through a real `keygate serve` on a bbolt
// file show exactly in `keygate keys usage` at once, before any flush.
func TestUsageServeBolt(t *testing.T) {
	s := startServer(t, t.TempDir())
	tn := s.cli(t, "tenants", "create", "--name", "Acme")
	k := s.cli(t, "keys", "create", "--tenant", tn["id"].(string), "--name", "k")
	raw, id := k["key"].(string), k["id"].(string)
	c := newChecker(t, s.grpcAddr)
	const n = 25
	for range n {
		if ok, status, _ := c.check(raw); !ok {
			t.Fatalf("check: %d", status)
		}
	}
	s.cli(t, "keys", "revoke", id)
	for range 2 {
		if ok, status, _ := c.check(raw); ok || status != 401 {
			t.Fatalf("revoked: allowed %v, status %d", ok, status)
		}
	}
	out := s.cli(t, "keys", "usage", id)
	b, _ := json.Marshal(out)
	var ans keyUsageAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		t.Fatal(err)
	}
	var got usageTotal
	for _, b := range ans.Data {
		got.Allowed += b.Allowed
		got.Denied401 += b.Denied401
	}
	if got != (usageTotal{Allowed: n, Denied401: 2}) {
		t.Fatalf("usage %+v, want %d allowed and 2 refused (401)", got, n)
	}
}

// TestUsageThreeReplicasServe: N Checks spread over three real `keygate
// serve` replicas on one etcd add up to exactly N on every replica once
// each has flushed, stay N through further flushes, and still N after a
// replica stops (its final flush).
func TestUsageThreeReplicasServe(t *testing.T) {
	node := testetcd.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	writeFile(t, cfg, "store:\n  last_used_flush: 100ms\n  etcd:\n    endpoints: [\""+node.Endpoint()+"\"]\n    replica_ttl: 2s\n")
	var rs []*server
	var cs []checker
	for i := range 3 {
		rdir := filepath.Join(dir, fmt.Sprint("r", i))
		if err := os.Mkdir(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		s := startServerWith(t, rdir, replicaEnv(cfg, fmt.Sprint("r", i))...)
		rs = append(rs, s)
		cs = append(cs, newChecker(t, s.grpcAddr))
	}
	waitReady(t, rs, 15*time.Second)
	var tn keystore.Tenant
	if status, err := adminOf(t, rs[0]).call("POST", "/v1/tenants", map[string]any{"name": "Acme"}, &tn); err != nil || status != 201 {
		t.Fatalf("create tenant: %d %v", status, err)
	}
	raw, id := createKey(t, rs[1], tn.ID, "k")
	const n = 150
	for i := range n {
		if ok, status, _ := cs[i%3].check(raw); !ok {
			t.Fatalf("check %d on r%d: %d", i, i%3, status)
		}
	}
	want := usageTotal{Allowed: n}
	deadline := time.Now().Add(10 * time.Second)
	for i, s := range rs {
		for {
			got := keyUsageTotal(t, s, id)
			if got == want {
				break
			}
			if got.Allowed > n || time.Now().After(deadline) {
				t.Fatalf("replica %d: %+v, want %+v", i, got, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond) // several more flushes of everyone
	rs[2].stop(t)
	for i, s := range rs[:2] {
		if got := keyUsageTotal(t, s, id); got != want {
			t.Fatalf("replica %d after more flushes and a stop: %+v, want %+v", i, got, want)
		}
	}
	var rep keystore.UsageReport
	if status, err := adminOf(t, rs[0]).call("GET", "/v1/usage?tenant_id="+tn.ID, nil, &rep); err != nil || status != 200 || rep.Totals != want {
		t.Fatalf("tenant totals: %d %v %+v", status, err, rep)
	}
}
