// Package metrics owns Keygate's Prometheus instruments and their registry:
// what is counted, under which names and labels. Labels are bounded sets
// (result, reason, tier, route names from the config); never a key id,
// tenant id or anything a client chooses, since those are unbounded.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keygate/keygate/authz"
)

// Metrics is one registry and the instruments in it. Its own registry (not
// the global one) keeps tests independent and the output to Keygate's.
type Metrics struct {
	reg       *prometheus.Registry
	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	// grpc counts and times every call of the gRPC server.
	grpc          *grpcMetrics
	adminRequests *prometheus.CounterVec
}

// New registers Keygate's instruments and the Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_decisions_total",
			Help: "Authorization decisions by result (allow, deny, throttled by the failed-auth limit, would_deny in shadow mode), reason code and key tier.",
		}, []string{"result", "reason", "tier"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keygate_check_duration_seconds",
			Help:    "Time to answer one Check, by adapter.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"adapter"}),
		grpc:          newGRPCMetrics(),
		adminRequests: newAdminRequests(),
	}
	m.reg.MustRegister(m.decisions, m.latency, m.grpc, m.adminRequests,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Register adds more collectors (the store's, for example).
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObserveDecision counts one decision and how long it took.
func (m *Metrics) ObserveDecision(adapter string, d *authz.Decision, took time.Duration) {
	result, reason := "deny", string(d.Reason)
	switch {
	case d.WouldDeny != "":
		result, reason = "would_deny", string(d.WouldDeny)
	case d.Kind == authz.KindAllow:
		result = "allow"
	case d.Kind == authz.KindReply:
		result = "reply"
	case d.Reason == authz.ReasonRateLimited && d.Credential == nil:
		// A 429 before any key was looked up: the failed-auth throttle.
		result = "throttled"
	}
	tier := ""
	if d.Credential != nil {
		tier = d.Credential.Tier
	}
	m.decisions.WithLabelValues(result, reason, tier).Inc()
	m.latency.WithLabelValues(adapter).Observe(took.Seconds())
}
