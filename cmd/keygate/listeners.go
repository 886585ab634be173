package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/keepalive"

	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/internal/connlimit"
	"github.com/keygate/keygate/internal/metrics"
)

// listenerHandlers are what serve answers on each listener.
type listenerHandlers struct {
	check *envoy.Server // gRPC ext_authz
	http  http.Handler  // HTTP authorization (Envoy http_service, nginx, ...)
	admin http.Handler  // admin API, /metrics, /healthz, /readyz
	// metrics is the metrics listener's: GET /metrics only, since it may
	// be open to anyone.
	metrics http.Handler
}

// listenerGroup is serve's listeners and the servers on them, owned
// as one, so that none is left open behind serve: startListeners closes
// whatever it opened when a later step fails, and stop shuts them all down
// in one order.
type listenerGroup struct {
	log     *slog.Logger
	timeout time.Duration // shutdown_timeout: the gRPC drain, then the HTTP shutdowns

	grpcLn, adminLn, httpLn *connlimit.Listener
	metricsLn               *connlimit.Listener // nil: listen.metrics off
	grpc                    *grpc.Server
	health                  *health.Server
	admin, http             *http.Server
	metrics                 *http.Server // nil with metricsLn
	errc                    chan error   // a server that stopped serving
}

// startListeners opens the capped listeners of cfg, registers them with m,
// and starts serving h on them.
func startListeners(cfg *config.Config, h listenerHandlers, m *metrics.Metrics, log *slog.Logger) (_ *listenerGroup, err error) {
	g := &listenerGroup{log: log, timeout: time.Duration(cfg.ShutdownTimeout), errc: make(chan error, 4)}
	defer func() {
		if err != nil {
			g.closeListeners()
		}
	}()
	// Each listener has its own cap, below the open-file limit, so that a
	// flood of connections on one cannot starve the others (admin and
	// health included) or the store of descriptors.
	caps := connectionCaps(cfg, log)
	for _, l := range []struct {
		ln   **connlimit.Listener
		name string
		addr string
		cap  int
	}{
		{&g.grpcLn, "grpc", cfg.Listen.GRPC, caps.grpc},
		{&g.adminLn, "admin", cfg.Listen.Admin, caps.admin},
		{&g.httpLn, "http", cfg.Listen.HTTP, caps.http},
		{&g.metricsLn, "metrics", cfg.Listen.Metrics, caps.metrics},
	} {
		if l.addr == config.MetricsListenOff {
			continue
		}
		ln, err := listenCapped(l.addr, l.cap, log.With("listener", l.name))
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", l.name, err)
		}
		*l.ln = ln
		if err := m.RegisterListener(l.name, ln); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}

	// Every phase of a connection is bounded, so that no client holds a
	// connection, and its slot under the listener's cap, by being slow or
	// silent.
	idle := time.Duration(cfg.Listen.IdleTimeout)
	g.grpc, g.health = newGRPCServer(h.check, idle, m.GRPCServerOptions()...)
	m.InitGRPC(g.grpc)
	g.admin, g.http = newAdminServer(h.admin, idle), newHTTPServer(h.http, idle)

	go func() { g.errc <- fmt.Errorf("grpc server: %w", g.grpc.Serve(g.grpcLn)) }()
	if cert, key := cfg.Admin.TLSCertFile, cfg.Admin.TLSKeyFile; cert != "" {
		g.admin.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		go func() { g.errc <- fmt.Errorf("admin server: %w", g.admin.ServeTLS(g.adminLn, cert, key)) }()
	} else {
		go func() { g.errc <- fmt.Errorf("admin server: %w", g.admin.Serve(g.adminLn)) }()
	}
	go func() { g.errc <- fmt.Errorf("http server: %w", g.http.Serve(g.httpLn)) }()
	if g.metricsLn != nil {
		// The admin server's bounds fit: small requests, a large answer
		// to a scraper that might stop reading.
		mh := h.metrics
		if mh == nil {
			// Never http.DefaultServeMux, which a nil handler would serve.
			mh = http.NotFoundHandler()
		}
		g.metrics = newAdminServer(mh, idle)
		go func() { g.errc <- fmt.Errorf("metrics server: %w", g.metrics.Serve(g.metricsLn)) }()
	}
	return g, nil
}

// closeListeners closes the listeners opened so far, before any server
// serves them.
func (g *listenerGroup) closeListeners() {
	for _, ln := range []*connlimit.Listener{g.grpcLn, g.adminLn, g.httpLn, g.metricsLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// wait blocks until ctx ends (SIGINT/SIGTERM) or a server stops serving,
// and returns that server's error.
func (g *listenerGroup) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		g.log.Info("shutting down")
		return nil
	case err := <-g.errc:
		g.log.Error("server failed, shutting down", "error", err)
		return err
	}
}

// stop shuts the servers down in order: health turns NOT_SERVING, so that
// Envoy and probes move away first; in-flight Checks drain for up to the
// shutdown timeout, after which their connections are closed; then the
// HTTP authorization and admin servers finish their requests within the
// same timeout.
func (g *listenerGroup) stop() {
	g.health.Shutdown()
	drained := make(chan struct{})
	go func() { g.grpc.GracefulStop(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(g.timeout):
		g.log.Warn("grpc drain timed out, closing connections", "timeout", g.timeout)
		g.grpc.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	if err := g.http.Shutdown(ctx); err != nil {
		g.log.Warn("http shutdown", "error", err)
	}
	if err := g.admin.Shutdown(ctx); err != nil {
		g.log.Warn("admin shutdown", "error", err)
	}
	// Last, so that a scrape during the drain still sees it.
	if g.metrics != nil {
		if err := g.metrics.Shutdown(ctx); err != nil {
			g.log.Warn("metrics shutdown", "error", err)
		}
	}
}

// metricsAddr is the metrics listener's address for the log, "off" when
// there is none.
func (g *listenerGroup) metricsAddr() string {
	if g.metricsLn == nil {
		return config.MetricsListenOff
	}
	return g.metricsLn.Addr().String()
}

// newGRPCServer serves check with Keygate's bounds, plus extra options
// (the metrics' interceptors).
func newGRPCServer(check *envoy.Server, idle time.Duration, extra ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	return envoy.NewGRPCServer(check, append([]grpc.ServerOption{
		// The HTTP/2 preface and settings must arrive this soon (grpc-go
		// waits 120 s by default); Envoy sends them as it connects.
		grpc.ConnectionTimeout(5 * time.Second),
		// Envoy may ping idle connections (connection_keepalive), at
		// intervals of 5 s or more; faster pings end the connection
		// (too_many_pings) instead of costing a reply each.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: idle,
			// A GOAWAY now and then spreads Envoy's connections over new
			// replicas, and bounds a connection kept busy by a call that
			// never ends; Envoy reconnects, and Checks in flight get the
			// grace to finish.
			MaxConnectionAge:      30 * time.Minute,
			MaxConnectionAgeGrace: 10 * time.Second,
			// A peer that vanished is noticed by an unanswered ping.
			// grpc-go's other guard, TCP_USER_TIMEOUT, needs a bare
			// *net.TCPConn, which the capped listener does not hand out.
			Time:    time.Minute,
			Timeout: 20 * time.Second,
		}),
		// Envoy sends many Checks over one connection, and opens another
		// when this many are in flight on it.
		grpc.MaxConcurrentStreams(1024),
	}, extra...)...)
}

func newAdminServer(h http.Handler, idle time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second, // with TLS, the handshake too
		// Admin bodies are small JSON (the admin API refuses more than
		// 1 MiB); responses (lists, /metrics) can be larger, and a client
		// that stops reading them must not keep the connection.
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   time.Minute,
		IdleTimeout:    idle,
		MaxHeaderBytes: 32 << 10, // a bearer token and a few headers
	}
}

func newHTTPServer(h http.Handler, idle time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		// Authorization requests carry no body worth reading. Answers are
		// a few hundred bytes, which the socket buffer takes whole, so a
		// client that does not read cannot block a write (no
		// WriteTimeout, which would also cut a decision still waiting on
		// the store within its lookup_timeout).
		ReadTimeout: 10 * time.Second,
		IdleTimeout: idle,
		// Proxies forward the client's headers, which they bound
		// themselves (Envoy at 60 KiB, nginx at 32 KiB by default); a
		// larger block is refused with 431, and a flood of connections
		// cannot make each one buffer a megabyte.
		MaxHeaderBytes: 64 << 10,
	}
}
