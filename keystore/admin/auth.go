package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/keygate/keygate/internal/secret"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

// errUnauthenticated: no credential, or one that names no live token. It
// is answered 401 with the WWW-Authenticate challenge.
var errUnauthenticated = errors.New("unauthenticated")

// staticToken is a TokenSource that never changes.
func staticToken(v secret.Value) func() (secret.Value, error) {
	return func() (secret.Value, error) { return v, nil }
}

// authenticate finds who the request acts as. An admin token (its own
// prefix) is looked up in the store on every request, never cached, so a
// revoke through any replica holds on the next request here. Anything else
// is compared with the bootstrap token, asked of the source each time so a
// replaced token file takes effect without a restart.
func (a *api) authenticate(r *http.Request) (*Principal, error) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, errUnauthenticated
	}
	token = strings.TrimSpace(token)
	if strings.HasPrefix(token, keystore.AdminTokenFormat.Prefix()+"_") {
		// The checksum refuses a mistyped token before any lookup.
		if _, err := keystore.AdminTokenFormat.Parse(token); err != nil {
			return nil, errUnauthenticated
		}
		t, err := a.store.AdminTokenByHash(r.Context(), apikey.HashOf(token))
		switch {
		case errors.Is(err, keystore.ErrNotFound):
			return nil, errUnauthenticated
		case err != nil:
			return nil, err
		}
		return &Principal{TokenID: t.ID, Name: t.Name, Scopes: t.Scopes, TenantID: t.TenantID, OrgID: t.OrgID, ExpiresAt: t.ExpiresAt}, nil
	}
	boot, err := a.bootstrap()
	if err != nil {
		// Logged without the token; the request cannot be the bootstrap
		// token's while its source cannot be read.
		a.log.LogAttrs(r.Context(), slog.LevelWarn, "admin request: bootstrap token unavailable", slog.String("error", err.Error()))
		return nil, errUnauthenticated
	}
	if boot.IsZero() {
		return nil, errUnauthenticated
	}
	// SHA-256 digests compared in constant time: neither the token's bytes
	// nor its length leak through timing.
	want := sha256.Sum256([]byte(boot.Reveal()))
	got := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return nil, errUnauthenticated
	}
	return &Principal{Name: keystore.CreatedByBootstrap, Bootstrap: true}, nil
}

// has reports whether p holds scope; the bootstrap token holds every one.
func (p *Principal) has(scope string) bool {
	return p.Bootstrap || slices.Contains(p.Scopes, scope)
}

// scopeFor is the scope a route needs, from its pattern ("GET
// /v1/keys/{id}"). Routes are matched by their path's shape rather than
// listed one by one, so a route added later under /v1/keys, /v1/usage or
// /v1/audit needs the right scope without a change here; a route under no
// known prefix returns "", which only the bootstrap token passes (fail
// closed).
func scopeFor(pattern string) string {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		method, path = "", pattern
	}
	read := method == http.MethodGet || method == http.MethodHead
	pick := func(r, w string) string {
		if read {
			return r
		}
		return w
	}
	under := func(prefix string) bool { return path == prefix || strings.HasPrefix(path, prefix+"/") }
	switch {
	case path == "/metrics":
		return pick(keystore.ScopeMetricsRead, "")
	case under("/v1/audit"):
		return pick(keystore.ScopeAuditRead, "")
	case under("/v1/usage"), under("/v1/keys") && strings.HasSuffix(path, "/usage"):
		return pick(keystore.ScopeUsageRead, "")
	case !under("/v1/keys") && (strings.HasSuffix(path, "/credits") || strings.Contains(path, "/credits/")):
		return pick(keystore.ScopeCreditsRead, keystore.ScopeCreditsWrite)
	case under("/v1/admin-tokens"):
		return pick(keystore.ScopeAdminTokensRead, keystore.ScopeAdminTokensWrite)
	case under("/v1/keys"), strings.HasPrefix(path, "/v1/tenants/") && strings.Contains(path, "/users"):
		return pick(keystore.ScopeKeysRead, keystore.ScopeKeysWrite)
	case under("/v1/tenants"), under("/v1/orgs"):
		return pick(keystore.ScopeTenantsRead, keystore.ScopeTenantsWrite)
	}
	return ""
}

// permitted answers 403 insufficient_scope unless p may use route.
func permitted(p *Principal, route string) error {
	if p.Bootstrap {
		return nil
	}
	scope := scopeFor(route)
	if scope == "" {
		return &apiError{status: http.StatusForbidden, code: "insufficient_scope", msg: "only the bootstrap token may use this route"}
	}
	if !p.has(scope) {
		return &apiError{status: http.StatusForbidden, code: "insufficient_scope", msg: "this route needs the scope " + scope}
	}
	return nil
}

// outOfReach is the refusal of a record that exists but lies outside the
// token's tenant or org. It is 403, not 404, so an operator can tell a
// wrong token from a wrong id.
func outOfReach(what string) error {
	return &apiError{status: http.StatusForbidden, code: "out_of_reach", msg: what + " is outside this token's reach"}
}

// bound reports whether the request's principal is bound to a tenant or
// an org, and returns it.
func bound(r *http.Request) (*Principal, bool) {
	p := PrincipalFrom(r.Context())
	return p, p != nil && !p.Bootstrap && (p.TenantID != "" || p.OrgID != "")
}

// reachTenant refuses a tenant outside the token's reach. An org-bound
// token reaches its org's keys only, not the tenant's own records (its
// users, its orgs' creation), so it is refused every tenant id.
func (a *api) reachTenant(r *http.Request, tenantID string) error {
	p, ok := bound(r)
	if !ok {
		return nil
	}
	if p.OrgID != "" || tenantID != p.TenantID {
		return outOfReach("tenant " + quote(tenantID))
	}
	return nil
}

// reachOrg refuses an org outside the token's reach: another tenant's, or
// for an org-bound token any other org. An unknown org is 404.
func (a *api) reachOrg(r *http.Request, orgID string) error {
	p, ok := bound(r)
	if !ok {
		return nil
	}
	if p.OrgID != "" {
		if orgID != p.OrgID {
			return outOfReach("org " + quote(orgID))
		}
		return nil
	}
	o, err := a.store.Org(r.Context(), orgID)
	if err != nil {
		return err
	}
	if o.TenantID != p.TenantID {
		return outOfReach("org " + quote(orgID))
	}
	return nil
}

// reachNewKey refuses a key to be created (or imported) outside the
// token's reach: an org-bound token creates keys in its org only, never
// tenant-level ones.
func (a *api) reachNewKey(r *http.Request, tenantID, orgID string) error {
	p, ok := bound(r)
	if !ok {
		return nil
	}
	if p.OrgID != "" && orgID != p.OrgID {
		return outOfReach("a key outside org " + quote(p.OrgID))
	}
	if tenantID != p.TenantID {
		return outOfReach("tenant " + quote(tenantID))
	}
	return nil
}

// reachKey refuses a key outside the token's reach: another tenant's, or
// for an org-bound token any key not in its org (tenant-level keys
// included). An unknown key is 404. Handlers of routes that name a key
// other than by {id} under /v1/keys/ call it themselves.
func (a *api) reachKey(r *http.Request, keyID string) error {
	p, ok := bound(r)
	if !ok {
		return nil
	}
	k, err := a.store.Key(r.Context(), keyID)
	if err != nil {
		return err
	}
	if k.TenantID != p.TenantID || p.OrgID != "" && k.OrgID != p.OrgID {
		return outOfReach("key " + quote(keyID))
	}
	return nil
}

// reachPath checks the records a route names in its path: {id} under
// /v1/keys/, /v1/orgs/ and /v1/tenants/, and {tenant}. It runs before
// every handler, so a route added under those paths is bounded without
// code of its own. Bodies and query strings are the handlers' to check.
func (a *api) reachPath(r *http.Request) error {
	if _, ok := bound(r); !ok {
		return nil
	}
	_, path, _ := strings.Cut(r.Pattern, " ")
	if t := r.PathValue("tenant"); t != "" {
		if err := a.reachTenant(r, t); err != nil {
			return err
		}
	}
	id := r.PathValue("id")
	if id == "" {
		return nil
	}
	switch {
	case strings.HasPrefix(path, "/v1/keys/{id}"):
		return a.reachKey(r, id)
	case strings.HasPrefix(path, "/v1/orgs/{id}"):
		return a.reachOrg(r, id)
	case strings.HasPrefix(path, "/v1/tenants/{id}"):
		// An org-bound token may read its own tenant's record, the one
		// tenant record it can name.
		if p, _ := bound(r); p.OrgID != "" && id == p.TenantID && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			return nil
		}
		return a.reachTenant(r, id)
	}
	return nil
}

// reachListing narrows a listing's tenant_id and org_id query parameters
// to the token's reach: a filter outside it is refused, and a missing one
// is set, so a bound token's listing never shows another tenant's or
// org's records.
func (a *api) reachListing(r *http.Request, withOrg bool) error {
	p, ok := bound(r)
	if !ok {
		return nil
	}
	q := r.URL.Query()
	if t := q.Get("tenant_id"); t != "" && t != p.TenantID {
		return outOfReach("tenant " + quote(t))
	}
	q.Set("tenant_id", p.TenantID)
	if withOrg {
		if o := q.Get("org_id"); o != "" {
			if err := a.reachOrg(r, o); err != nil {
				return err
			}
		} else if p.OrgID != "" {
			q.Set("org_id", p.OrgID)
		}
	}
	r.URL.RawQuery = q.Encode()
	return nil
}

func quote(s string) string { return `"` + shorten(s) + `"` }
