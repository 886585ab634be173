package envoy

import (
	"net/http"
	"strconv"

	"github.com/keygate/keygate/authz"
)

// nginxDialect is nginx auth_request (/nginx). The original URI and method
// come in X-Original-URI and X-Original-Method, the host in Host. nginx
// understands only 2xx, 401 and 403 (anything else becomes 500) and never
// shows the client the subrequest's body, so every answer but an allow is
// a 401 or 403 carrying the real status and body in X-Keygate-Status and
// X-Keygate-Body, which the example's error_page turns back into it (a
// 429, a 400, or the 200 of a reply).
type nginxDialect struct{}

func init() { register(PathNginx, nginxDialect{}, false) }

func (nginxDialect) request(r *http.Request) authz.Request {
	req := newRequest(r, r.Header.Get("X-Original-Method"), r.Header.Get("X-Original-URI"), r.Host)
	req.Unroutable = unroutable(r.Header, "X-Original-Uri", "X-Original-Method")
	return req
}

func (nginxDialect) write(w http.ResponseWriter, d *authz.Decision) {
	if d.Kind == authz.KindAllow {
		writeAllow(w, d, nil)
		return
	}
	w.Header().Set(HeaderStatus, strconv.Itoa(d.Status))
	w.Header().Set(HeaderBody, d.Body)
	status := http.StatusForbidden
	if d.Status == http.StatusUnauthorized {
		status = http.StatusUnauthorized
	}
	writeAnswer(w, d, status)
}
