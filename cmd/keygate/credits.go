package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/keystore"
)

const creditsLong = `Manage the credit accounts of tenants, orgs and users through the admin
API: one balance that every key under the owner spends (a key's own
balance, if it has one, applies too). Name the owner with --tenant ID,
--org ID, or --tenant ID --user ID.

Usage:
  keygate credits get   (--tenant ID | --org ID | --tenant ID --user ID)
  keygate credits set N (owner)     open the account, or set its balance to N
  keygate credits add N (owner)     add N (negative: take away, down to 0)
  keygate credits refill (--schedule daily:AMOUNT|monthly:DAY:AMOUNT | --clear) (owner)
  keygate credits close (owner)     the owner's keys stop spending from it
  keygate credits usage (owner) [--from T] [--to T] [--granularity hour|day]

A new tenant, org or user gets an account by itself when the config grants
one (credits.accounts). The routes need the scopes credits:read and
credits:write, which keys:write does not give.

Every subcommand also takes --admin-url, --admin-token-file and
-o/--output table|json|yaml.`

func newCreditsCmd(c *cli) *cobra.Command {
	return newGroupCmd(c, "credits", "manage the credit accounts of tenants, orgs and users", creditsLong,
		creditsGet(c), creditsChange(c, "set", "open an owner's account, or set its balance"),
		creditsChange(c, "add", "add to an owner's balance (negative: take away)"),
		creditsRefill(c), creditsClose(c), creditsUsage(c))
}

// ownerFlags are --tenant, --org and --user, which name an account's
// owner.
type ownerFlags struct{ tenant, org, user *string }

func newOwnerFlags(m *mgmtCommand) ownerFlags {
	return ownerFlags{
		tenant: m.fs.String("tenant", "", "the tenant `ID` (with --user: the user's tenant)"),
		org:    m.fs.String("org", "", "the org `ID`"),
		user:   m.fs.String("user", "", "the user `ID`, within --tenant"),
	}
}

// parse reads the command line (positional args named want) and the
// owner, returning the positional args and the account's path.
func (o ownerFlags) parse(m *mgmtCommand, args []string, want ...string) ([]string, string, error) {
	pos, err := m.parse(args, want...)
	if err != nil {
		return nil, "", err
	}
	path, err := o.path(m)
	return pos, path, err
}

// path is the account's path in the admin API.
func (o ownerFlags) path(m *mgmtCommand) (string, error) {
	switch {
	case *o.org != "" && *o.tenant == "" && *o.user == "":
		return pathOf("v1", "orgs", *o.org, "credits"), nil
	case *o.tenant != "" && *o.org == "" && *o.user == "":
		return pathOf("v1", "tenants", *o.tenant, "credits"), nil
	case *o.tenant != "" && *o.org == "" && *o.user != "":
		return pathOf("v1", "tenants", *o.tenant, "users", *o.user, "credits"), nil
	}
	return "", m.usageErr("name one owner: --tenant ID, --org ID, or --tenant ID --user ID")
}

func creditsGet(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "get (--tenant ID | --org ID | --tenant ID --user ID)", "show an owner's credit account")
	owner := newOwnerFlags(m)
	return m.runs(func(ctx context.Context, args []string) error {
		_, path, err := owner.parse(m, args)
		if err != nil {
			return err
		}
		return show(ctx, m, "GET", path, nil, nil, printAccount)
	})
}

// creditsChange is "set N" and "add N": the body is {verb: N}.
func creditsChange(c *cli, verb, short string) *cobra.Command {
	m := newMgmtCommand(c, verb+" N (--tenant ID | --org ID | --tenant ID --user ID)", short)
	owner := newOwnerFlags(m)
	return m.runs(func(ctx context.Context, args []string) error {
		pos, path, err := owner.parse(m, args, "N")
		if err != nil {
			return err
		}
		n, err := strconv.ParseInt(pos[0], 10, 64)
		if err != nil {
			return m.usageErr("%q: want a whole number of credits", pos[0])
		}
		return show(ctx, m, "POST", path, nil, map[string]int64{verb: n}, printAccount)
	})
}

func creditsRefill(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "refill (--schedule S | --clear) (--tenant ID | --org ID | --tenant ID --user ID)", "set or clear an owner's refill schedule")
	schedule := m.fs.String("schedule", "", refillHelp)
	clearIt := m.fs.Bool("clear", false, "remove the schedule (the balance stays)")
	owner := newOwnerFlags(m)
	return m.runs(func(ctx context.Context, args []string) error {
		_, path, err := owner.parse(m, args)
		if err != nil {
			return err
		}
		if m.isSet("schedule") == *clearIt {
			return m.usageErr("give exactly one of --schedule and --clear")
		}
		var body any = map[string]bool{"clear_refill": true}
		if !*clearIt {
			r, err := parseRefill(m, *schedule)
			if err != nil {
				return err
			}
			body = map[string]keystore.Refill{"refill": r}
		}
		return show(ctx, m, "POST", path, nil, body, printAccount)
	})
}

func creditsClose(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "close (--tenant ID | --org ID | --tenant ID --user ID)", "close an owner's account: its keys stop spending from it")
	owner := newOwnerFlags(m)
	return m.runs(func(ctx context.Context, args []string) error {
		_, path, err := owner.parse(m, args)
		if err != nil {
			return err
		}
		ac, err := m.client()
		if err != nil {
			return err
		}
		if _, err := ac.call(ctx, "DELETE", path, nil, nil, nil); err != nil {
			return err
		}
		return m.printValue(map[string]string{"closed": path})
	})
}

func creditsUsage(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "usage (--tenant ID | --org ID | --tenant ID --user ID) [--from T] [--to T] [--granularity hour|day]",
		"show what an owner's keys did and spent per hour or day")
	owner := newOwnerFlags(m)
	period := newUsageFlags(m)
	return m.runs(func(ctx context.Context, args []string) error {
		_, path, err := owner.parse(m, args)
		if err != nil {
			return err
		}
		q, err := period.query(m)
		if err != nil {
			return err
		}
		return show(ctx, m, "GET", path+"/usage", q, nil, printKeyUsage)
	})
}

func printAccount(w io.Writer, a keystore.Account) error {
	tw := newTable(w)
	row := func(label, value string) { fmt.Fprintf(tw, "%s\t%s\n", label, value) }
	row("Account", a.ID)
	row("Owner", a.Kind)
	row("Tenant", cell(a.TenantID))
	if a.OrgID != "" {
		row("Org", a.OrgID)
	}
	if a.UserID != "" {
		row("User", a.UserID)
	}
	if a.CreditsRemaining != nil {
		row("Credits", strconv.FormatInt(*a.CreditsRemaining, 10))
	}
	if a.Granted > 0 {
		row("Granted", strconv.FormatInt(a.Granted, 10)+" (when created)")
	}
	if r := a.Refill; r != nil {
		s := fmt.Sprintf("%s, to %d", r.Interval, r.Amount)
		if r.Interval == keystore.RefillMonthly {
			s = fmt.Sprintf("monthly on day %d, to %d", r.Day, r.Amount)
		}
		row("Refill", s)
	}
	if len(a.CreditsReserved) > 0 {
		row("Reserved", fmt.Sprint(a.CreditsReserved))
	}
	row("Created", a.Created.UTC().Format("2006-01-02 15:04:05Z"))
	return tw.Flush()
}
