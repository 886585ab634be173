package admin

import (
	"net/http"
	"net/url"
	"time"

	"github.com/keygate/keygate/keystore"
)

func (a *api) adminTokenRoutes() {
	a.handle("POST /v1/admin-tokens", a.createAdminToken)
	a.handle("GET /v1/admin-tokens", a.listAdminTokens)
	a.handle("DELETE /v1/admin-tokens/{token}", a.deleteAdminToken)
}

// adminTokenRequest is the body of POST /v1/admin-tokens.
type adminTokenRequest struct {
	Name      string     `json:"name"`
	Scopes    []string   `json:"scopes"`
	TenantID  string     `json:"tenant_id,omitempty"`
	OrgID     string     `json:"org_id,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	ExpiresIn string     `json:"expires_in,omitempty"`
}

// newAdminToken is the answer to a create: the record and, this once, the
// token under "token". keystore.CreatedAdminToken encodes its secret
// redacted, so it is revealed here, on purpose, and nowhere else.
type newAdminToken struct {
	keystore.AdminToken
	Token string `json:"token"`
}

// createAdminToken mints a token no stronger than the caller: a subset of
// its scopes, within its reach. A bound caller that names no binding gets
// a token bound as it is, never an unbound one.
func (a *api) createAdminToken(w http.ResponseWriter, r *http.Request) error {
	var req adminTokenRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	at, err := a.expiry(req.ExpiresIn, req.ExpiresAt)
	if err != nil {
		return err
	}
	p := PrincipalFrom(r.Context())
	if p == nil {
		return errUnauthenticated // unreachable: every route but the probes authenticates
	}
	spec := keystore.AdminTokenSpec{Name: req.Name, Scopes: req.Scopes, TenantID: req.TenantID, OrgID: req.OrgID, ExpiresAt: at, CreatedBy: p.TokenID}
	if err := a.mintable(r, p, &spec); err != nil {
		return err
	}
	t, err := a.store.CreateAdminToken(r.Context(), spec)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/admin-tokens/"+url.PathEscape(t.ID))
	writeJSON(w, http.StatusCreated, newAdminToken{AdminToken: t.AdminToken, Token: t.Secret.Reveal()})
	return nil
}

// mintable refuses a token that would give its creator more than it has:
// a scope it lacks, a reach wider than its own, or a life longer than its
// own. It fills in the creator's binding and expiry when the request
// names none.
func (a *api) mintable(r *http.Request, p *Principal, spec *keystore.AdminTokenSpec) error {
	if p.Bootstrap {
		return nil
	}
	for _, s := range spec.Scopes {
		if !p.has(s) {
			return &apiError{status: http.StatusForbidden, code: "insufficient_scope", msg: "a token cannot grant the scope " + quote(s) + ", which it does not hold"}
		}
	}
	if p.ExpiresAt != nil {
		if spec.ExpiresAt == nil {
			spec.ExpiresAt = p.ExpiresAt
		}
		if spec.ExpiresAt.After(*p.ExpiresAt) {
			return &apiError{status: http.StatusForbidden, code: "insufficient_scope", msg: "a token cannot create one that outlives it (it expires " + p.ExpiresAt.UTC().Format(time.RFC3339) + ")"}
		}
	}
	switch {
	case p.OrgID != "":
		if spec.OrgID == "" {
			spec.OrgID = p.OrgID
		}
		if spec.OrgID != p.OrgID {
			return outOfReach("org " + quote(spec.OrgID))
		}
		if spec.TenantID != "" && spec.TenantID != p.TenantID {
			return outOfReach("tenant " + quote(spec.TenantID))
		}
	case p.TenantID != "":
		if spec.TenantID == "" {
			spec.TenantID = p.TenantID
		}
		if spec.TenantID != p.TenantID {
			return outOfReach("tenant " + quote(spec.TenantID))
		}
		if spec.OrgID != "" {
			if err := a.reachOrg(r, spec.OrgID); err != nil {
				return err
			}
		}
	}
	return nil
}

// listAdminTokens lists the tokens within the caller's reach: a bound
// token sees the tokens bound to its tenant (or org), never wider ones.
func (a *api) listAdminTokens(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "tenant_id", "org_id"); err != nil {
		return err
	}
	if err := a.reachListing(r, true); err != nil {
		return err
	}
	q := r.URL.Query()
	ts, err := a.store.ListAdminTokens(r.Context(), q.Get("tenant_id"), q.Get("org_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list[keystore.AdminToken]{ts})
	return nil
}

// deleteAdminToken revokes a token the caller could have minted: within
// its reach, with no scope it lacks (so a narrow token cannot lock out the
// tenant's broader ones). Its next request, on any replica, is refused.
func (a *api) deleteAdminToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("token")
	if p := PrincipalFrom(r.Context()); p != nil && !p.Bootstrap {
		t, err := a.store.AdminToken(r.Context(), id)
		if err != nil {
			return err
		}
		if _, ok := bound(r); ok && (t.TenantID != p.TenantID || p.OrgID != "" && t.OrgID != p.OrgID) {
			return outOfReach("admin token " + quote(id))
		}
		for _, s := range t.Scopes {
			if !p.has(s) {
				return &apiError{status: http.StatusForbidden, code: "insufficient_scope", msg: "a token cannot revoke one that holds the scope " + quote(s) + ", which it does not hold"}
			}
		}
	}
	if err := a.store.DeleteAdminToken(r.Context(), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
