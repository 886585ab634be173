package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/internal/testredis"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

// TestSharedLimitsThroughRedis: a Keygate process with rate_limits.redis
// keeps its key budgets in the real Redis, and fails closed without it.
func TestSharedLimitsThroughRedis(t *testing.T) {
	rs := testredis.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	body := "rate_limits:\n  tiers: {standard: {requests: 3, window: 1m}}\n  redis: {addr: \"" + rs.Addr + "\"}\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServerWith(t, dir, "KEYGATE_CONFIG="+cfg)
	key := s.cli(t, "keys", "create", "--tenant", s.cli(t, "tenants", "create", "--name", "Acme")["id"].(string), "--name", "k")
	raw := key["key"].(string)
	c := newChecker(t, s.grpcAddr)
	check := func() (bool, int32) {
		t.Helper()
		ok, status, _ := c.check(raw)
		return ok, status
	}
	admitted := 0
	for i := 0; i < 5; i++ {
		if ok, _ := check(); ok {
			admitted++
		}
	}
	if admitted != 3 {
		t.Fatalf("admitted %d of a budget of 3", admitted)
	}
	if n, err := rs.Client(t).Exists(context.Background(), "keygate:rl:key:standard:"+key["id"].(string)).Result(); err != nil || n != 1 {
		t.Fatalf("the key's bucket is not in Redis: %d %v", n, err)
	}
	rs.Stop()
	if ok, status := check(); ok || status != 503 {
		t.Fatalf("Redis gone: allowed=%v status=%d, want a fail-closed 503", ok, status)
	}
}

// TestSharedLimitsAcrossReplicas: two engines (two replicas' worth of
// limiter state) wired from the same config over one store admit a key's
// budget once between them, through the real Redis, not once each.
func TestSharedLimitsAcrossReplicas(t *testing.T) {
	rs := testredis.Start(t)
	cfgFile := filepath.Join(t.TempDir(), "keygate.yaml")
	os.WriteFile(cfgFile, []byte("rate_limits:\n  tiers: {standard: {requests: 4, window: 1m}}\n  redis: {addr: \""+rs.Addr+"\"}\n"), 0o600)
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	store, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	tn, _ := store.CreateTenant(t.Context(), "Acme")
	k, _ := store.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
	var engines []*authz.Engine
	for i := 0; i < 3; i++ {
		acfg := cfg.AuthzConfig(apikey.MustFormat("ak"))
		shared, closeShared, err := cfg.SharedLimiter()
		if err != nil {
			t.Fatal(err)
		}
		defer closeShared()
		acfg.RateLimits.Shared = shared
		e, err := authz.New(acfg, store)
		if err != nil {
			t.Fatal(err)
		}
		engines = append(engines, e)
	}
	admitted := 0
	for i := 0; i < 9; i++ {
		d, err := engines[i%3].Decide(context.Background(), &authz.Request{Path: "/x", Headers: map[string]string{"x-api-key": k.Secret.Reveal()}})
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow() {
			admitted++
		}
	}
	if admitted != 4 {
		t.Fatalf("three replicas admitted %d of a shared budget of 4", admitted)
	}
}
