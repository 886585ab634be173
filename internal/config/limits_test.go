package config

import (
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

// TestLimitSets: a tier is one limit (named after it) or named ones; a
// burst without an algorithm is a token bucket, as before sliding windows;
// days are windows; a shared budget of zero requests is none; a tier's
// refill reaches the store.
func TestLimitSets(t *testing.T) {
	c, err := Parse("t.yaml", []byte(`
rate_limits:
  tiers:
    standard: {requests: 100, window: 1m}
    enterprise: {requests: 1000, window: 1m, burst: 200}
    pro:
      limits:
        per_minute: {requests: 600, window: 1m}
        per_day: {requests: 100000, window: 1d, algorithm: sliding_window}
      refill: {interval: monthly, day: 1, amount: 100000}
  org: {requests: 0, window: 1m}
  user:
    limits:
      per_minute: {requests: 1000, window: 1m, algorithm: token_bucket}
`))
	if err != nil {
		t.Fatal(err)
	}
	rl := c.Limits()
	want := map[string]authz.LimitSet{
		"standard":   authz.One("standard", ratelimit.Limit{Requests: 100, Window: time.Minute}),
		"enterprise": authz.One("enterprise", ratelimit.Limit{Requests: 1000, Window: time.Minute, Burst: 200, Algorithm: ratelimit.TokenBucket}),
		"pro": {
			{Name: "per_day", Limit: ratelimit.Limit{Requests: 100000, Window: 24 * time.Hour}},
			{Name: "per_minute", Limit: ratelimit.Limit{Requests: 600, Window: time.Minute}},
		},
	}
	for name, set := range want {
		if got := rl.Tiers[name]; len(got) != len(set) || (len(set) > 0 && got[0] != set[0]) || (len(set) > 1 && got[1] != set[1]) {
			t.Errorf("tier %s: %+v, want %+v", name, got, set)
		}
	}
	if len(rl.Org) != 0 {
		t.Errorf("org with zero requests: %+v, want none", rl.Org)
	}
	if len(rl.User) != 1 || rl.User[0].Name != "per_minute" || rl.User[0].Limit.Algorithm != ratelimit.TokenBucket {
		t.Errorf("user: %+v", rl.User)
	}
	if r := c.StoreOptions(apikey.Format{}).TierRefills; len(r) != 1 || r["pro"] != (keystore.Refill{Interval: "monthly", Day: 1, Amount: 100000}) {
		t.Errorf("tier refills: %+v", r)
	}
	if err := c.AuthzConfig(apikey.Format{}).Validate(); err != nil {
		t.Errorf("valid limits refused: %v", err)
	}
}

func TestLimitSetProblems(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"algorithm", "rate_limits:\n  tiers:\n    standard: {requests: 1, window: 1m, algorithm: leaky}\n", `t.yaml:3: rate_limits.tiers.standard.algorithm: algorithm "leaky"`},
		{"limit name", "rate_limits:\n  tiers:\n    standard:\n      limits:\n        Per Minute: {requests: 1, window: 1m}\n", `t.yaml:5: rate_limits.tiers.standard.limits.Per Minute: limit name "Per Minute"`},
		{"burst on a sliding window", "rate_limits:\n  tiers:\n    standard: {requests: 1, window: 1m, burst: 5, algorithm: sliding_window}\n", `burst applies to token_bucket`},
		{"refill", "rate_limits:\n  tiers:\n    standard:\n      requests: 1\n      window: 1m\n      refill: {interval: weekly, amount: 5}\n", `t.yaml:6: rate_limits.tiers.standard.refill: `},
		{"named limit unknown field", "rate_limits:\n  user:\n    limits:\n      per_day: {requets: 5, window: 1d}\n", `t.yaml:4: rate_limits.user.limits.per_day.requets: unknown field`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
