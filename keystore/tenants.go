package keystore

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/keygate/keygate/keystore/apikey"
)

func newID() (string, error) {
	// Version 7 ids sort by creation time, which gives lists a stable,
	// meaningful order for cursor pagination.
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new id: %w", err)
	}
	return id.String(), nil
}

// CreateTenant stores a new tenant.
func (s *Store) CreateTenant(ctx context.Context, name string) (Tenant, error) {
	if err := validText("name", name, maxNameLen, true); err != nil {
		return Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	id, err := newID()
	if err != nil {
		return Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	t := Tenant{ID: id, Name: name, CreatedAt: s.now()}
	err = s.update(ctx, func(tx Tx, _ func(apikey.Hash)) error {
		if err := putJSON(tx, bucketTenants, t.ID, &t); err != nil {
			return err
		}
		return s.grant(tx, Owner{Kind: AccountTenant, TenantID: t.ID}, t.CreatedAt)
	})
	if err != nil {
		return Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	return t, nil
}

// Tenant returns one tenant.
func (s *Store) Tenant(ctx context.Context, id string) (Tenant, error) {
	var t Tenant
	err := s.view(ctx, func(tx Tx) error {
		var err error
		t, err = getTenant(tx, id)
		return err
	})
	if err != nil {
		return Tenant{}, fmt.Errorf("get tenant: %w", err)
	}
	return t, nil
}

// Tenants lists every tenant in creation order.
func (s *Store) Tenants(ctx context.Context) ([]Tenant, error) {
	out := []Tenant{}
	err := s.view(ctx, func(tx Tx) error {
		return forEachJSON(tx, bucketTenants, func(t *Tenant) { out = append(out, *t) })
	})
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return out, nil
}

// CreateOrg stores a new org inside an existing tenant.
func (s *Store) CreateOrg(ctx context.Context, tenantID, name string) (Org, error) {
	if err := validText("name", name, maxNameLen, true); err != nil {
		return Org{}, fmt.Errorf("create org: %w", err)
	}
	id, err := newID()
	if err != nil {
		return Org{}, fmt.Errorf("create org: %w", err)
	}
	o := Org{ID: id, TenantID: tenantID, Name: name, CreatedAt: s.now()}
	err = s.update(ctx, func(tx Tx, _ func(apikey.Hash)) error {
		if _, err := getTenant(tx, tenantID); err != nil {
			return err
		}
		if err := putJSON(tx, bucketOrgs, o.ID, &o); err != nil {
			return err
		}
		return s.grant(tx, Owner{Kind: AccountOrg, TenantID: tenantID, OrgID: o.ID}, o.CreatedAt)
	})
	if err != nil {
		return Org{}, fmt.Errorf("create org: %w", err)
	}
	return o, nil
}

// Org returns one org.
func (s *Store) Org(ctx context.Context, id string) (Org, error) {
	var o Org
	err := s.view(ctx, func(tx Tx) error {
		var err error
		o, err = getOrg(tx, id)
		return err
	})
	if err != nil {
		return Org{}, fmt.Errorf("get org: %w", err)
	}
	return o, nil
}

// Orgs lists orgs in creation order, those of one tenant when tenantID is
// not empty.
func (s *Store) Orgs(ctx context.Context, tenantID string) ([]Org, error) {
	out := []Org{}
	err := s.view(ctx, func(tx Tx) error {
		return forEachJSON(tx, bucketOrgs, func(o *Org) {
			if tenantID == "" || o.TenantID == tenantID {
				out = append(out, *o)
			}
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list orgs: %w", err)
	}
	return out, nil
}

func getTenant(tx Tx, id string) (Tenant, error) {
	var t Tenant
	found, err := getJSON(tx, bucketTenants, id, &t)
	if err != nil {
		return Tenant{}, err
	}
	if !found {
		return Tenant{}, notFound("tenant", id)
	}
	return t, nil
}

func getOrg(tx Tx, id string) (Org, error) {
	var o Org
	found, err := getJSON(tx, bucketOrgs, id, &o)
	if err != nil {
		return Org{}, err
	}
	if !found {
		return Org{}, notFound("org", id)
	}
	return o, nil
}
