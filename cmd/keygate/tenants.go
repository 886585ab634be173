package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/keystore"
)

const tenantsLong = `Manage tenants through the admin API.

Usage:
  keygate tenants create --name NAME
  keygate tenants list
  keygate tenants get ID

Every subcommand also takes --admin-url, --admin-token-file and
-o/--output table|json|yaml. Run "keygate tenants SUBCOMMAND --help" for details.`

// createTenantRequest is the body of POST /v1/tenants.
type createTenantRequest struct {
	Name string `json:"name"`
}

func newTenantsCmd(c *cli) *cobra.Command {
	return newGroupCmd(c, "tenants", "manage tenants", tenantsLong,
		tenantsCreate(c), tenantsList(c), tenantsGet(c))
}

func tenantsCreate(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "create --name NAME", "create a tenant")
	name := m.fs.String("name", "", "tenant `name` (required)")
	return m.runs(func(ctx context.Context, args []string) error {
		if _, err := m.parse(args); err != nil {
			return err
		}
		if err := m.required("name"); err != nil {
			return err
		}
		return show(ctx, m, "POST", pathOf("v1", "tenants"), nil, createTenantRequest{Name: *name}, printTenant)
	})
}

func tenantsList(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "list", "list tenants")
	return m.runs(func(ctx context.Context, args []string) error {
		if _, err := m.parse(args); err != nil {
			return err
		}
		return show(ctx, m, "GET", pathOf("v1", "tenants"), nil, nil, func(w io.Writer, l list[keystore.Tenant]) error {
			return printTenants(w, l.Data)
		})
	})
}

func tenantsGet(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "get ID", "show a tenant")
	return m.runs(func(ctx context.Context, args []string) error {
		pos, err := m.parse(args, "ID")
		if err != nil {
			return err
		}
		return show(ctx, m, "GET", pathOf("v1", "tenants", pos[0]), nil, nil, printTenant)
	})
}
