package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/keystore"
)

const adminTokensLong = `Manage admin tokens: credentials for the admin API with a set of
scopes, optionally bound to one tenant or one org.

Usage:
  keygate admin-tokens create --name N --scopes a,b [--tenant ID] [--org ID] [--expires-in D]
  keygate admin-tokens list [--tenant ID] [--org ID]
  keygate admin-tokens revoke ID

Scopes: ` + "tenants:read, tenants:write, keys:read, keys:write, usage:read,\naudit:read, metrics:read, admin-tokens:read, admin-tokens:write" + `.
A token is shown once, when it is created. A token may only create tokens
with scopes it holds, within its own tenant or org.

Every subcommand also takes --admin-url, --admin-token-file and
-o/--output table|json|yaml. Run "keygate admin-tokens SUBCOMMAND --help" for details.`

// createAdminTokenRequest is the body of POST /v1/admin-tokens.
type createAdminTokenRequest struct {
	Name      string   `json:"name"`
	Scopes    []string `json:"scopes"`
	TenantID  string   `json:"tenant_id,omitempty"`
	OrgID     string   `json:"org_id,omitempty"`
	ExpiresIn string   `json:"expires_in,omitempty"`
}

func newAdminTokensCmd(c *cli) *cobra.Command {
	return newGroupCmd(c, "admin-tokens", "manage admin API tokens", adminTokensLong,
		adminTokensCreate(c), adminTokensList(c), adminTokensRevoke(c))
}

func adminTokensCreate(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "create --name N --scopes a,b [--tenant ID] [--org ID] [--expires-in D]", "create an admin token")
	name := m.fs.String("name", "", "token `name` (required)")
	scopes := m.fs.String("scopes", "", "comma-separated `scopes`, e.g. keys:read,keys:write (required)")
	tenant := m.fs.String("tenant", "", "bind the token to the tenant with this `ID`")
	org := m.fs.String("org", "", "bind the token to the org with this `ID` (its keys only)")
	expiresIn := m.fs.Duration("expires-in", 0, "lifetime, e.g. 720h (default: no expiry)")
	return m.runs(func(ctx context.Context, args []string) error {
		if _, err := m.parse(args); err != nil {
			return err
		}
		if err := m.required("name", "scopes"); err != nil {
			return err
		}
		body := createAdminTokenRequest{Name: *name, Scopes: commaList(*scopes), TenantID: *tenant, OrgID: *org}
		if m.isSet("expires-in") {
			if *expiresIn <= 0 {
				return m.usageErr("--expires-in must be positive")
			}
			body.ExpiresIn = expiresIn.String()
		}
		return show(ctx, m, "POST", pathOf("v1", "admin-tokens"), nil, body, printCreatedAdminToken)
	})
}

func adminTokensList(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "list [--tenant ID] [--org ID]", "list admin tokens")
	tenant := m.fs.String("tenant", "", "only tokens bound to the tenant with this `ID`")
	org := m.fs.String("org", "", "only tokens bound to the org with this `ID`")
	return m.runs(func(ctx context.Context, args []string) error {
		if _, err := m.parse(args); err != nil {
			return err
		}
		q := url.Values{}
		if *tenant != "" {
			q.Set("tenant_id", *tenant)
		}
		if *org != "" {
			q.Set("org_id", *org)
		}
		return show(ctx, m, "GET", pathOf("v1", "admin-tokens"), q, nil, func(w io.Writer, l list[keystore.AdminToken]) error {
			return printAdminTokens(w, l.Data, time.Now())
		})
	})
}

func adminTokensRevoke(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "revoke ID", "revoke an admin token (its next request is refused)")
	return m.runs(func(ctx context.Context, args []string) error {
		pos, err := m.parse(args, "ID")
		if err != nil {
			return err
		}
		ac, err := m.client()
		if err != nil {
			return err
		}
		if _, err := ac.call(ctx, "DELETE", pathOf("v1", "admin-tokens", pos[0]), nil, nil, nil); err != nil {
			return err
		}
		if m.raw() {
			return m.printValue(struct {
				ID      string `json:"id"`
				Revoked bool   `json:"revoked"`
			}{pos[0], true})
		}
		_, err = fmt.Fprintf(c.stdout, "Revoked admin token %s.\n", cell(pos[0]))
		return err
	})
}

func printAdminTokens(w io.Writer, ts []keystore.AdminToken, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tSCOPES\tTENANT\tORG\tEXPIRES\tCREATED BY")
	for _, t := range ts {
		expires := fmtTimePtr(t.ExpiresAt, "never")
		if t.Expired(now) {
			expires += " (expired)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(t.ID), cell(t.Name), cell(t.Prefix),
			cell(strings.Join(t.Scopes, ",")), cell(t.TenantID), cell(t.OrgID), expires, cell(t.CreatedBy))
	}
	return tw.Flush()
}

// printCreatedAdminToken shows a new token and its secret, which the
// server returns this once and cannot show again.
func printCreatedAdminToken(w io.Writer, t keystore.CreatedAdminToken) error {
	if err := printAdminTokens(w, []keystore.AdminToken{t.AdminToken}, time.Now()); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nAdmin token (shown once, it will not be shown again; store it now):\n%s\n", cell(t.Secret.Reveal()))
	return err
}
