package admin

import (
	"net/http"
	"time"

	"github.com/keygate/keygate/keystore"
)

// keyUsageList is the answer of GET /v1/keys/{id}/usage: the list
// envelope, with what the buckets are beside them.
type keyUsageList struct {
	KeyID       string                 `json:"key_id"`
	Granularity keystore.Granularity   `json:"granularity"`
	Data        []keystore.UsageBucket `json:"data"`
}

// keyUsage answers a key's usage per hour or day. Without from and to it
// shows the last 24 hours (hour) or 30 days (day), the current one last.
func (a *api) keyUsage(w http.ResponseWriter, r *http.Request) error {
	g, from, to, err := a.usagePeriod(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	bs, err := a.store.KeyUsage(r.Context(), id, from, to, g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, keyUsageList{KeyID: id, Granularity: g, Data: bs})
	return nil
}

// usagePeriod reads a usage series' query: granularity (hour, the
// default, or day), from and to; without them the last 24 hours or 30
// days, the current one last.
func (a *api) usagePeriod(r *http.Request) (g keystore.Granularity, from, to time.Time, err error) {
	if err := onlyParams(r, "from", "to", "granularity"); err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	g = keystore.Granularity(r.URL.Query().Get("granularity"))
	if g == "" {
		g = keystore.Hourly
	}
	span := 23 * time.Hour
	if g == keystore.Daily {
		span = 29 * 24 * time.Hour
	}
	from, to, err = a.period(r, span)
	return g, from, to, err
}

// usageTotals answers the summed usage of a tenant's or an org's keys,
// over the last 24 hours unless from and to say otherwise.
func (a *api) usageTotals(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "tenant_id", "org_id", "from", "to"); err != nil {
		return err
	}
	// A bound token's totals are narrowed to its tenant or org.
	if err := a.reachListing(r, true); err != nil {
		return err
	}
	q := r.URL.Query()
	if q.Get("tenant_id") == "" && q.Get("org_id") == "" {
		return badRequest("give tenant_id or org_id")
	}
	from, to, err := a.period(r, 23*time.Hour)
	if err != nil {
		return err
	}
	rep, err := a.store.UsageTotals(r.Context(), q.Get("tenant_id"), q.Get("org_id"), from, to)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// period reads from and to (RFC 3339 times or UTC dates); to defaults to
// now, from to span before to.
func (a *api) period(r *http.Request, span time.Duration) (from, to time.Time, err error) {
	q := r.URL.Query()
	to = a.now()
	if s := q.Get("to"); s != "" {
		if to, err = parseInstant(s); err != nil {
			return time.Time{}, time.Time{}, badRequest("to %q: want an RFC 3339 time or a date such as 2026-11-30", s)
		}
	}
	from = to.Add(-span)
	if s := q.Get("from"); s != "" {
		if from, err = parseInstant(s); err != nil {
			return time.Time{}, time.Time{}, badRequest("from %q: want an RFC 3339 time or a date such as 2026-11-30", s)
		}
	}
	return from, to, nil
}

func parseInstant(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Parse(time.DateOnly, s)
}
