package envoy

import (
	"net/http"
	"strconv"

	"github.com/keygate/keygate/authz"
)

// forwardDialect is Traefik forwardAuth and Caddy forward_auth (/forward).
// The original URI, method and host come in X-Forwarded-Uri,
// X-Forwarded-Method and X-Forwarded-Host; any 2xx allows, anything else
// goes to the client as it is.
type forwardDialect struct{}

func init() { register(PathForward, forwardDialect{}, false) }

func (forwardDialect) request(r *http.Request) authz.Request {
	h := r.Header
	req := newRequest(r, h.Get("X-Forwarded-Method"), h.Get("X-Forwarded-Uri"), h.Get("X-Forwarded-Host"))
	req.Unroutable = unroutable(h, "X-Forwarded-Uri", "X-Forwarded-Method", "X-Forwarded-Host")
	return req
}

func (forwardDialect) write(w http.ResponseWriter, d *authz.Decision) {
	switch d.Kind {
	case authz.KindAllow:
		writeAllow(w, d, nil)
	case authz.KindReply:
		// A reply cannot be a 2xx here (that allows): it goes out as a 403
		// carrying the answer, marked so that a proxy config (the Caddy
		// example) can turn it back into a 200.
		w.Header().Set(HeaderStatus, strconv.Itoa(d.Status))
		writeAnswer(w, d, http.StatusForbidden)
	default:
		writeAnswer(w, d, d.Status)
	}
}
