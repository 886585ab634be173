package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/internal/admintoken"
	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/internal/config/reload"
	"github.com/keygate/keygate/internal/metrics"
	"github.com/keygate/keygate/internal/secret"
	"github.com/keygate/keygate/internal/telemetry"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
	"github.com/keygate/keygate/keystore/apikey"
)

// serveFlags override the environment, which overrides the config file.
type serveFlags struct {
	config, store, etcd, replicaID, grpcListen, adminListen, httpListen, metricsListen string
}

func newServeCmd(c *cli) *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve [--config FILE]",
		Short: "run the server",
		Args:  usageArgs(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), f, c) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.config, "config", c.getenv("KEYGATE_CONFIG"), "YAML config `file` (env KEYGATE_CONFIG; none: embedded defaults)")
	fs.StringVar(&f.store, "store", c.getenv("KEYGATE_STORE"), "bbolt store `path` (env KEYGATE_STORE; default ./keygate.db); with etcd it only locates a generated admin token")
	fs.StringVar(&f.etcd, "etcd", c.getenv("KEYGATE_ETCD_ENDPOINTS"), "keep keys in etcd at these comma-separated `endpoints` instead of the file, shared by every replica (env KEYGATE_ETCD_ENDPOINTS)")
	fs.StringVar(&f.replicaID, "replica-id", c.getenv("KEYGATE_REPLICA_ID"), "this replica's `name` among those sharing etcd, unique to it (env KEYGATE_REPLICA_ID; in Kubernetes, the pod name), overriding store.etcd.replica_id")
	fs.StringVar(&f.grpcListen, "grpc-listen", c.getenv("KEYGATE_GRPC_LISTEN"), "ext_authz gRPC `address` (env KEYGATE_GRPC_LISTEN; default 127.0.0.1:9001)")
	fs.StringVar(&f.httpListen, "http-listen", c.getenv("KEYGATE_HTTP_LISTEN"), "HTTP authorization `address` (Envoy http_service, nginx, Traefik, Caddy) (env KEYGATE_HTTP_LISTEN; default 127.0.0.1:9002)")
	fs.StringVar(&f.adminListen, "admin-listen", c.getenv("KEYGATE_ADMIN_LISTEN"), "admin API `address` (env KEYGATE_ADMIN_LISTEN; default 127.0.0.1:9003)")
	fs.StringVar(&f.metricsListen, "metrics-listen", c.getenv("KEYGATE_METRICS_LISTEN"), "Prometheus metrics `address`, GET /metrics only, without a token unless metrics.require_token (env KEYGATE_METRICS_LISTEN; default 127.0.0.1:9004; off: none)")
	return cmd
}

// runServe runs the server until ctx ends (SIGINT/SIGTERM), then shuts down
// in order: health turns NOT_SERVING, in-flight Checks drain, the HTTP and
// admin servers stop, last-used times are flushed and the store is closed.
func runServe(ctx context.Context, f serveFlags, c *cli) error {
	// Stamped before it is read, so that a change made while serve starts
	// is seen by the watcher.
	stamp := reload.Stamp(f.config)
	cfg, err := loadServeConfig(f)
	if err != nil {
		return err
	}
	log, err := cfg.Logger(c.stderr)
	if err != nil {
		return err
	}
	format, err := cfg.Format()
	if err != nil {
		return err
	}
	// Off (nil) unless the file or OTEL_* asks: then nothing is wrapped.
	tr, err := telemetry.Start(ctx, cfg.TracingSettings(build().Version), log.With("component", "tracing"))
	if err != nil {
		return err
	}
	defer shutdownTracing(tr, log)
	if !config.IsLoopback(cfg.Listen.Admin) && cfg.Admin.TLSCertFile == "" && !cfg.Admin.InsecurePublic {
		return fmt.Errorf("admin listener %s is not loopback: serve it with TLS (admin.tls_cert_file, admin.tls_key_file), or set admin.insecure_public if the network is otherwise protected", cfg.Listen.Admin)
	}
	// The admin API asks tokens on every request, so a replaced token file
	// takes effect without a restart.
	tokens, err := admintoken.Source(cfg, c.getenv, log)
	if err != nil {
		return err
	}
	// Read once now, so that a token that cannot be read stops serve
	// before it listens.
	if _, err := tokens(); err != nil {
		return err
	}

	opts := cfg.StoreOptions(format)
	// A replica whose etcd does not answer starts anyway: it fails every
	// Check closed and reports not ready until etcd answers, instead of
	// exiting into a restart loop.
	opts.StartUnavailable = true
	store, err := cfg.OpenStore(opts, log.With("component", "store"))
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close store", "error", err)
		}
	}()
	shared, closeShared, err := cfg.SharedLimiter()
	if err != nil {
		return err
	}
	defer closeShared()
	engine, err := newEngine(cfg, format, store, shared, tr)
	if err != nil {
		return err
	}
	m := metrics.New()
	if err := m.RegisterStore(store); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := m.RegisterBuildInfo(build()); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	var scrapeToken metrics.TokenCheck // nil: scrapes need no token
	if cfg.Metrics.RequireToken {
		// The admin API's source: a replaced token file holds here too.
		scrapeToken = metricsTokens(store, tokens)
	}
	adminHandler, err := newAdminHandler(cfg, store, shared, tokens, m, tr, log)
	if err != nil {
		return err
	}

	// The watch and the sweep end when serve returns, whether it stops or
	// fails to start.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// SIGHUP is caught before the server says it is serving: its default
	// action ends the process, so a reload asked for right after start
	// must not find the handler missing.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go reload.Watch(ctx, cfg, stamp, engine, hup, log)
	go sweepLimits(ctx, engine)
	go store.RetainAudit(ctx, time.Duration(cfg.Admin.AuditRetention), log.With("listener", "admin"))

	reporting := []envoy.Option{envoy.WithObserver(m), envoy.WithAccessLog(cfg.Log.Access), envoy.WithMetadata(cfg.MetadataOn())}
	decider := tr.Decider(engine)
	g, err := startListeners(cfg, listenerHandlers{
		check:   envoy.NewServer(decider, log.With("listener", "grpc"), reporting...),
		http:    envoy.NewHTTPHandler(decider, log.With("listener", "http"), reporting...),
		admin:   tr.Admin(adminHandler),
		metrics: m.Endpoint(scrapeToken),
	}, m, log)
	if err != nil {
		return err
	}
	log.Info("keygate serving",
		"grpc", g.grpcLn.Addr().String(),
		"admin", g.adminLn.Addr().String(),
		"http", g.httpLn.Addr().String(),
		"metrics", g.metricsAddr(),
		"store", cfg.StoreName(),
		"version", build().String())
	serveErr := g.wait(ctx)
	g.stop()
	log.Info("stopped")
	return serveErr
}

// loadServeConfig reads the config file and lays the flags over it (the
// environment is already in the flags' defaults).
func loadServeConfig(f serveFlags) (*config.Config, error) {
	cfg, err := config.Load(f.config)
	if err != nil {
		return nil, err
	}
	for dst, v := range map[*string]string{&cfg.Store.Path: f.store, &cfg.Store.Etcd.ReplicaID: f.replicaID, &cfg.Listen.GRPC: f.grpcListen, &cfg.Listen.Admin: f.adminListen, &cfg.Listen.HTTP: f.httpListen, &cfg.Listen.Metrics: f.metricsListen} {
		if v != "" {
			*dst = v
		}
	}
	if f.etcd != "" {
		cfg.Store.Etcd.Endpoints = strings.Split(f.etcd, ",")
	}
	return cfg, nil
}

// newEngine builds the decision engine of cfg over store, rate limits
// shared through shared (nil: in this process only), its lookups traced
// by tr (nil: not).
func newEngine(cfg *config.Config, format apikey.Format, store *keystore.Store, shared authz.SharedLimiter, tr *telemetry.Tracing) (*authz.Engine, error) {
	acfg := cfg.AuthzConfig(format)
	acfg.Recorder = store
	// Named, not found by authz on the lookup, which tracing may wrap.
	acfg.Orgs = store
	acfg.Credits = store
	acfg.RateLimits.Shared = shared
	acfg.RateLimits.SharedFailOpen = cfg.RateLimits.Redis.FailOpen
	var err error
	if acfg.Policy, err = cfg.AuthzPolicy(); err != nil {
		return nil, err
	}
	return authz.New(acfg, tr.Lookup(store))
}

// newAdminHandler builds the admin API over store, behind the bootstrap
// token tokens gives and the admin tokens in store.
func newAdminHandler(cfg *config.Config, store *keystore.Store, shared authz.SharedLimiter, tokens func() (secret.Value, error), m *metrics.Metrics, tr *telemetry.Tracing, log *slog.Logger) (http.Handler, error) {
	// Ready when a Check could succeed: the store answers, and so does a
	// shared Redis unless fail_open lets Checks do without it.
	ready := []admin.ReadyCheck{{Name: "store", Check: store.Ready}}
	if ping, needed := cfg.LimiterReady(shared); ping != nil {
		ready = append(ready, admin.ReadyCheck{Name: "redis", Check: ping, Optional: !needed})
	}
	return admin.New(store, admin.Options{
		TokenSource: tokens,
		Logger:      log.With("listener", "admin"),
		Ready:       ready,
		Metrics:     m.Handler(),
		RequestMetrics: func(o admin.Observed) {
			m.ObserveAdminRequest(o.Route, o.Status)
			tr.AdminObserved(o)
		},
		Audit:   true,
		Console: cfg.ConsoleOn(),
	})
}

// shutdownTracing sends the spans not yet exported, within a bound: a
// collector out of reach must not hold up the exit.
func shutdownTracing(tr *telemetry.Tracing, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		log.Warn("tracing shutdown", "error", err)
	}
}

// sweepLimits lets the engine forget rate-limit state that limits nothing,
// so that memory follows the keys in use.
func sweepLimits(ctx context.Context, e *authz.Engine) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.Sweep()
		}
	}
}
