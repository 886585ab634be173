package main

import (
	"context"
	"io"
	"net/url"

	"github.com/keygate/keygate/keystore"
)

const orgsUsage = `Usage:
  keygate orgs create --tenant ID --name NAME
  keygate orgs list [--tenant ID]
  keygate orgs get ID

Every subcommand also takes --admin-url, --admin-token-file and
--output table|json. Run "keygate orgs SUBCOMMAND --help" for details.
`

func runOrgs(ctx context.Context, args []string, c *cli) error {
	return dispatchVerb(ctx, "orgs", orgsUsage, map[string]verbFunc{
		"create": orgsCreate,
		"list":   orgsList,
		"get":    orgsGet,
	}, args, c)
}

func orgsCreate(ctx context.Context, args []string, c *cli) error {
	m := newMgmtCommand(c, "orgs create", "orgs create --tenant ID --name NAME [flags]")
	tenant := m.fs.String("tenant", "", "`ID` of the tenant the org belongs to (required)")
	name := m.fs.String("name", "", "org `name` (required)")
	if _, err := m.parse(args); err != nil {
		return err
	}
	if err := m.required("tenant", "name"); err != nil {
		return err
	}
	body := map[string]string{"tenant_id": *tenant, "name": *name}
	return show(ctx, m, "POST", pathOf("v1", "orgs"), nil, body, printOrg)
}

func orgsList(ctx context.Context, args []string, c *cli) error {
	m := newMgmtCommand(c, "orgs list", "orgs list [--tenant ID] [flags]")
	tenant := m.fs.String("tenant", "", "list only the orgs of the tenant with this `ID`")
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
}

func orgsGet(ctx context.Context, args []string, c *cli) error {
	m := newMgmtCommand(c, "orgs get", "orgs get ID [flags]")
	pos, err := m.parse(args, "ID")
	if err != nil {
		return err
	}
	return show(ctx, m, "GET", pathOf("v1", "orgs", pos[0]), nil, nil, printOrg)
}
