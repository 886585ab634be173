package main

import (
	"context"

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
	ac, err := m.client()
	if err != nil {
		return err
	}
	var t keystore.Tenant
	raw, err := ac.call(ctx, "POST", pathOf("v1", "tenants"), nil, map[string]string{"name": *name}, &t)
	if err != nil {
		return err
	}
	if m.json() {
		return printRaw(c.stdout, raw)
	}
	return printTenants(c.stdout, []keystore.Tenant{t})
}

func tenantsList(ctx context.Context, args []string, c *cli) error {
	m := newMgmtCommand(c, "tenants list", "tenants list [flags]")
	if _, err := m.parse(args); err != nil {
		return err
	}
	ac, err := m.client()
	if err != nil {
		return err
	}
	var l struct {
		Data []keystore.Tenant `json:"data"`
	}
	raw, err := ac.call(ctx, "GET", pathOf("v1", "tenants"), nil, nil, &l)
	if err != nil {
		return err
	}
	if m.json() {
		return printRaw(c.stdout, raw)
	}
	return printTenants(c.stdout, l.Data)
}

func tenantsGet(ctx context.Context, args []string, c *cli) error {
	m := newMgmtCommand(c, "tenants get", "tenants get ID [flags]")
	pos, err := m.parse(args, "ID")
	if err != nil {
		return err
	}
	ac, err := m.client()
	if err != nil {
		return err
	}
	var t keystore.Tenant
	raw, err := ac.call(ctx, "GET", pathOf("v1", "tenants", pos[0]), nil, nil, &t)
	if err != nil {
		return err
	}
	if m.json() {
		return printRaw(c.stdout, raw)
	}
	return printTenants(c.stdout, []keystore.Tenant{t})
}
