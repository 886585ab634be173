package authz_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore/apikey"
)

// noStore lets New run without a store: these engines decide nothing.
type noStore struct{}

func (noStore) LookupKey(context.Context, apikey.Hash) (*authz.Credential, bool, error) {
	return nil, false, nil
}

// Config.Validate names the setting of each problem, and New refuses a
// config for exactly the problems Validate reports: one rule, one place.
func TestConfigValidateNamesTheSetting(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	minute := ratelimit.Limit{Requests: 1, Window: time.Minute}
	for _, tt := range []struct {
		name       string
		cfg        authz.Config
		field, key string
	}{
		{"no sources", authz.Config{Sources: []string{}}, "Sources", ""},
		{"header clashes with a source", authz.Config{Headers: authz.IdentityHeaders{Tenant: "x-api-key"}}, "Headers", ""},
		{"error format", authz.Config{Errors: authz.ErrorStyle{Format: "xml"}}, "Errors", ""},
		{"realm", authz.Config{Errors: authz.ErrorStyle{Realm: `a"b`}}, "Errors", ""},
		{"client ip", authz.Config{ClientIP: authz.ClientIP{Header: "x-forwarded-for"}}, "ClientIP", ""},
		{"short secret", authz.Config{Signing: authz.Signing{Secret: []byte("short")}}, "Signing.Secret", ""},
		{"signing header", authz.Config{Signing: authz.Signing{Secret: secret, Header: "X-Sig"}}, "Signing.Header", ""},
		{"signing header is a renamed identity header", authz.Config{
			Headers: authz.IdentityHeaders{Tier: "x-sig"},
			Signing: authz.Signing{Secret: secret, Header: "x-sig"},
		}, "Signing.Header", ""},
		{"tier", authz.Config{RateLimits: authz.RateLimits{Tiers: map[string]authz.LimitSet{"gold": authz.One("gold", ratelimit.Limit{Requests: 1})}}}, "RateLimits.Tiers", "gold"},
		{"no tiers", authz.Config{RateLimits: authz.RateLimits{Tiers: map[string]authz.LimitSet{}}}, "RateLimits.Tiers", ""},
		{"default tier", authz.Config{RateLimits: authz.RateLimits{DefaultTier: "gold"}}, "RateLimits.DefaultTier", ""},
		{"org", authz.Config{RateLimits: authz.RateLimits{Org: authz.One("org", ratelimit.Limit{Requests: 1})}}, "RateLimits.Org", ""},
		{"tenant", authz.Config{RateLimits: authz.RateLimits{Tenant: authz.One("tenant", ratelimit.Limit{Requests: 1, Window: -time.Second})}}, "RateLimits.Tenant", ""},
		{"failed auth", authz.Config{RateLimits: authz.RateLimits{FailedAuth: ratelimit.Limit{Requests: 1, Window: time.Second, Burst: -1}}}, "RateLimits.FailedAuth", ""},
		{"org header", authz.Config{Policy: authz.Policy{OrgHeader: ":org"}}, "Policy.OrgHeader", ""},
		{"org header is a source", authz.Config{Policy: authz.Policy{OrgHeader: "x-api-token"}}, "Policy.OrgHeader", ""},
		{"environments", authz.Config{Policy: authz.Policy{Environments: []string{"prod"}}}, "Policy.Environments", ""},
		{"introspection path", authz.Config{Policy: authz.Policy{IntrospectionPath: "/a/../me"}}, "Policy.IntrospectionPath", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			var fe *authz.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || fe.Key != tt.key {
				t.Fatalf("Validate() = %v (%+v), want a problem with %s[%s]", err, fe, tt.field, tt.key)
			}
			if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 1 {
				t.Errorf("%d problems, want 1: %v", n, err)
			}
			_, nerr := authz.New(tt.cfg, noStore{})
			if nerr == nil || !errors.As(nerr, &fe) || fe.Field != tt.field {
				t.Errorf("New refused with %v, want the problem with %s", nerr, tt.field)
			}
		})
	}
	ok := authz.Config{
		Sources:    []string{"x-api-key"},
		Signing:    authz.Signing{Secret: secret},
		RateLimits: authz.RateLimits{Tiers: map[string]authz.LimitSet{"gold": authz.One("gold", minute)}, DefaultTier: "gold", Org: authz.One("org", minute)},
		Policy:     authz.Policy{OrgHeader: "x-org-id", Rules: []authz.Rule{{Path: "/a"}}},
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(valid) = %v", err)
	}
	if err := (authz.Config{}).Validate(); err != nil {
		t.Errorf("Validate(zero) = %v", err)
	}
}

// Every problem is reported at once, a rule's as a RuleError.
func TestConfigValidateReportsEveryProblem(t *testing.T) {
	err := authz.Config{
		Sources: []string{"X-Api-Key"},
		Errors:  authz.ErrorStyle{Format: "xml"},
		Policy:  authz.Policy{Environments: []string{"prod"}, Rules: []authz.Rule{{Path: "a"}, {Cost: -1}}},
	}.Validate()
	var fields []string
	rules := 0
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *authz.FieldError
		var re *authz.RuleError
		switch {
		case errors.As(e, &fe):
			fields = append(fields, fe.Field)
		case errors.As(e, &re):
			rules++
		default:
			t.Errorf("%v: neither a FieldError nor a RuleError", e)
		}
	}
	if len(fields) != 3 || rules != 2 {
		t.Errorf("fields %v and %d rule problems, want 3 and 2:\n%v", fields, rules, err)
	}
}
