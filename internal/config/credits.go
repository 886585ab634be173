package config

import (
	"fmt"

	"github.com/keygate/keygate/keystore"
)

// creditsConfig is the credits section: accounts that tenants, orgs and
// users get when they are created (keystore.Options.AccountGrants).
type creditsConfig struct {
	// Accounts, by owner kind (tenant, org, user): a new owner of that
	// kind gets an account holding grant credits, refilled on refill's
	// schedule if set. A kind not listed gets none.
	Accounts map[string]accountConfig `yaml:"accounts"`
}

type accountConfig struct {
	Grant  int64         `yaml:"grant"`
	Refill *refillConfig `yaml:"refill"`
}

// refillConfig is a credit refill schedule, as a tier's.
type refillConfig struct {
	Interval string `yaml:"interval"` // daily or monthly
	Day      int    `yaml:"day"`      // monthly: 1-31 (a shorter month's last day); 0: 1
	Amount   int64  `yaml:"amount"`
}

func (r *refillConfig) refill() *keystore.Refill {
	if r == nil {
		return nil
	}
	return &keystore.Refill{Interval: r.Interval, Day: r.Day, Amount: r.Amount}
}

// accountGrants are the configured grants; nil: none.
func (c *Config) accountGrants() map[string]keystore.Grant {
	var out map[string]keystore.Grant
	for kind, a := range c.Credits.Accounts {
		if out == nil {
			out = map[string]keystore.Grant{}
		}
		out[kind] = keystore.Grant{Amount: a.Grant, Refill: a.Refill.refill()}
	}
	return out
}

func (c *Config) validateCredits(p *problems) {
	for kind, a := range c.Credits.Accounts {
		field := "credits.accounts." + kind
		switch kind {
		case keystore.AccountTenant, keystore.AccountOrg, keystore.AccountUser:
		default:
			p.add("credits.accounts", fmt.Errorf("%q: want %s, %s or %s", kind, keystore.AccountTenant, keystore.AccountOrg, keystore.AccountUser))
			continue
		}
		if a.Grant < 0 {
			p.add(field+".grant", fmt.Errorf("%d: must not be negative", a.Grant))
		}
		if r := a.Refill.refill(); r != nil {
			if err := keystore.ValidRefill(*r); err != nil {
				p.add(field+".refill", err)
			}
		}
	}
}
