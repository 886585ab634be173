package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/internal/admintoken"
	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/internal/config/reload"
	"github.com/keygate/keygate/internal/connlimit"
	"github.com/keygate/keygate/internal/metrics"
	"github.com/keygate/keygate/keystore/admin"
)

// serveFlags override the environment, which overrides the config file.
type serveFlags struct {
	config, store, etcd, grpcListen, adminListen, httpListen string
}

func parseServeFlags(args []string, c *cli) (serveFlags, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	var f serveFlags
	fs.StringVar(&f.config, "config", c.getenv("KEYGATE_CONFIG"), "YAML config `file` (env KEYGATE_CONFIG; none: embedded defaults)")
	fs.StringVar(&f.store, "store", c.getenv("KEYGATE_STORE"), "bbolt store `path` (env KEYGATE_STORE; default ./keygate.db); with etcd it only locates a generated admin token")
	fs.StringVar(&f.etcd, "etcd", c.getenv("KEYGATE_ETCD_ENDPOINTS"), "keep keys in etcd at these comma-separated `endpoints` instead of the file, shared by every replica (env KEYGATE_ETCD_ENDPOINTS)")
	fs.StringVar(&f.grpcListen, "grpc-listen", c.getenv("KEYGATE_GRPC_LISTEN"), "ext_authz gRPC `address` (env KEYGATE_GRPC_LISTEN; default 127.0.0.1:9001)")
	fs.StringVar(&f.httpListen, "http-listen", c.getenv("KEYGATE_HTTP_LISTEN"), "HTTP authorization `address` (Envoy http_service, nginx, Traefik, Caddy) (env KEYGATE_HTTP_LISTEN; default 127.0.0.1:9002)")
	fs.StringVar(&f.adminListen, "admin-listen", c.getenv("KEYGATE_ADMIN_LISTEN"), "admin API `address` (env KEYGATE_ADMIN_LISTEN; default 127.0.0.1:9003)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, err
		}
		return f, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("%w: serve takes no arguments, got %q", errUsage, fs.Args())
	}
	return f, nil
}

// runServe runs the server until ctx ends (SIGINT/SIGTERM), then shuts down
// in order: health turns NOT_SERVING, in-flight Checks drain, the admin API
// stops, last-used times are flushed and the store is closed.
func runServe(ctx context.Context, args []string, c *cli) error {
	f, err := parseServeFlags(args, c)
	if err != nil {
		return err
	}
	// Stamped before it is read, so that a change made while serve starts
	// is seen by the watcher.
	stamp := reload.Stamp(f.config)
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	for dst, v := range map[*string]string{&cfg.Store.Path: f.store, &cfg.Listen.GRPC: f.grpcListen, &cfg.Listen.Admin: f.adminListen, &cfg.Listen.HTTP: f.httpListen} {
		if v != "" {
			*dst = v
		}
	}
	if f.etcd != "" {
		cfg.Store.Etcd.Endpoints = strings.Split(f.etcd, ",")
	}
	log, err := cfg.Logger(c.stderr)
	if err != nil {
		return err
	}
	format, err := cfg.Format()
	if err != nil {
		return err
	}
	if !config.IsLoopback(cfg.Listen.Admin) && cfg.Admin.TLSCertFile == "" && !cfg.Admin.InsecurePublic {
		return fmt.Errorf("admin listener %s is not loopback: serve it with TLS (admin.tls_cert_file, admin.tls_key_file), or set admin.insecure_public if the network is otherwise protected", cfg.Listen.Admin)
	}
	token, err := admintoken.Resolve(cfg, c.getenv, log)
	if err != nil {
		return err
	}

	store, err := cfg.OpenStore(cfg.StoreOptions(format), log.With("component", "store"))
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close store", "error", err)
		}
	}()
	acfg := cfg.AuthzConfig(format)
	acfg.Recorder = store
	acfg.Credits = store
	shared, closeShared, err := cfg.SharedLimiter()
	if err != nil {
		return err
	}
	defer closeShared()
	acfg.RateLimits.Shared = shared
	acfg.RateLimits.SharedFailOpen = cfg.RateLimits.Redis.FailOpen
	if acfg.Policy, err = cfg.AuthzPolicy(); err != nil {
		return err
	}
	engine, err := authz.New(acfg, store)
	if err != nil {
		return err
	}
	m := metrics.New()
	// Ready when a Check could succeed: the store answers, and so does a
	// shared Redis unless fail_open lets Checks do without it.
	ready := []admin.ReadyCheck{{Name: "store", Check: store.PingContext}}
	if ping, needed := cfg.LimiterReady(shared); ping != nil {
		ready = append(ready, admin.ReadyCheck{Name: "redis", Check: ping, Optional: !needed})
	}
	adminHandler, err := admin.New(store, admin.Options{
		Token:   token,
		Logger:  log.With("listener", "admin"),
		Ready:   ready,
		Metrics: m.Handler(),
	})
	if err != nil {
		return err
	}

	// Each listener has its own cap, below the open-file limit, so that a
	// flood of connections on one cannot starve the others (admin and
	// health included) or the store of descriptors.
	caps := connectionCaps(cfg, log)
	grpcLn, err := listenCapped(cfg.Listen.GRPC, caps.grpc, log.With("listener", "grpc"))
	if err != nil {
		return fmt.Errorf("listen grpc: %w", err)
	}
	adminLn, err := listenCapped(cfg.Listen.Admin, caps.admin, log.With("listener", "admin"))
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("listen admin: %w", err)
	}
	httpLn, err := listenCapped(cfg.Listen.HTTP, caps.http, log.With("listener", "http"))
	if err != nil {
		grpcLn.Close()
		adminLn.Close()
		return fmt.Errorf("listen http: %w", err)
	}
	err = m.RegisterStore(store)
	for name, ln := range map[string]*connlimit.Listener{"grpc": grpcLn, "http": httpLn, "admin": adminLn} {
		err = errors.Join(err, m.RegisterListener(name, ln))
	}
	if err != nil {
		grpcLn.Close()
		adminLn.Close()
		httpLn.Close()
		return fmt.Errorf("metrics: %w", err)
	}
	reporting := []envoy.Option{envoy.WithObserver(m), envoy.WithAccessLog(cfg.Log.Access)}
	// Every phase of a connection is bounded, so that no client holds a
	// connection, and its slot under the listener's cap, by being slow or
	// silent.
	idle := time.Duration(cfg.Listen.IdleTimeout)
	grpcSrv, health := envoy.NewGRPCServer(envoy.NewServer(engine, log.With("listener", "grpc"), reporting...),
		// The HTTP/2 preface and settings must arrive this soon (grpc-go
		// waits 120 s by default); Envoy sends them as it connects.
		grpc.ConnectionTimeout(5*time.Second),
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
	)
	adminSrv := &http.Server{
		Handler:           adminHandler,
		ReadHeaderTimeout: 5 * time.Second, // with TLS, the handshake too
		// Admin bodies are small JSON (the admin API refuses more than
		// 1 MiB); responses (lists, /metrics) can be larger, and a client
		// that stops reading them must not keep the connection.
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   time.Minute,
		IdleTimeout:    idle,
		MaxHeaderBytes: 32 << 10, // a bearer token and a few headers
	}
	httpSrv := &http.Server{
		Handler:           envoy.NewHTTPHandler(engine, log.With("listener", "http"), reporting...),
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

	// SIGHUP is caught before the server says it is serving: its default
	// action ends the process, so a reload asked for right after start
	// must not find the handler missing.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go reload.Watch(ctx, cfg, stamp, engine, hup, log)
	go sweepLimits(ctx, engine)

	errc := make(chan error, 3)
	go func() { errc <- fmt.Errorf("grpc server: %w", grpcSrv.Serve(grpcLn)) }()
	go func() {
		if cfg.Admin.TLSCertFile != "" {
			adminSrv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			errc <- fmt.Errorf("admin server: %w", adminSrv.ServeTLS(adminLn, cfg.Admin.TLSCertFile, cfg.Admin.TLSKeyFile))
			return
		}
		errc <- fmt.Errorf("admin server: %w", adminSrv.Serve(adminLn))
	}()
	go func() { errc <- fmt.Errorf("http server: %w", httpSrv.Serve(httpLn)) }()
	log.Info("keygate serving",
		"grpc", grpcLn.Addr().String(),
		"admin", adminLn.Addr().String(),
		"http", httpLn.Addr().String(),
		"store", cfg.StoreName(),
		"version", version)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case serveErr = <-errc:
		log.Error("server failed, shutting down", "error", serveErr)
	}

	timeout := time.Duration(cfg.ShutdownTimeout)
	health.Shutdown()
	drained := make(chan struct{})
	go func() { grpcSrv.GracefulStop(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(timeout):
		log.Warn("grpc drain timed out, closing connections", "timeout", timeout)
		grpcSrv.Stop()
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := httpSrv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "error", err)
	}
	if err := adminSrv.Shutdown(sctx); err != nil {
		log.Warn("admin shutdown", "error", err)
	}
	log.Info("stopped")
	return serveErr
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
