package keystore

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/keygate/keygate/keystore/apikey"
)

// Scopes an admin token may hold. The bootstrap token holds them all.
const (
	ScopeTenantsRead      = "tenants:read"
	ScopeTenantsWrite     = "tenants:write"
	ScopeKeysRead         = "keys:read"
	ScopeKeysWrite        = "keys:write"
	ScopeUsageRead        = "usage:read"
	ScopeAuditRead        = "audit:read"
	ScopeMetricsRead      = "metrics:read"
	ScopeAdminTokensRead  = "admin-tokens:read"
	ScopeAdminTokensWrite = "admin-tokens:write"
	// Credit accounts of tenants, orgs and users: reading them, and
	// changing their balances. Apart from keys:write, so that a customer's
	// token that manages its keys cannot grant itself credits.
	ScopeCreditsRead  = "credits:read"
	ScopeCreditsWrite = "credits:write"
)

// AdminScopes lists every admin token scope, in the order documented.
var AdminScopes = []string{
	ScopeTenantsRead, ScopeTenantsWrite, ScopeKeysRead, ScopeKeysWrite,
	ScopeUsageRead, ScopeAuditRead, ScopeMetricsRead,
	ScopeAdminTokensRead, ScopeAdminTokensWrite,
	ScopeCreditsRead, ScopeCreditsWrite,
}

// AdminTokenFormat is the text form of admin tokens: a prefix of its own,
// so an API key presented to the admin API (or an admin token to Envoy) is
// refused by its shape, and a mistyped token by its checksum, before any
// lookup.
var AdminTokenFormat = apikey.MustFormat("kga")

// CreatedByBootstrap is AdminToken.CreatedBy for tokens the bootstrap
// token created.
const CreatedByBootstrap = "bootstrap"

// AdminToken is an admin API credential other than the bootstrap token.
// Only its hash is stored; the token itself is shown once, at creation.
type AdminToken struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	// TenantID and OrgID bind the token: it sees and manages only that
	// tenant, or only that org's keys. An org-bound token carries its org's
	// tenant too.
	TenantID  string     `json:"tenant_id,omitempty"`
	OrgID     string     `json:"org_id,omitempty"`
	Prefix    string     `json:"prefix"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// CreatedBy is the id of the token that created this one, or
	// CreatedByBootstrap.
	CreatedBy string `json:"created_by"`
}

// Expired reports whether the token no longer authenticates at now.
func (t AdminToken) Expired(now time.Time) bool {
	return t.ExpiresAt != nil && !now.Before(*t.ExpiresAt)
}

// HasScope reports whether the token holds scope.
func (t AdminToken) HasScope(scope string) bool { return slices.Contains(t.Scopes, scope) }

// storedAdminToken is the record at rest: the hash (hex) is kept so that a
// delete removes its index entry in the same transaction.
type storedAdminToken struct {
	AdminToken
	Hash string `json:"hash"`
}

// AdminTokenSpec is what CreateAdminToken needs.
type AdminTokenSpec struct {
	Name      string
	Scopes    []string
	TenantID  string
	OrgID     string
	ExpiresAt *time.Time
	CreatedBy string
}

// CreatedAdminToken is a new admin token and, this once, its secret.
type CreatedAdminToken struct {
	AdminToken
	Secret apikey.Secret `json:"token"`
}

// ValidAdminScopes checks scopes against AdminScopes and returns them
// deduplicated, in AdminScopes order, so equal sets compare equal.
func ValidAdminScopes(scopes []string) ([]string, error) {
	if len(scopes) == 0 {
		return nil, refuse(ErrInvalid, "scopes are required")
	}
	for _, s := range scopes {
		if !slices.Contains(AdminScopes, s) {
			return nil, refuse(ErrInvalid, "unknown admin scope %q", shortText(s))
		}
	}
	out := make([]string, 0, len(scopes))
	for _, s := range AdminScopes {
		if slices.Contains(scopes, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// shortText keeps a refusal from quoting a huge value back.
func shortText(s string) string {
	if len(s) > maxScopeLen {
		return s[:maxScopeLen] + "…"
	}
	return s
}

// CreateAdminToken generates and stores an admin token. An org binding
// implies the org's tenant; a tenant given with it must be that tenant.
func (s *Store) CreateAdminToken(ctx context.Context, spec AdminTokenSpec) (CreatedAdminToken, error) {
	fail := func(err error) (CreatedAdminToken, error) {
		return CreatedAdminToken{}, fmt.Errorf("create admin token: %w", err)
	}
	if err := validText("name", spec.Name, maxNameLen, true); err != nil {
		return fail(err)
	}
	scopes, err := ValidAdminScopes(spec.Scopes)
	if err != nil {
		return fail(err)
	}
	now := s.now()
	if spec.ExpiresAt != nil {
		if !spec.ExpiresAt.After(now) {
			return fail(refuse(ErrInvalid, "expires_at is not in the future"))
		}
		at := spec.ExpiresAt.UTC()
		spec.ExpiresAt = &at
	}
	id, err := newID()
	if err != nil {
		return fail(err)
	}
	raw, err := AdminTokenFormat.Generate(apikey.EnvLive)
	if err != nil {
		return fail(err)
	}
	secret := apikey.NewSecret(raw)
	h := secret.Hash()
	createdBy := spec.CreatedBy
	if createdBy == "" {
		createdBy = CreatedByBootstrap
	}
	rec := storedAdminToken{
		AdminToken: AdminToken{
			ID: id, Name: spec.Name, Scopes: scopes,
			TenantID: spec.TenantID, OrgID: spec.OrgID,
			Prefix:    apikey.DisplayPrefix(raw),
			CreatedAt: now, ExpiresAt: spec.ExpiresAt, CreatedBy: createdBy,
		},
		Hash: hex.EncodeToString(h[:]),
	}
	err = s.update(ctx, func(tx Tx, _ func(apikey.Hash)) error {
		if rec.OrgID != "" {
			o, err := getOrg(tx, rec.OrgID)
			if err != nil {
				return err
			}
			if rec.TenantID != "" && rec.TenantID != o.TenantID {
				return refuse(ErrInvalid, "org %q does not belong to tenant %q", rec.OrgID, rec.TenantID)
			}
			rec.TenantID = o.TenantID
		}
		if rec.TenantID != "" {
			if _, err := getTenant(tx, rec.TenantID); err != nil {
				return err
			}
		}
		if err := tx.Put(bucketAdminTokenHashes, []byte(rec.Hash), []byte(rec.ID)); err != nil {
			return err
		}
		return putJSON(tx, bucketAdminTokens, rec.ID, &rec)
	})
	if err != nil {
		return fail(err)
	}
	return CreatedAdminToken{AdminToken: rec.AdminToken, Secret: secret}, nil
}

// AdminTokenByHash finds the token whose secret hashes to h. It reads the
// backend every time, never a cache: a token revoked through any replica
// is refused on its next request everywhere. An expired token is not
// found.
func (s *Store) AdminTokenByHash(ctx context.Context, h apikey.Hash) (AdminToken, error) {
	var rec storedAdminToken
	err := s.view(ctx, func(tx Tx) error {
		id, err := tx.Get(bucketAdminTokenHashes, []byte(hex.EncodeToString(h[:])))
		if err != nil {
			return err
		}
		if id == nil {
			return notFound("admin token", "")
		}
		rec, err = getAdminToken(tx, string(id))
		return err
	})
	if err == nil && rec.Expired(s.now()) {
		err = notFound("admin token", rec.ID)
	}
	if err != nil {
		return AdminToken{}, fmt.Errorf("look up admin token: %w", err)
	}
	return rec.AdminToken, nil
}

// AdminToken returns one admin token's record, expired or not.
func (s *Store) AdminToken(ctx context.Context, id string) (AdminToken, error) {
	var rec storedAdminToken
	err := s.view(ctx, func(tx Tx) error {
		var err error
		rec, err = getAdminToken(tx, id)
		return err
	})
	if err != nil {
		return AdminToken{}, fmt.Errorf("get admin token: %w", err)
	}
	return rec.AdminToken, nil
}

// ListAdminTokens lists admin tokens in creation order: those bound to
// orgID when it is set, else those bound to tenantID (its org-bound ones
// included) when that is set, else all.
func (s *Store) ListAdminTokens(ctx context.Context, tenantID, orgID string) ([]AdminToken, error) {
	out := []AdminToken{}
	err := s.view(ctx, func(tx Tx) error {
		return forEachJSON(tx, bucketAdminTokens, func(t *storedAdminToken) {
			switch {
			case orgID != "" && t.OrgID != orgID:
			case tenantID != "" && t.TenantID != tenantID:
			default:
				out = append(out, t.AdminToken)
			}
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	return out, nil
}

// DeleteAdminToken revokes an admin token: its record and its hash go in
// one transaction, so its next request is refused.
func (s *Store) DeleteAdminToken(ctx context.Context, id string) error {
	err := s.update(ctx, func(tx Tx, _ func(apikey.Hash)) error {
		rec, err := getAdminToken(tx, id)
		if err != nil {
			return err
		}
		if err := tx.Delete(bucketAdminTokenHashes, []byte(rec.Hash)); err != nil {
			return err
		}
		return tx.Delete(bucketAdminTokens, []byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete admin token: %w", err)
	}
	return nil
}

func getAdminToken(tx Tx, id string) (storedAdminToken, error) {
	var rec storedAdminToken
	if id == "" {
		return rec, notFound("admin token", id)
	}
	found, err := getJSON(tx, bucketAdminTokens, id, &rec)
	if err != nil {
		return rec, err
	}
	if !found {
		return rec, notFound("admin token", id)
	}
	return rec, nil
}
