package metrics

import (
	"context"
	"net/http"
	"strings"
)

// TokenCheck says whether a bearer token may read the metrics. An error is
// a failure to tell (the store not answering), not a refusal.
type TokenCheck func(ctx context.Context, token string) (bool, error)

// metricsRealm is sent in the WWW-Authenticate challenge of a 401.
const metricsRealm = "keygate-metrics"

// Endpoint serves the registry at GET /metrics and nothing else: it is
// what the metrics listener answers, and that listener may be reachable
// by anyone. Any other path is 404, any other method 405. With allow nil
// no token is asked for; otherwise a scrape needs "Authorization: Bearer"
// with a token allow accepts.
func (m *Metrics) Endpoint(allow TokenCheck) http.Handler {
	mux := http.NewServeMux()
	metrics := m.Handler()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if allow != nil {
			token, ok := bearer(r)
			if !ok {
				unauthorized(w)
				return
			}
			switch allowed, err := allow(r.Context(), token); {
			case err != nil:
				// The cause is the store's, logged there; the scraper
				// only needs to know to try again.
				http.Error(w, "cannot check the token now", http.StatusServiceUnavailable)
				return
			case !allowed:
				unauthorized(w)
				return
			}
		}
		metrics.ServeHTTP(w, r)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	return token, ok && strings.EqualFold(scheme, "Bearer") && token != ""
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="`+metricsRealm+`"`)
	http.Error(w, "a bearer token allowed to read the metrics is required", http.StatusUnauthorized)
}
