package envoy

import (
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

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
// names, a repeated header joined with ",". The lower-case names are
// written into one buffer (net/http's are canonical, "X-Api-Key"), rather
// than allocated one by one.
func foldHeaders(h http.Header) map[string]string {
	n := 0
	for k := range h {
		n += len(k)
	}
	names := make([]byte, 0, n)
	out := make(map[string]string, len(h))
	for k, vs := range h {
		var name string
		if ascii(k) {
			start := len(names)
			for i := 0; i < len(k); i++ {
				c := k[i]
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				names = append(names, c)
			}
			// names never grows past its capacity, so the name's bytes
			// stay where they are and are never written again.
			name = unsafe.String(unsafe.SliceData(names[start:]), len(k))
		} else {
			// net/http refuses such names; lower-cased as AddHeader
			// would, should one arrive.
			name = strings.ToLower(k)
		}
		for _, v := range vs {
			if prev, ok := out[name]; ok {
				v = prev + "," + v
			}
			out[name] = v
		}
	}
	return out
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// canonical caches http.CanonicalHeaderKey of the names answers carry:
// the identity and rate-limit headers of the config, a bounded set, so a
// Check does not canonicalize each of them again.
var canonical atomic.Pointer[map[string]string]

// maxCanonical bounds the cache, should names ever come from elsewhere.
const maxCanonical = 256

func canonicalKey(name string) string {
	m := canonical.Load()
	if m != nil {
		if c, ok := (*m)[name]; ok {
			return c
		}
	}
	c := http.CanonicalHeaderKey(name)
	if m == nil || len(*m) < maxCanonical {
		next := make(map[string]string, 16)
		if m != nil {
			maps.Copy(next, *m)
		}
		next[strings.Clone(name)] = c
		// A concurrent writer may replace this one: a name lost is
		// canonicalized again next time, nothing more.
		canonical.Store(&next)
	}
	return c
}

// setHeaders sets hs on out, every value in one allocation.
func setHeaders(out http.Header, hs []authz.Header) {
	vals := make([]string, len(hs))
	for i, s := range hs {
		vals[i] = s.Value
		out[canonicalKey(s.Name)] = vals[i : i+1 : i+1]
	}
}

// writeAllow answers 200 with the upstream headers as headers of the
// answer; the proxy's config copies them to the request. A header this
// decision does not set is absent, and the proxy configs drop the
// client's. more adds a dialect's own headers.
func writeAllow(w http.ResponseWriter, d *authz.Decision, more func(http.Header)) {
	out := w.Header()
	setHeaders(out, d.Set)
	setHeaders(out, d.ResponseHeaders)
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
	setHeaders(out, d.ResponseHeaders)
	out.Set(authz.DecisionIDHeader, authz.FormatID(d.ID))
	w.WriteHeader(status)
	if d.Body != "" {
		w.Write([]byte(d.Body))
	}
}
