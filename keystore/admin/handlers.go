package admin

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/keygate/keygate/keystore"
)

func (a *api) routes() {
	a.handle("GET /healthz", a.healthz)
	a.handle("GET /readyz", a.readyz)
	a.handle(routeOpenAPI, a.openapi)

	a.handle("POST /v1/tenants", a.createTenant)
	a.handle("GET /v1/tenants", a.listTenants)
	a.handle("GET /v1/tenants/{id}", byID(a.store.Tenant))
	a.handle("PUT /v1/tenants/{tenant}/users/{user}", a.putUser)
	a.handle("GET /v1/tenants/{tenant}/users/{user}", a.getUser)
	a.handle("GET /v1/tenants/{tenant}/users", a.listUsers)
	a.handle("DELETE /v1/tenants/{tenant}/users/{user}", a.deleteUser)

	a.handle("POST /v1/orgs", a.createOrg)
	a.handle("GET /v1/orgs", a.listOrgs)
	a.handle("GET /v1/orgs/{id}", byID(a.store.Org))

	a.handle("POST /v1/keys", a.createKey)
	a.handle("POST /v1/keys/import", a.importKey)
	a.handle("GET /v1/keys", a.listKeys)
	a.handle("GET /v1/keys/{id}", byID(a.store.Key))
	a.handle("PATCH /v1/keys/{id}", a.updateKey)
	a.handle("POST /v1/keys/{id}/revoke", a.revokeKey)
	a.handle("POST /v1/keys/{id}/rotate", a.rotateKey)
	a.handle("POST /v1/keys/{id}/credits", a.credits)
	a.handle("DELETE /v1/keys/{id}", a.deleteKey)
	a.handle("GET /v1/keys/{id}/usage", a.keyUsage)
	a.handle("GET /v1/usage", a.usageTotals)
	a.handle(routeBackup, a.backup)
	a.accountRoutes()

	a.adminTokenRoutes()
}

// byID answers GET of one record by the {id} in the path.
func byID[T any](get func(ctx context.Context, id string) (T, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		v, err := get(r.Context(), r.PathValue("id"))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, v)
		return nil
	}
}

type status struct {
	Status string `json:"status"`
}

func (a *api) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, status{"ok"})
	return nil
}

// The bodies of the routes that take one. Each is decoded by decode, which
// accepts exactly these json names.
type (
	tenantRequest struct {
		Name string `json:"name"`
	}
	orgRequest struct {
		TenantID string `json:"tenant_id"`
		Name     string `json:"name"`
	}
	keyRequest struct {
		keystore.KeySpec
		ExpiresIn string `json:"expires_in,omitempty"`
	}
	importRequest struct {
		keystore.Import
		ExpiresIn string `json:"expires_in,omitempty"`
	}
	updateRequest struct {
		keystore.KeyUpdate
		ExpiresIn string `json:"expires_in,omitempty"`
	}
	// revokeRequest is empty: revoke takes no options. An empty object is
	// accepted for clients that always send one, and anything else is
	// refused as a typo.
	revokeRequest  struct{}
	creditsRequest struct {
		Add *int64 `json:"add,omitempty"`
		Set *int64 `json:"set,omitempty"`
	}
	rotateRequest struct {
		GracePeriod string `json:"grace_period,omitempty"`
	}
)

// newKey is the answer to a create or a rotation: the key and, this once,
// its secret under "key". keystore.CreatedKey encodes its secret redacted,
// so the secret is revealed here, on purpose, and nowhere else.
type newKey struct {
	keystore.Key
	Secret string `json:"key"`
}

func reveal(k keystore.CreatedKey) newKey { return newKey{Key: k.Key, Secret: k.Secret.Reveal()} }

// list is the envelope of every listing, so a field can be added beside
// data later without breaking clients.
type list[T any] struct {
	Data []T `json:"data"`
}

func (a *api) createTenant(w http.ResponseWriter, r *http.Request) error {
	var req tenantRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if _, ok := bound(r); ok {
		return outOfReach("a new tenant")
	}
	t, err := a.store.CreateTenant(r.Context(), req.Name)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/tenants/"+url.PathEscape(t.ID))
	writeJSON(w, http.StatusCreated, t)
	return nil
}

func (a *api) listTenants(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	ts, err := a.store.Tenants(r.Context())
	if err != nil {
		return err
	}
	if p, ok := bound(r); ok {
		ts = slices.DeleteFunc(ts, func(t keystore.Tenant) bool { return t.ID != p.TenantID })
	}
	writeJSON(w, http.StatusOK, list[keystore.Tenant]{ts})
	return nil
}

func (a *api) createOrg(w http.ResponseWriter, r *http.Request) error {
	var req orgRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if req.TenantID == "" {
		return badRequest("tenant_id is required")
	}
	if err := a.reachTenant(r, req.TenantID); err != nil {
		return err
	}
	o, err := a.store.CreateOrg(r.Context(), req.TenantID, req.Name)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/orgs/"+url.PathEscape(o.ID))
	writeJSON(w, http.StatusCreated, o)
	return nil
}

func (a *api) listOrgs(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "tenant_id"); err != nil {
		return err
	}
	if err := a.reachListing(r, false); err != nil {
		return err
	}
	tenantID := r.URL.Query().Get("tenant_id")
	// The store lists nothing for an unknown tenant; a 404 tells the
	// operator that the id, not the tenant, is wrong.
	if tenantID != "" {
		if _, err := a.store.Tenant(r.Context(), tenantID); err != nil {
			return err
		}
	}
	orgs, err := a.store.Orgs(r.Context(), tenantID)
	if err != nil {
		return err
	}
	if p, ok := bound(r); ok && p.OrgID != "" {
		orgs = slices.DeleteFunc(orgs, func(o keystore.Org) bool { return o.ID != p.OrgID })
	}
	writeJSON(w, http.StatusOK, list[keystore.Org]{orgs})
	return nil
}

func (a *api) createKey(w http.ResponseWriter, r *http.Request) error {
	var req keyRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	at, err := a.expiry(req.ExpiresIn, req.ExpiresAt)
	if err != nil {
		return err
	}
	req.ExpiresAt = at
	if err := a.reachNewKey(r, req.TenantID, req.OrgID); err != nil {
		return err
	}
	k, err := a.store.CreateKey(r.Context(), req.KeySpec)
	if err != nil {
		return err
	}
	return created(w, k.ID, reveal(k))
}

func (a *api) importKey(w http.ResponseWriter, r *http.Request) error {
	if isBulkImport(r, r.Pattern) {
		return a.bulkImport(w, r)
	}
	var req importRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	at, err := a.expiry(req.ExpiresIn, req.ExpiresAt)
	if err != nil {
		return err
	}
	req.ExpiresAt = at
	if err := a.reachNewKey(r, req.TenantID, req.OrgID); err != nil {
		return err
	}
	k, err := a.store.ImportKey(r.Context(), req.Import)
	if err != nil {
		return err
	}
	return created(w, k.ID, k)
}

func (a *api) listKeys(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "tenant_id", "org_id", "status", "cursor", "limit"); err != nil {
		return err
	}
	if err := a.reachListing(r, true); err != nil {
		return err
	}
	q := r.URL.Query()
	f := keystore.ListFilter{
		TenantID: q.Get("tenant_id"),
		OrgID:    q.Get("org_id"),
		State:    keystore.State(q.Get("status")),
		Cursor:   q.Get("cursor"),
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return badRequest("limit %q: want a positive whole number", s)
		}
		f.Limit = n
	}
	if f.TenantID != "" {
		if _, err := a.store.Tenant(r.Context(), f.TenantID); err != nil {
			return err
		}
	}
	if f.OrgID != "" {
		if _, err := a.store.Org(r.Context(), f.OrgID); err != nil {
			return err
		}
	}
	p, err := a.store.ListKeys(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (a *api) updateKey(w http.ResponseWriter, r *http.Request) error {
	var req updateRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if req.ExpiresIn != "" && req.ClearExpiry {
		return badRequest("give expires_in or clear_expiry, not both")
	}
	at, err := a.expiry(req.ExpiresIn, req.ExpiresAt)
	if err != nil {
		return err
	}
	req.ExpiresAt = at
	k, err := a.store.UpdateKey(r.Context(), r.PathValue("id"), req.KeyUpdate)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k)
	return nil
}

func (a *api) revokeKey(w http.ResponseWriter, r *http.Request) error {
	var req revokeRequest
	if err := decode(r, &req, true); err != nil {
		return err
	}
	k, err := a.store.RevokeKey(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k)
	return nil
}

// credits refills ({"add": n}, n may be negative) or sets ({"set": n}) a
// key's prepaid balance; setting one makes an unmetered key metered.
func (a *api) credits(w http.ResponseWriter, r *http.Request) error {
	var req creditsRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	var (
		k   keystore.Key
		err error
	)
	switch {
	case (req.Add == nil) == (req.Set == nil):
		return badRequest("give exactly one of add and set")
	case req.Add != nil:
		k, err = a.store.AddCredits(r.Context(), r.PathValue("id"), *req.Add)
	default:
		k, err = a.store.SetCredits(r.Context(), r.PathValue("id"), *req.Set)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k)
	return nil
}

func (a *api) rotateKey(w http.ResponseWriter, r *http.Request) error {
	var req rotateRequest
	if err := decode(r, &req, true); err != nil {
		return err
	}
	var grace time.Duration
	if req.GracePeriod != "" {
		d, err := time.ParseDuration(req.GracePeriod)
		if err != nil || d < 0 {
			return badRequest("grace_period %q: want a duration such as \"1h\" or \"30m\"", req.GracePeriod)
		}
		grace = d
	}
	k, err := a.store.RotateKey(r.Context(), r.PathValue("id"), grace)
	if err != nil {
		return err
	}
	return created(w, k.ID, reveal(k))
}

func (a *api) deleteKey(w http.ResponseWriter, r *http.Request) error {
	if err := a.store.DeleteKey(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// expiry resolves expires_in against the clock here, because a relative
// lifetime is what operators think in and the store only knows instants.
func (a *api) expiry(in string, at *time.Time) (*time.Time, error) {
	if in == "" {
		return at, nil
	}
	if at != nil {
		return nil, badRequest("give expires_in or expires_at, not both")
	}
	d, err := time.ParseDuration(in)
	if err != nil || d <= 0 {
		return nil, badRequest("expires_in %q: want a positive duration such as \"720h\"", in)
	}
	t := a.now().Add(d).UTC()
	return &t, nil
}

// onlyParams refuses query parameters a route does not know: a misspelt
// filter would otherwise widen a listing to every tenant's keys.
func onlyParams(r *http.Request, known ...string) error {
	for name := range r.URL.Query() {
		ok := false
		for _, k := range known {
			ok = ok || name == k
		}
		if !ok {
			return badRequest("unknown query parameter %q", name)
		}
	}
	return nil
}

func keyPath(id string) string { return "/v1/keys/" + url.PathEscape(id) }

// created answers 201 with a new key (created, imported or rotated) and
// where to find it.
func created(w http.ResponseWriter, id string, v any) error {
	w.Header().Set("Location", keyPath(id))
	writeJSON(w, http.StatusCreated, v)
	return nil
}
