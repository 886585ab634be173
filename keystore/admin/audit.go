package admin

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/keygate/keygate/keystore"
)

// The audit log records every admin write (POST, PUT, PATCH, DELETE), however
// it ended, and every read refused for want of a token or a right (401,
// 403). Reads that succeed, or fail on their own terms (a 404 for an unknown
// id), are not recorded: they change nothing and would drown the writes.
//
// An entry names who (the token's id and name, never the token), what (the
// action, from the route), on what (ids from the path and the created
// record's Location, never the body, which holds a new key's secret), how
// it ended, the request's id and the client's address. Each is stored
// through the store and logged as one Info line.

// requestIDHeader carries the request's id, from the client or made here,
// and is echoed on every answer so a client can quote it.
const requestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds a client's request id: it is stored and logged.
const maxRequestIDLen = 128

// requestInfo is what ServeHTTP knows at the start of a request that the
// audit observer needs at its end: the request's id, and the answer's
// header, where a create names its new record (Location).
type requestInfo struct {
	id     string
	header http.Header
}

type requestInfoKey struct{}

// begin gives r its request id (the client's when it is sane, else a new
// one), echoes it in the answer, and remembers the answer's header for the
// audit log. It runs first in ServeHTTP, so handlers and observers share
// the id.
func begin(w http.ResponseWriter, r *http.Request) *http.Request {
	id := r.Header.Get(requestIDHeader)
	if !saneRequestID(id) {
		id = uuid.NewString()
	}
	w.Header().Set(requestIDHeader, id)
	return r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, &requestInfo{id: id, header: w.Header()}))
}

// RequestID returns the admin request's id; empty outside one.
func RequestID(ctx context.Context) string {
	if ri, _ := ctx.Value(requestInfoKey{}).(*requestInfo); ri != nil {
		return ri.id
	}
	return ""
}

// saneRequestID accepts the ids proxies and clients generate (UUIDs,
// hex, base64url) and nothing that could forge a log line or a field.
func saneRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// auditActions names the actions of the routes whose name the generic
// rule (actionOf) would get wrong or that read better named.
var auditActions = map[string]string{
	"POST /v1/keys/import":    "keys.import",
	"GET /v1/keys/{id}/usage": "keys.usage",
	"GET /metrics":            "metrics.read",
	routeBackup:               "store.backup",
	// The three owners' accounts close under one verb each.
	"DELETE /v1/tenants/{tenant}/credits":              "tenants.credits_delete",
	"DELETE /v1/orgs/{id}/credits":                     "orgs.credits_delete",
	"DELETE /v1/tenants/{tenant}/users/{user}/credits": "users.credits_delete",
}

// Actions of requests that reached no handler.
const (
	actionUnauthorized = "admin.unauthorized"
	actionNoRoute      = "admin.no_route"
)

// actionOf names a route's action, "<records>.<verb>": the records are the
// last literal segments of the path (admin/tokens: admin_tokens), the verb
// the method's (create, list, get, put, update, delete) or, for a POST to
// a literal after an id (keys/{id}/revoke), that literal. A route added
// later is named without a change here.
func actionOf(route string) string {
	if a, ok := auditActions[route]; ok {
		return a
	}
	method, path, ok := strings.Cut(route, " ")
	if !ok {
		return actionNoRoute
	}
	path = strings.TrimPrefix(strings.TrimPrefix(path, "/"), "v1/")
	groups, endsWithID := literalGroups(path)
	if len(groups) == 0 {
		return actionNoRoute
	}
	last := groups[len(groups)-1]
	if method == http.MethodPost && !endsWithID && len(groups) > 1 {
		return groups[len(groups)-2] + "." + last
	}
	verb := strings.ToLower(method)
	switch {
	case method == http.MethodGet && endsWithID:
		verb = "get"
	case method == http.MethodGet:
		verb = "list"
	case method == http.MethodPost:
		verb = "create"
	case method == http.MethodPatch:
		verb = "update"
	}
	return last + "." + verb
}

// literalGroups splits a pattern's path into its runs of literal segments,
// each joined by "_", and says whether it ends with a wildcard.
func literalGroups(path string) (groups []string, endsWithID bool) {
	var run []string
	for seg := range strings.SplitSeq(path, "/") {
		if strings.HasPrefix(seg, "{") {
			if len(run) > 0 {
				groups = append(groups, strings.Join(run, "_"))
				run = nil
			}
			endsWithID = true
			continue
		}
		if seg != "" {
			// admin-tokens: admin_tokens, like the targets' kinds.
			run = append(run, strings.ReplaceAll(seg, "-", "_"))
			endsWithID = false
		}
	}
	if len(run) > 0 {
		groups = append(groups, strings.Join(run, "_"))
	}
	return groups, endsWithID
}

// targetKinds maps a collection in a path to the kind of id that follows
// it.
var targetKinds = map[string]string{
	"tenants": "tenant_id", "orgs": "org_id", "keys": "key_id", "users": "user_id",
	"admin-tokens": "admin_token_id",
}

// kindOf is the target kind of a wildcard named name after the literals
// group: the collection's kind ("keys/{id}": key_id, "admin-tokens/{token}":
// admin_token_id), else one made of the names.
func kindOf(group, name string) string {
	if k, ok := targetKinds[group]; ok {
		return k
	}
	if name != "id" {
		return strings.ReplaceAll(strings.TrimSuffix(name, "_id"), "-", "_") + "_id"
	}
	return strings.ReplaceAll(strings.TrimSuffix(group, "s"), "-", "_") + "_id"
}

// maxTargetLen bounds one stored id: path values of a refused request are
// whatever its client sent.
const maxTargetLen = 200

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// pathTargets reads the ids in path by the route's pattern, segment by
// segment. The mux is not asked: a request refused before it ran (401,
// 403) has no path values.
func pathTargets(route, escapedPath string) map[string]string {
	_, pattern, ok := strings.Cut(route, " ")
	if !ok {
		return nil
	}
	pat := strings.Split(strings.Trim(pattern, "/"), "/")
	segs := strings.Split(strings.Trim(escapedPath, "/"), "/")
	if len(pat) != len(segs) {
		return nil
	}
	out := map[string]string{}
	var run []string // the literals before the wildcard: "admin", "tokens"
	for i, p := range pat {
		if !strings.HasPrefix(p, "{") {
			if i > 0 && strings.HasPrefix(pat[i-1], "{") {
				run = nil
			}
			if p != "v1" {
				run = append(run, p)
			}
			continue
		}
		name := strings.Trim(p, "{}.")
		v, err := url.PathUnescape(segs[i])
		if err != nil || v == "" || name == "" || name == "$" {
			continue
		}
		out[kindOf(strings.Join(run, "_"), name)] = clip(v, maxTargetLen)
	}
	return out
}

// locationTargets reads the ids a Location names ("/v1/keys/<id>",
// "/v1/tenants/<t>/users/<u>").
func locationTargets(loc string) map[string]string {
	u, err := url.Parse(loc)
	if err != nil {
		return nil
	}
	segs := strings.Split(strings.Trim(u.EscapedPath(), "/"), "/")
	out := map[string]string{}
	for i := 0; i+1 < len(segs); i++ {
		kind, ok := targetKinds[segs[i]]
		if !ok {
			continue
		}
		if v, err := url.PathUnescape(segs[i+1]); err == nil && v != "" {
			out[kind] = clip(v, maxTargetLen)
			i++
		}
	}
	return out
}

// recorded reports whether a request goes into the audit log.
func recorded(method string, route string, status int) bool {
	if public[strings.TrimPrefix(route, "GET ")] {
		return false
	}
	if route == routeBackup {
		// A read, but of everything: who took a copy, and when, is kept.
		return true
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return status == http.StatusUnauthorized || status == http.StatusForbidden
	}
	return true
}

// auditLog is the observer that writes the audit log.
type auditLog struct {
	store *keystore.Store
	log   *slog.Logger
	// timeout bounds one append: the request was answered already, and
	// a store that does not answer must not hold its connection long.
	timeout time.Duration
	// anon limits how many unauthenticated requests are stored: anyone
	// who reaches the port can send them, and each would be a store write.
	// Beyond the limit they are still logged.
	anon *tokenBucket
}

const auditAppendTimeout = 2 * time.Second

// Unauthenticated entries stored per second, and in a burst (variables for
// tests).
var anonAuditRate, anonAuditBurst float64 = 10, 100

// enableAudit serves GET /v1/audit and records requests in the log.
func (a *api) enableAudit() {
	al := &auditLog{store: a.store, log: a.log, timeout: auditAppendTimeout, anon: newTokenBucket(anonAuditRate, anonAuditBurst)}
	a.observers = append(a.observers, al.observe)
	a.handle("GET /v1/audit", a.listAudit)
}

func (al *auditLog) observe(o Observed) {
	r := o.Request
	if !recorded(r.Method, o.Route, o.Status) {
		return
	}
	e := keystore.AuditEntry{
		Outcome:    keystore.AuditOutcome(o.Status),
		Status:     o.Status,
		RequestID:  RequestID(r.Context()),
		ClientAddr: clientAddr(r.RemoteAddr),
		Method:     clip(r.Method, 16),
		Route:      o.Route,
	}
	ctx := context.WithoutCancel(r.Context())
	switch {
	case o.Status == http.StatusUnauthorized && o.Principal == nil:
		// Who sent it is unknown, and what it names is unchecked: only the
		// route it tried is kept.
		e.Action = actionUnauthorized
	case o.Route == "":
		e.Action = actionNoRoute
	default:
		e.Action = actionOf(o.Route)
		e.Targets = pathTargets(o.Route, r.URL.EscapedPath())
		if ri, _ := r.Context().Value(requestInfoKey{}).(*requestInfo); ri != nil && e.Outcome == keystore.AuditOK {
			if loc := ri.header.Get("Location"); loc != "" {
				addTargets(&e, locationTargets(loc))
			}
		}
	}
	if p := o.Principal; p != nil {
		e.TokenID, e.TokenName = p.TokenID, p.Name
	}
	al.scope(ctx, &e, o.Principal)
	stored := true
	if o.Principal == nil && !al.anon.take(time.Now()) {
		stored = false
	} else {
		actx, cancel := context.WithTimeout(ctx, al.timeout)
		got, err := al.store.AppendAudit(actx, e)
		cancel()
		if err != nil {
			stored = false
			al.log.LogAttrs(ctx, slog.LevelError, "admin audit: entry not stored",
				slog.String("action", e.Action), slog.String("request_id", e.RequestID), slog.String("error", err.Error()))
		} else {
			e = got
		}
	}
	attrs := []slog.Attr{
		slog.String("id", e.ID),
		slog.String("action", e.Action),
		slog.String("outcome", e.Outcome),
		slog.Int("status", e.Status),
		slog.String("token_id", e.TokenID),
		slog.String("token_name", e.TokenName),
		slog.String("request_id", e.RequestID),
		slog.String("client_addr", e.ClientAddr),
		slog.String("method", e.Method),
		slog.String("route", e.Route),
	}
	for _, k := range slices.Sorted(maps.Keys(e.Targets)) {
		attrs = append(attrs, slog.String(k, e.Targets[k]))
	}
	if !stored {
		attrs = append(attrs, slog.Bool("stored", false))
	}
	al.log.LogAttrs(ctx, slog.LevelInfo, "admin audit", attrs...)
}

// addTargets adds ids a Location names; one that differs from the id of
// the same kind in the path (a rotation's new key) is kept as new_<kind>.
func addTargets(e *keystore.AuditEntry, more map[string]string) {
	if len(more) == 0 {
		return
	}
	if e.Targets == nil {
		e.Targets = map[string]string{}
	}
	for k, v := range more {
		switch old, ok := e.Targets[k]; {
		case !ok:
			e.Targets[k] = v
		case old != v:
			e.Targets["new_"+k] = v
		}
	}
}

// scope sets the tenant and org the entry is about, so that a token bound
// to one sees it. They come from the targets, looked up when only a key or
// an org is named; a bound principal's own binding wins over them, since a
// target outside it was refused. A lookup that fails (a deleted key) leaves
// them empty: such entries are seen by unbound tokens only.
func (al *auditLog) scope(ctx context.Context, e *keystore.AuditEntry, p *Principal) {
	if p == nil {
		return // unauthenticated: what it names is unchecked, and not looked up
	}
	tenant, org := e.Targets["tenant_id"], e.Targets["org_id"]
	lctx, cancel := context.WithTimeout(ctx, al.timeout)
	defer cancel()
	if id := e.Targets["key_id"]; id != "" {
		if k, err := al.store.Key(lctx, id); err == nil {
			tenant, org = k.TenantID, k.OrgID
		}
	} else if org != "" && tenant == "" {
		if o, err := al.store.Org(lctx, org); err == nil {
			tenant = o.TenantID
		}
	}
	switch {
	case p.OrgID != "":
		e.TenantID, e.OrgID = p.TenantID, p.OrgID
		if e.TenantID == "" && org == p.OrgID {
			e.TenantID = tenant
		}
	case p.TenantID != "":
		e.TenantID = p.TenantID
		if tenant == p.TenantID {
			e.OrgID = org
		}
	default:
		e.TenantID, e.OrgID = tenant, org
	}
}

// clientAddr is the host of the connection's peer. X-Forwarded-For is not
// read: any client can send it.
func clientAddr(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return clip(remote, 64)
}

// auditPage is GET /v1/audit's answer: the list envelope with paging.
type auditPage struct {
	Data       []keystore.AuditEntry `json:"data"`
	NextCursor string                `json:"next_cursor,omitempty"`
	HasMore    bool                  `json:"has_more"`
}

// listAudit answers GET /v1/audit?since=&until=&target=&action=&cursor=&limit=.
// A token bound to a tenant or org sees only the entries about it.
func (a *api) listAudit(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "since", "until", "target", "action", "cursor", "limit"); err != nil {
		return err
	}
	q := r.URL.Query()
	f := keystore.AuditFilter{Target: q.Get("target"), Action: q.Get("action")}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		s := q.Get(p.name)
		if s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return badRequest("%s %q: want an RFC 3339 time such as \"2026-11-30T12:00:00Z\"", p.name, s)
		}
		*p.dst = t
	}
	limit := 0
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return badRequest("limit %q: want a positive whole number", s)
		}
		limit = n
	}
	if p := PrincipalFrom(r.Context()); p != nil && !p.Bootstrap {
		f.TenantID, f.OrgID = p.TenantID, p.OrgID
	}
	page, err := a.store.ListAudit(r.Context(), f, q.Get("cursor"), limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, auditPage{Data: page.Entries, NextCursor: page.NextCursor, HasMore: page.HasMore})
	return nil
}

// tokenBucket allows rate events a second, burst at once.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate, burst float64) *tokenBucket {
	return &tokenBucket{rate: rate, burst: burst, tokens: burst}
}

func (b *tokenBucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
