package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/keygate/keygate/internal/secret"
	"github.com/keygate/keygate/internal/vizerror"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin/ui"
)

// Options configures the admin API.
type Options struct {
	// Token is the bootstrap token: every right on every route but the
	// probes, which need none. Token or TokenSource is required.
	Token secret.Value
	// TokenSource, when set, is asked for the bootstrap token on every
	// request that presents one, so a replaced token file takes effect
	// without a restart; it should be cheap (cache, re-read on change). An
	// error refuses the bootstrap token (401) until it is readable again.
	TokenSource func() (secret.Value, error)
	// Logger receives one Debug line per request and the causes of 500s.
	// Nil: discard.
	Logger *slog.Logger
	// Ready lists what /readyz probes, concurrently, each within
	// ReadyTimeout: every dependency a Check needs (the store, a shared
	// rate limiter), so that a replica whose Checks would fail is taken out
	// of service. Empty: always ready.
	Ready []ReadyCheck
	// ReadyTimeout bounds each probe of Ready. Zero: 1 s.
	ReadyTimeout time.Duration
	// MaxBodyBytes bounds a request body. Zero: 1 MiB.
	MaxBodyBytes int64
	// MaxImportBytes bounds the NDJSON body of a bulk import (POST
	// /v1/keys/import), which is streamed line by line, each line at most
	// 64 KiB. Zero: 512 MiB.
	MaxImportBytes int64
	// Now turns expires_in into expires_at. Nil: time.Now.
	Now func() time.Time
	// Metrics, when set, is served at GET /metrics behind the same token
	// (Prometheus sends it with `authorization` in its scrape config).
	Metrics http.Handler
	// RequestMetrics, when set, is told of every request once answered,
	// to count them by route pattern and status.
	RequestMetrics func(Observed)
	// Audit records every write and every refused request in the store's
	// audit log, and serves it at GET /v1/audit.
	Audit bool
	// Console serves the key console (package ui) at /ui/, without the
	// token: the page holds no secret, and every call it makes to the API
	// carries the token its user signs in with. False: not served.
	Console bool
}

// statusClientClosedRequest is nginx's status for a request its client
// closed before the answer; net/http has no name for it.
const statusClientClosedRequest = 499

// realm is sent in the WWW-Authenticate challenge of every 401.
const realm = "keygate-admin"

const defaultMaxBodyBytes = 1 << 20

const routeMetrics = "GET /metrics"

// api holds what every handler needs.
type api struct {
	store     *keystore.Store
	log       *slog.Logger
	ready     []*probe
	maxBody   int64
	maxImport int64
	now       func() time.Time
	bootstrap func() (secret.Value, error)
	mux       *http.ServeMux
	// patterns lists what mux serves, in the order registered, so that
	// tests can hold it against the OpenAPI document.
	patterns []string
	// observers are told of every request once it has been answered
	// (the audit log, request metrics).
	observers []observer
	// console: the key console is served at /ui/.
	console bool
}

// New returns the admin API handler over s.
func New(s *keystore.Store, opts Options) (http.Handler, error) {
	if s == nil {
		return nil, errors.New("admin: nil store")
	}
	if opts.Token.IsZero() && opts.TokenSource == nil {
		return nil, errors.New("admin: a token is required")
	}
	bootstrap := opts.TokenSource
	if bootstrap == nil {
		bootstrap = staticToken(opts.Token)
	}
	if opts.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("admin: negative MaxBodyBytes %d", opts.MaxBodyBytes)
	}
	ready, err := newProbes(opts.Ready, opts.ReadyTimeout)
	if err != nil {
		return nil, err
	}
	a := &api{
		store:     s,
		log:       opts.Logger,
		ready:     ready,
		maxBody:   opts.MaxBodyBytes,
		maxImport: opts.MaxImportBytes,
		now:       opts.Now,
		bootstrap: bootstrap,
		mux:       http.NewServeMux(),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.maxBody == 0 {
		a.maxBody = defaultMaxBodyBytes
	}
	if a.maxImport <= 0 {
		a.maxImport = defaultMaxImportBytes
	}
	if a.now == nil {
		a.now = time.Now
	}
	if opts.RequestMetrics != nil {
		a.observers = append(a.observers, opts.RequestMetrics)
	}
	a.routes()
	if opts.Audit {
		a.enableAudit()
	}
	if opts.Metrics != nil {
		a.mux.Handle(routeMetrics, opts.Metrics)
		a.patterns = append(a.patterns, routeMetrics)
	}
	if opts.Console {
		a.console = true
		// Not in a.patterns: the console is not part of the API, and the
		// OpenAPI document does not describe it.
		a.mux.Handle("GET "+consolePrefix, ui.Handler())
		a.mux.Handle("GET /ui", http.RedirectHandler(consolePrefix, http.StatusMovedPermanently))
	}
	return a, nil
}

// public lists the paths served without the token: probes run by kubelets
// and load balancers that hold no secret, and the OpenAPI document, which
// holds none either and is read by tools before anyone signs in.
var public = map[string]bool{"/healthz": true, "/readyz": true, "/v1/openapi.json": true}

// consolePrefix is where the console's assets are served (when on), without
// the token like the paths in public: they are static files holding nothing.
const consolePrefix = "/ui/"

// isPublic reports whether r is served without the token. The console is
// recognised by the route matched, not the path's prefix: a path such as
// /ui/../v1/keys matches the API route it cleans to, and needs the token.
func (a *api) isPublic(r *http.Request, route string) bool {
	return public[r.URL.Path] || a.console && (route == "GET "+consolePrefix || route == "GET /ui")
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	h := sw.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	r = begin(sw, r)

	// The pattern, not the path, is logged: paths carry ids and the pattern
	// is what a reader groups requests by.
	handler, route := a.mux.Handler(r)
	req := r // the request as the handler saw it, principal included
	defer func() {
		a.log.LogAttrs(r.Context(), slog.LevelDebug, "admin request",
			slog.String("method", r.Method),
			slog.String("route", route),
			slog.Int("status", sw.status()),
			slog.Duration("duration", time.Since(start)))
		o := Observed{Request: req, Route: route, Status: sw.status(), Principal: PrincipalFrom(req.Context())}
		for _, fn := range a.observers {
			fn(o)
		}
	}()

	if !a.isPublic(r, route) {
		p, err := a.authenticate(r)
		switch {
		case errors.Is(err, errUnauthenticated):
			h.Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
			writeError(sw, http.StatusUnauthorized, "unauthorized", "a valid admin bearer token is required")
			return
		case err != nil:
			a.fail(sw, r, err)
			return
		}
		req = r.WithContext(withPrincipal(r.Context(), p))
		r = req
		if route != "" {
			if err := permitted(p, route); err != nil {
				a.fail(sw, r, err)
				return
			}
		}
	}
	if route == "" {
		// ServeMux answers unknown paths and methods in plain text; keep
		// the API's JSON error shape (and the Allow header) instead.
		a.unrouted(sw, r, handler)
		return
	}
	limit := a.maxBody
	if isBulkImport(r, route) {
		limit = a.maxImport
	}
	if r.ContentLength > limit {
		writeError(sw, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body is larger than %d bytes", limit))
		return
	}
	// The original writer is given to MaxBytesReader so that it can tell
	// the server to close a connection whose body was cut off.
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	a.mux.ServeHTTP(sw, r)
}

func (a *api) unrouted(w http.ResponseWriter, r *http.Request, h http.Handler) {
	cw := &captureWriter{header: http.Header{}}
	h.ServeHTTP(cw, r)
	if cw.code == http.StatusMethodNotAllowed {
		if allow := cw.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method "+r.Method+" is not allowed on this path")
		return
	}
	writeError(w, http.StatusNotFound, "not_found", "no such route")
}

func (a *api) tooLargeMessage() string {
	return fmt.Sprintf("request body is larger than %d bytes", a.maxBody)
}

// handlerFunc is a route handler; a returned error becomes the response.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (a *api) handle(pattern string, fn handlerFunc) {
	a.patterns = append(a.patterns, pattern)
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		// Reach is checked here, where the path's values are known, for
		// every route (see reachPath).
		err := a.reachPath(r)
		if err == nil {
			err = fn(w, r)
		}
		if err != nil {
			a.fail(w, r, err)
		}
	})
}

// apiError is a failure of the request itself, with the status it earns.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, code: "invalid_request", msg: fmt.Sprintf(format, args...)}
}

// fail answers err. The client sees a message meant for it and nothing
// else of err: an apiError's, or the one a store refusal marks as visible
// (vizerror), or a generic one for the status; never the operations and
// causes the error wraps, which are logged instead.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		ae  *apiError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &ae):
		writeError(w, ae.status, ae.code, ae.msg)
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", a.tooLargeMessage())
	case errors.Is(err, keystore.ErrOrgKeyLimit):
		a.refused(w, r, err, http.StatusConflict, "org_key_limit", "the organization already has its maximum of usable keys")
	case errors.Is(err, keystore.ErrInvalid):
		a.refused(w, r, err, http.StatusBadRequest, "invalid_request", "invalid request")
	case errors.Is(err, keystore.ErrNotFound):
		a.refused(w, r, err, http.StatusNotFound, "not_found", "not found")
	case errors.Is(err, keystore.ErrNoAccount):
		a.refused(w, r, err, http.StatusNotFound, "no_account", "the owner has no credit balance")
	case errors.Is(err, keystore.ErrNotMetered):
		a.refused(w, r, err, http.StatusConflict, "not_metered", "the key has no credit balance")
	case errors.Is(err, keystore.ErrConflict):
		a.refused(w, r, err, http.StatusConflict, "conflict", "the request conflicts with the stored state")
	case errors.Is(err, keystore.ErrUnconfirmed):
		// Committed: retrying would apply it twice. The replica that did not
		// confirm is named, so the operator can look at it: a backend's
		// ErrUnconfirmed says which replica and revision, and nothing else,
		// so its text is the fallback.
		a.refused(w, r, err, http.StatusServiceUnavailable, "unconfirmed", err.Error())
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client hung up, which cancelled the store call (etcd; a bbolt
		// write completes): no one reads this answer, and the store is not
		// at fault. 499 is nginx's status for it, for the request log.
		writeError(w, statusClientClosedRequest, "client_closed_request", "the client closed the request")
	case errors.Is(err, keystore.ErrUnavailable):
		a.log.LogAttrs(r.Context(), slog.LevelWarn, "admin request: key store unavailable",
			slog.String("method", r.Method), slog.String("route", r.Pattern), slog.String("error", err.Error()))
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the key store is unavailable")
	case errors.Is(err, keystore.ErrClosed):
		// Only seen while the server shuts down: a retry elsewhere may work,
		// which 503 says and 500 does not.
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the key store is closed")
	default:
		a.log.LogAttrs(r.Context(), slog.LevelError, "admin request failed",
			slog.String("method", r.Method),
			slog.String("route", r.Pattern),
			slog.String("error", err.Error()))
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
	}
}

// refused answers a request the store refused. The client sees the
// message the store marked as visible, else fallback; the whole error,
// with the operations that wrap it, goes to the debug log.
func (a *api) refused(w http.ResponseWriter, r *http.Request, err error, status int, code, fallback string) {
	msg, ok := vizerror.As(err)
	if !ok {
		msg = fallback
	}
	a.log.LogAttrs(r.Context(), slog.LevelDebug, "admin request refused",
		slog.String("method", r.Method),
		slog.String("route", r.Pattern),
		slog.Int("status", status),
		slog.String("error", err.Error()))
	writeError(w, status, code, msg)
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Every value written here is a plain struct of strings, times and
		// maps of strings; failing to encode one is a programming error.
		status = http.StatusInternalServerError
		b = []byte(`{"error":"internal error","code":"internal"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// statusWriter remembers the status for the request log.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// captureWriter records what ServeMux's built-in 404 and 405 handlers would
// send, so it can be re-sent as JSON.
type captureWriter struct {
	header http.Header
	code   int
}

func (w *captureWriter) Header() http.Header { return w.header }

func (w *captureWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return len(b), nil
}

func (w *captureWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
