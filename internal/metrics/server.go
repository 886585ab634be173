package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"github.com/keygate/keygate/internal/buildinfo"
)

// checkBuckets fit a Check, which takes well under a millisecond from the
// cache and up to the store's lookup_timeout on a miss.
var checkBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// GRPCServerOptions are the interceptors that feed the gRPC server
// metrics; pass them to the server, then call InitGRPC.
func (m *Metrics) GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.grpc.unary),
		grpc.ChainStreamInterceptor(m.grpc.stream),
	}
}

// InitGRPC starts every method of s at zero, so that a rate over a
// method's first errors is not lost to a series that did not exist yet.
func (m *Metrics) InitGRPC(s reflection.ServiceInfoProvider) {
	m.grpc.initialize(s)
}

// unrouted is the route label of an admin request no route matched: the
// path it asked for is the client's choice, an unbounded label.
const unrouted = "unrouted"

func newAdminRequests() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_admin_requests_total",
		Help: `Admin API requests by route pattern ("unrouted" when none matched) and status code.`,
	}, []string{"route", "code"})
}

// ObserveAdminRequest counts one answered admin request. route is the
// admin mux's pattern ("POST /v1/keys/{id}/revoke"), never the path, whose
// ids would make the label unbounded; empty when no route matched.
func (m *Metrics) ObserveAdminRequest(route string, status int) {
	if route == "" {
		route = unrouted
	}
	m.adminRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
}

// RegisterBuildInfo exposes keygate_build_info{version, revision,
// go_version} 1, so that a dashboard tells which build each replica runs.
// The labels are what `keygate version` prints: bi is
// buildinfo.Get(main's stamps).
func (m *Metrics) RegisterBuildInfo(bi buildinfo.Info) error {
	return m.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "keygate_build_info",
		Help:        "Always 1; its labels are the build's version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "revision": orUnknown(bi.Revision), "go_version": bi.GoVersion},
	}, func() float64 { return 1 }))
}

// orUnknown keeps a label that cannot be known distinct from a missing one.
func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
