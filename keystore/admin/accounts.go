package admin

import (
	"net/http"

	"github.com/keygate/keygate/keystore"
)

// The credit accounts of tenants, orgs and users (keystore/accounts.go):
// one balance every key under the owner spends. Each owner has the same
// four routes under its own path, so a token's reach over the owner is
// what reachPath already checks ({tenant}, or {id} under /v1/orgs/).
func (a *api) accountRoutes() {
	for _, base := range []string{"/v1/tenants/{tenant}", "/v1/orgs/{id}", "/v1/tenants/{tenant}/users/{user}"} {
		a.handle("GET "+base+"/credits", a.getAccount)
		a.handle("POST "+base+"/credits", a.changeAccount)
		a.handle("DELETE "+base+"/credits", a.deleteAccount)
		a.handle("GET "+base+"/credits/usage", a.accountUsage)
	}
}

// ownerOf reads the account's owner from the route's path.
func ownerOf(r *http.Request) keystore.Owner {
	switch t, u := r.PathValue("tenant"), r.PathValue("user"); {
	case u != "":
		return keystore.Owner{Kind: keystore.AccountUser, TenantID: t, UserID: u}
	case t != "":
		return keystore.Owner{Kind: keystore.AccountTenant, TenantID: t}
	}
	return keystore.Owner{Kind: keystore.AccountOrg, OrgID: r.PathValue("id")}
}

// accountRequest changes an account: exactly one of add (which may be
// negative), set (which opens the account if the owner has none), refill
// (a schedule) and clear_refill.
type accountRequest struct {
	Add         *int64           `json:"add,omitempty"`
	Set         *int64           `json:"set,omitempty"`
	Refill      *keystore.Refill `json:"refill,omitempty"`
	ClearRefill bool             `json:"clear_refill,omitempty"`
}

func (a *api) getAccount(w http.ResponseWriter, r *http.Request) error {
	acct, err := a.store.Account(r.Context(), ownerOf(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, acct)
	return nil
}

func (a *api) changeAccount(w http.ResponseWriter, r *http.Request) error {
	var req accountRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	n := 0
	for _, given := range []bool{req.Add != nil, req.Set != nil, req.Refill != nil, req.ClearRefill} {
		if given {
			n++
		}
	}
	if n != 1 {
		return badRequest("give exactly one of add, set, refill and clear_refill")
	}
	var (
		acct keystore.Account
		err  error
		o    = ownerOf(r)
	)
	switch {
	case req.Add != nil:
		acct, err = a.store.AddAccountCredits(r.Context(), o, *req.Add)
	case req.Set != nil:
		acct, err = a.store.SetAccountCredits(r.Context(), o, *req.Set)
	case req.Refill != nil:
		acct, err = a.store.SetAccountRefill(r.Context(), o, req.Refill)
	default:
		acct, err = a.store.SetAccountRefill(r.Context(), o, nil)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, acct)
	return nil
}

func (a *api) deleteAccount(w http.ResponseWriter, r *http.Request) error {
	if err := a.store.DeleteAccount(r.Context(), ownerOf(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// accountUsageList is the answer of GET .../credits/usage: the usage of
// the owner's keys per hour or day, credits spent included.
type accountUsageList struct {
	Owner       string                 `json:"account_id"`
	Granularity keystore.Granularity   `json:"granularity"`
	Data        []keystore.UsageBucket `json:"data"`
}

// accountUsage answers what the owner's keys did and spent per hour or
// day: the last 24 hours (hour) or 30 days (day) unless from and to say
// otherwise.
func (a *api) accountUsage(w http.ResponseWriter, r *http.Request) error {
	g, from, to, err := a.usagePeriod(r)
	if err != nil {
		return err
	}
	o := ownerOf(r)
	bs, err := a.store.AccountUsage(r.Context(), o, from, to, g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, accountUsageList{Owner: o.ID(), Granularity: g, Data: bs})
	return nil
}
