package envoy

import (
	"net/http"
	"strings"

	"github.com/keygate/keygate/authz"
)

// envoyDialect is Envoy's ext_authz http_service (path_prefix: /envoy):
// Envoy sends the original method and path below the prefix, allows only
// on 200 (copying allowed_upstream_headers upstream and removing what
// x-envoy-auth-headers-to-remove lists), and passes any other status to
// the client with its body (5xx count as errors, answered with
// status_on_error).
type envoyDialect struct{}

func init() { register(PathEnvoy, envoyDialect{}, true) }

func (envoyDialect) request(r *http.Request) authz.Request {
	return newRequest(r, r.Method, strings.TrimPrefix(r.URL.RequestURI(), PathEnvoy), r.Host)
}

func (envoyDialect) write(w http.ResponseWriter, d *authz.Decision) {
	switch d.Kind {
	case authz.KindAllow:
		writeAllow(w, d, func(h http.Header) {
			if len(d.Remove) > 0 {
				h.Set("x-envoy-auth-headers-to-remove", strings.Join(d.Remove, ", "))
			}
		})
	case authz.KindReply:
		// Any status but 200 goes to the client with its body: 203
		// brings the reply to the client.
		writeAnswer(w, d, http.StatusNonAuthoritativeInfo)
	default:
		writeAnswer(w, d, d.Status)
	}
}
