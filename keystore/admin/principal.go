package admin

import (
	"context"
	"net/http"
	"time"
)

// Principal is who an admin request acts as: the bootstrap token (every
// right, TokenID empty) or an admin token record, with its scopes and the
// tenant or org it is bound to.
type Principal struct {
	// TokenID names the admin token record; empty for the bootstrap token.
	TokenID string
	// Name is the token's name, for the audit log ("bootstrap" for the
	// bootstrap token).
	Name string
	// Scopes are the token's rights; nil with Bootstrap: all of them.
	Scopes []string
	// TenantID and OrgID, when set, bound what the token sees and manages.
	TenantID, OrgID string
	Bootstrap       bool
	// ExpiresAt is when the token stops working; nil: never. A token
	// cannot create one that outlives it.
	ExpiresAt *time.Time
}

type principalKey struct{}

// withPrincipal returns ctx carrying p.
func withPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns who the request acts as; nil before
// authentication or when it failed.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// Observed is one admin request as it ended, for the audit log and the
// request metrics: its route pattern (empty when none matched), the status
// answered, and who made it (nil: not authenticated).
type Observed struct {
	Request   *http.Request
	Route     string
	Status    int
	Principal *Principal
}

// observer is told of every request once it has been answered.
type observer func(Observed)
