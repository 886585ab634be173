package admin

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
)

// userRequest is the body of PUT /v1/tenants/{tenant}/users/{user}: the
// whole record, which replaces the last. Limits are taken raw and read one
// by one, so that a bad one is refused naming the limit and what is wrong
// with it rather than as an invalid body.
type userRequest struct {
	Name     string                     `json:"name,omitempty"`
	Metadata map[string]string          `json:"metadata,omitempty"`
	Limits   map[string]json.RawMessage `json:"limits,omitempty"`
}

func userPath(tenantID, userID string) string {
	return "/v1/tenants/" + url.PathEscape(tenantID) + "/users/" + url.PathEscape(userID)
}

// putUser creates (201) or replaces (200) a user's record.
func (a *api) putUser(w http.ResponseWriter, r *http.Request) error {
	var req userRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	limits, err := readLimits(req.Limits)
	if err != nil {
		return err
	}
	spec := keystore.UserSpec{Name: req.Name, Metadata: req.Metadata, Limits: limits}
	u, created, err := a.store.PutUser(r.Context(), r.PathValue("tenant"), r.PathValue("user"), spec)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		w.Header().Set("Location", userPath(u.TenantID, u.ID))
		status = http.StatusCreated
	}
	writeJSON(w, status, u)
	return nil
}

// readLimits decodes a set of named limits. Only the JSON is checked
// here; the store checks names and values.
func readLimits(raw map[string]json.RawMessage) (map[string]ratelimit.Limit, error) {
	if raw == nil {
		return nil, nil
	}
	out := make(map[string]ratelimit.Limit, len(raw))
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		var l ratelimit.Limit
		if err := json.Unmarshal(raw[name], &l); err != nil {
			return nil, badRequest("limit %q: %v", shorten(name), err)
		}
		out[name] = l
	}
	return out, nil
}

func (a *api) getUser(w http.ResponseWriter, r *http.Request) error {
	u, err := a.store.User(r.Context(), r.PathValue("tenant"), r.PathValue("user"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

// listUsers pages through a tenant's users in user id order, with the
// cursor and limit of key listings.
func (a *api) listUsers(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "cursor", "limit"); err != nil {
		return err
	}
	q := r.URL.Query()
	n := 0
	if s := q.Get("limit"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			return badRequest("limit %q: want a positive whole number", s)
		}
	}
	p, err := a.store.ListUsers(r.Context(), r.PathValue("tenant"), q.Get("cursor"), n)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (a *api) deleteUser(w http.ResponseWriter, r *http.Request) error {
	if err := a.store.DeleteUser(r.Context(), r.PathValue("tenant"), r.PathValue("user")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
