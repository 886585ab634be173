package metrics

import "github.com/prometheus/client_golang/prometheus"

// Listener is what the listener metrics read: a capped listener's
// connections.
type Listener interface {
	Active() int
	Limit() int
	Rejected() uint64
}

// RegisterListener exposes a listener's open connections, its cap and the
// connections it refused at the cap, under the label listener=name (grpc,
// http, admin): a listener at its cap is a flood, or a cap set too low.
func (m *Metrics) RegisterListener(name string, l Listener) error {
	labels := prometheus.Labels{"listener": name}
	return m.Register(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keygate_listener_connections", Help: "Connections the listener holds open.", ConstLabels: labels},
			func() float64 { return float64(l.Active()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keygate_listener_max_connections", Help: "The listener's cap (listen.max_connections).", ConstLabels: labels},
			func() float64 { return float64(l.Limit()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keygate_listener_rejected_total", Help: "Connections reset at once because the listener was at its cap.", ConstLabels: labels},
			func() float64 { return float64(l.Rejected()) }),
	)
}
