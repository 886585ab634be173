package envoy

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/keygate/keygate/authz"
)

// HTTP authorization, for proxies that ask over plain HTTP instead of the
// gRPC ext_authz API. The dialects share one listener, told apart by path,
// because each proxy asks and reads the answer its own way; each is one
// file (dialect_*.go):
//
//   - /envoy/<original path>: Envoy's ext_authz http_service;
//   - /nginx: nginx auth_request;
//   - /forward: Traefik forwardAuth and Caddy forward_auth.
const (
	PathEnvoy   = "/envoy"
	PathNginx   = "/nginx"
	PathForward = "/forward"
)

// Headers of the nginx and forward dialects that carry what the proxy
// cannot pass itself: the real status of an answer (and, for nginx, its
// body).
const (
	HeaderStatus = "x-keygate-status"
	HeaderBody   = "x-keygate-body"
)

// HTTPHandler answers HTTP authorization requests from the decider.
type HTTPHandler struct {
	reporting
}

// NewHTTPHandler returns the HTTP authorization handler.
func NewHTTPHandler(d Decider, log *slog.Logger, opts ...Option) *HTTPHandler {
	return &HTTPHandler{reporting: newReporting(d, log, opts)}
}

// dialect is one proxy's way of asking and of reading the answer; each
// lives in its own file (dialect_*.go) and registers its path, so that a new
// proxy is one new file.
type dialect interface {
	// request reads what the proxy says of the original request.
	request(r *http.Request) authz.Request
	// write answers the proxy so that it does what d says: pass the
	// request on (KindAllow), or give the client Keygate's answer.
	write(w http.ResponseWriter, d *authz.Decision)
}

// dialects by path; prefix dialects also serve every path below theirs.
var (
	dialects       = map[string]dialect{}
	prefixDialects = map[string]dialect{}
)

func register(path string, d dialect, prefix bool) {
	dialects[path] = d
	if prefix {
		prefixDialects[path] = d
	}
}

func dialectOf(p string) dialect {
	if d, ok := dialects[p]; ok {
		return d
	}
	for prefix, d := range prefixDialects {
		if strings.HasPrefix(p, prefix+"/") {
			return d
		}
	}
	return nil
}

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	d := dialectOf(r.URL.Path)
	if d == nil {
		http.Error(w, "keygate HTTP authorization: use "+PathEnvoy+"/<path> (Envoy http_service), "+PathNginx+" (nginx auth_request) or "+PathForward+" (Traefik, Caddy)", http.StatusNotFound)
		return
	}
	req := d.request(r)
	dec, err := h.decider.Decide(r.Context(), &req)
	if err != nil {
		h.log.LogAttrs(r.Context(), slog.LevelError, "check failed closed", slog.String("error", err.Error()))
	}
	d.write(w, &dec)
	h.report(r.Context(), "http", &req, &dec, start)
}

// newRequest is the core's view of a request a proxy describes: the
// original method (GET when not said), target ("/" when empty) and host,
// and its headers. The TCP peer is the proxy, never the client: every
// client would share its address (one guesser throttling all of them, an
// allowlist matching the proxy). The client's address comes only from the
// header client_ip names; without one there is none, so the failed-auth
// throttle is off and IP allowlists refuse.
func newRequest(r *http.Request, method, target, host string) authz.Request {
	if target == "" {
		target = "/"
	}
	if method == "" {
		method = http.MethodGet
	}
	return authz.Request{
		Method:  strings.ToUpper(method),
		Path:    target,
		Host:    host,
		Headers: foldHeaders(r.Header),
	}
}

// unroutable returns the first of names (canonical) that h holds more than
// once, or the first (the URI) when h lacks it; "" when all is well. A
// second copy of a routing header (a client's, passed on by a proxy that
// appends) could be what the backend reads, and a proxy that sends no URI
// would have every request decided as "/": the core refuses both. A
// missing method or host means GET and no host, as proxies that send
// neither mean.
func unroutable(h http.Header, names ...string) string {
	for i, n := range names {
		if len(h[n]) > 1 || i == 0 && len(h[n]) == 0 {
			return strings.ToLower(n)
		}
	}
	return ""
}

// foldHeaders gives the core the shape Envoy's CheckRequest has: lower-case
// names, a repeated header joined with ",".
func foldHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		for _, v := range vs {
			authz.AddHeader(out, k, v)
		}
	}
	return out
}

// writeAllow answers 200 with the upstream headers as headers of the
// answer; the proxy's config copies them to the request. A header this
// decision does not set is absent, and the proxy configs drop the
// client's. more adds a dialect's own headers.
func writeAllow(w http.ResponseWriter, d *authz.Decision, more func(http.Header)) {
	out := w.Header()
	for _, s := range d.Set {
		out.Set(s.Name, s.Value)
	}
	for _, s := range d.ResponseHeaders {
		out.Set(s.Name, s.Value)
	}
	if more != nil {
		more(out)
	}
	w.WriteHeader(http.StatusOK)
}

// writeAnswer sends Keygate's own answer (a refusal, or a reply in the
// proxy's place) with status, which no dialect may read as an allow, or
// the request would reach the backend without an identity.
func writeAnswer(w http.ResponseWriter, d *authz.Decision, status int) {
	out := w.Header()
	for _, s := range d.ResponseHeaders {
		out.Set(s.Name, s.Value)
	}
	out.Set(authz.DecisionIDHeader, authz.FormatID(d.ID))
	w.WriteHeader(status)
	if d.Body != "" {
		w.Write([]byte(d.Body))
	}
}
