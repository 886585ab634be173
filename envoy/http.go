package envoy

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/authz"
)

// HTTP authorization, for proxies that ask over plain HTTP instead of the
// gRPC ext_authz API. Three dialects share one listener, told apart by
// path, because each proxy reads the answer differently:
//
//   - /envoy/<original path>: Envoy's ext_authz http_service (set
//     path_prefix: /envoy). Envoy sends the original method and path and
//     allows only on 200; on 200 it copies the allowed_upstream_headers to
//     the upstream request and removes what x-envoy-auth-headers-to-remove
//     lists; any other status goes to the client with its body (5xx count
//     as errors, answered with status_on_error, 403 by default).
//   - /nginx: nginx auth_request. The original URI and method come in
//     X-Original-URI and X-Original-Method. nginx understands only 2xx, 401
//     and 403 (anything else becomes 500) and never shows the client the
//     subrequest's body, so a refusal is answered 401 or 403 with the real
//     status and body in X-Keygate-Status and X-Keygate-Body, which the
//     example's error_page maps back (429 included).
//   - /forward: Traefik forwardAuth and Caddy forward_auth. The original URI,
//     method and host come in X-Forwarded-Uri, X-Forwarded-Method and
//     X-Forwarded-Host; a 2xx allows, anything else goes to the client as is.
const (
	PathEnvoy   = "/envoy"
	PathNginx   = "/nginx"
	PathForward = "/forward"
)

// Headers of the nginx dialect that carry what nginx cannot pass.
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

type dialect int

const (
	dialectEnvoy dialect = iota
	dialectNginx
	dialectForward
)

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var (
		d      dialect
		method string
		target string
		host   string
	)
	hdr := r.Header
	var routing []string
	switch p := r.URL.Path; {
	case p == PathNginx:
		d, method, target, host = dialectNginx, hdr.Get("X-Original-Method"), hdr.Get("X-Original-URI"), r.Host
		routing = nginxRouting
	case p == PathForward:
		d, method, target, host = dialectForward, hdr.Get("X-Forwarded-Method"), hdr.Get("X-Forwarded-Uri"), hdr.Get("X-Forwarded-Host")
		routing = forwardRouting
	case p == PathEnvoy || strings.HasPrefix(p, PathEnvoy+"/"):
		d, method, target, host = dialectEnvoy, r.Method, strings.TrimPrefix(r.URL.RequestURI(), PathEnvoy), r.Host
	default:
		http.Error(w, "keygate HTTP authorization: use "+PathEnvoy+"/<path> (Envoy http_service), "+PathNginx+" (nginx auth_request) or "+PathForward+" (Traefik, Caddy)", http.StatusNotFound)
		return
	}
	if target == "" {
		target = "/"
	}
	if method == "" {
		method = http.MethodGet
	}
	req := authz.Request{
		Method:  strings.ToUpper(method),
		Path:    target,
		Host:    host,
		Headers: foldHeaders(hdr),
		// The TCP peer here is the proxy, never the client: every client
		// would share its address (one guesser throttling all of them, an
		// allowlist matching the proxy). The client's address comes only
		// from the header client_ip names; without one there is none, so
		// the failed-auth throttle is off and IP allowlists refuse.
		Peer:       "",
		Unroutable: unroutable(hdr, routing),
	}
	dec, err := h.decider.Decide(r.Context(), &req)
	if err != nil {
		h.log.LogAttrs(r.Context(), slog.LevelError, "check failed closed", slog.String("error", err.Error()))
	}
	writeHTTP(w, d, &dec)
	h.report(r.Context(), "http", &req, &dec, start)
}

// The headers that tell a dialect where the request goes, the URI first.
// A second copy of any (a client's, passed on by a proxy that appends)
// could be what the backend reads, and a proxy that sends no URI would
// have every request decided as "/": the core refuses both. A missing
// method or host means GET and no host, as proxies that send neither
// mean. net/http already refuses a repeated Host (the nginx dialect's).
var (
	nginxRouting   = []string{"X-Original-Uri", "X-Original-Method"}
	forwardRouting = []string{"X-Forwarded-Uri", "X-Forwarded-Method", "X-Forwarded-Host"}
)

// unroutable returns the first of names (canonical) that h holds more than
// once, or the first (the URI) when h lacks it; "" when all is well.
func unroutable(h http.Header, names []string) string {
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
		out[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	return out
}

func writeHTTP(w http.ResponseWriter, d dialect, dec *authz.Decision) {
	out := w.Header()
	if dec.Kind == authz.KindAllow {
		// Upstream headers travel as headers of the 200; the proxy's
		// config copies them to the request. A header this decision does
		// not set is absent, and the proxy configs drop the client's.
		for _, s := range dec.Set {
			out.Set(s.Name, s.Value)
		}
		for _, s := range dec.ResponseHeaders {
			out.Set(s.Name, s.Value)
		}
		if d == dialectEnvoy && len(dec.Remove) > 0 {
			out.Set("x-envoy-auth-headers-to-remove", strings.Join(dec.Remove, ", "))
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	// Keygate's own answer: a refusal, or a reply in the proxy's place. No
	// dialect may read it as an allow, or the request would reach the
	// backend without an identity.
	for _, s := range dec.ResponseHeaders {
		out.Set(s.Name, s.Value)
	}
	out.Set(authz.DecisionIDHeader, authz.FormatID(dec.ID))
	status := dec.Status
	reply := dec.Kind == authz.KindReply
	switch {
	case d == dialectEnvoy && reply:
		// Envoy allows only on 200 and returns any other status to the
		// client with its body: 203 brings the principal to the client.
		status = http.StatusNonAuthoritativeInfo
	case d == dialectNginx:
		// nginx knows only 401 and 403 here and drops the body: the real
		// answer travels in headers its error_page turns back into it.
		out.Set(HeaderStatus, strconv.Itoa(dec.Status))
		out.Set(HeaderBody, dec.Body)
		if status != http.StatusUnauthorized {
			status = http.StatusForbidden
		}
	case d == dialectForward && reply:
		// Traefik and Caddy allow on any 2xx and pass anything else to the
		// client as is: the reply goes out as a 403 carrying the principal,
		// marked so that a proxy config (the Caddy example) can turn it
		// back into a 200.
		out.Set(HeaderStatus, strconv.Itoa(dec.Status))
		status = http.StatusForbidden
	}
	w.WriteHeader(status)
	if dec.Body != "" {
		w.Write([]byte(dec.Body))
	}
}

// logDecision logs refusals and shadow-mode would-be refusals at Info, so
// support can find a decision by the id its client was given, and allows at
// Debug. Never the key: the key id names it.
func logDecision(ctx context.Context, log *slog.Logger, access bool, r *authz.Request, d *authz.Decision) {
	level, msg := slog.LevelDebug, "allowed"
	if access {
		// The access log: every decision, allows included.
		level = slog.LevelInfo
	}
	switch {
	case d.WouldDeny != "":
		level, msg = slog.LevelInfo, "would deny (shadow mode)"
	case d.Kind == authz.KindDeny:
		level, msg = slog.LevelInfo, "denied"
	case d.Kind == authz.KindReply:
		msg = "replied"
	}
	if !log.Enabled(ctx, level) {
		return
	}
	keyID := ""
	if d.Credential != nil {
		keyID = d.Credential.ID
	}
	reason := d.Reason
	if d.WouldDeny != "" {
		reason = d.WouldDeny
	}
	log.LogAttrs(ctx, level, msg,
		slog.String("decision_id", authz.FormatID(d.ID)),
		slog.String("reason", string(reason)),
		slog.Int("status", d.Status),
		slog.String("route", d.Route),
		slog.String("api_key_id", keyID),
		slog.String("peer", r.Peer),
		slog.String("method", r.Method),
		// The query is left out: clients do put keys there, though
		// Keygate never reads them.
		slog.String("path", pathOnly(r.Path)))
}
