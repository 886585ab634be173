package admin_test

import (
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/keygate/keygate/keystore/admin"
)

// TestRequestMetricsSeeEveryRequest: the metrics hook hears of every
// answered request by its route pattern, never its path, refusals and
// unrouted ones included.
func TestRequestMetricsSeeEveryRequest(t *testing.T) {
	type seen struct {
		route  string
		status int
	}
	var (
		mu  sync.Mutex
		got []seen
	)
	f := newFixture(t, admin.Options{RequestMetrics: func(o admin.Observed) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, seen{o.Route, o.Status})
	}})
	_, _, k := f.seed()
	got = nil
	f.do("GET", "/v1/keys/"+k.ID, "")
	f.doAuth("GET", "/v1/keys/"+k.ID, "", "")
	f.do("GET", "/no/such/path", "")
	f.do("GET", "/healthz", "")
	mu.Lock()
	defer mu.Unlock()
	want := []seen{
		{"GET /v1/keys/{id}", http.StatusOK},
		{"GET /v1/keys/{id}", http.StatusUnauthorized},
		{"", http.StatusNotFound},
		{"GET /healthz", http.StatusOK},
	}
	if !slices.Equal(got, want) {
		t.Errorf("observed %v, want %v", got, want)
	}
}
