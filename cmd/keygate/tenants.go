package main

import (
	"context"
	"io"

	"github.com/keygate/keygate/keystore"
)

const tenantsUsage = `Usage:
  keygate tenants create --name NAME
  keygate tenants list
  keygate tenants get ID

Every subcommand also takes --admin-url, --admin-token-file and
--output table|json. Run "keygate tenants SUBCOMMAND --help" for details.
`

func runTenants(ctx context.Context, args []string, c *cli) error {
	return dispatchVerb(ctx, "tenants", tenantsUsage, map[string]verbFunc{
		"create": tenantsCreate,
		"list":   tenantsList,
		"get":    tenantsGet,
	}, args, c)
}

func tenantsCreate(ctx context.Context, args []string, c *cli) error {
	m := newMgmtCommand(c, "tenants create", "tenants create --name NAME [flags]")
	name := m.fs.String("name", "", "tenant `name` (required)")
	if _, err := m.parse(args); err != nil {
		return err
	}
	if err := m.required("name"); err != nil {
		return err
	}
	return show(ctx, m, "POST", pathOf("v1", "tenants"), nil, map[string]string{"name": *name}, printTenant)
}

func tenantsList(ctx context.Context, args []string, c *cli) error {
	m := newMgmtCommand(c, "tenants list", "tenants list [flags]")
	if _, err := m.parse(args); err != nil {
		return err
	}
	return show(ctx, m, "GET", pathOf("v1", "tenants"), nil, nil, func(w io.Writer, l list[keystore.Tenant]) error {
		return printTenants(w, l.Data)
	})
}

func tenantsGet(ctx context.Context, args []string, c *cli) error {
	m := newMgmtCommand(c, "tenants get", "tenants get ID [flags]")
	pos, err := m.parse(args, "ID")
	if err != nil {
		return err
	}
	return show(ctx, m, "GET", pathOf("v1", "tenants", pos[0]), nil, nil, printTenant)
}
