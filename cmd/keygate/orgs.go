package main

import (
	"context"
	"io"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/keystore"
)

const orgsLong = `Manage organizations through the admin API.

Usage:
  keygate orgs create --tenant ID --name NAME
  keygate orgs list [--tenant ID]
  keygate orgs get ID

Every subcommand also takes --admin-url, --admin-token-file and
-o/--output table|json|yaml. Run "keygate orgs SUBCOMMAND --help" for details.`

// createOrgRequest is the body of POST /v1/orgs.
type createOrgRequest struct {
	TenantID string `json:"tenant_id"`
	Name     string `json:"name"`
}

func newOrgsCmd(c *cli) *cobra.Command {
	return newGroupCmd(c, "orgs", "manage organizations", orgsLong,
		orgsCreate(c), orgsList(c), orgsGet(c))
}

func orgsCreate(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "create --tenant ID --name NAME", "create an org")
	tenant := m.fs.String("tenant", "", "`ID` of the tenant the org belongs to (required)")
	name := m.fs.String("name", "", "org `name` (required)")
	return m.runs(func(ctx context.Context, args []string) error {
		if _, err := m.parse(args); err != nil {
			return err
		}
		if err := m.required("tenant", "name"); err != nil {
			return err
		}
		body := createOrgRequest{TenantID: *tenant, Name: *name}
		return show(ctx, m, "POST", pathOf("v1", "orgs"), nil, body, printOrg)
	})
}

func orgsList(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "list [--tenant ID]", "list orgs")
	tenant := m.fs.String("tenant", "", "list only the orgs of the tenant with this `ID`")
	return m.runs(func(ctx context.Context, args []string) error {
		if _, err := m.parse(args); err != nil {
			return err
		}
		q := url.Values{}
		if *tenant != "" {
			q.Set("tenant_id", *tenant)
		}
		return show(ctx, m, "GET", pathOf("v1", "orgs"), q, nil, func(w io.Writer, l list[keystore.Org]) error {
			return printOrgs(w, l.Data)
		})
	})
}

func orgsGet(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "get ID", "show an org")
	return m.runs(func(ctx context.Context, args []string) error {
		pos, err := m.parse(args, "ID")
		if err != nil {
			return err
		}
		return show(ctx, m, "GET", pathOf("v1", "orgs", pos[0]), nil, nil, printOrg)
	})
}
