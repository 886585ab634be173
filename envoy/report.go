package envoy

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/keygate/keygate/authz"
)

// Decider is the decision core as the adapter uses it.
type Decider interface {
	Decide(ctx context.Context, req *authz.Request) (authz.Decision, error)
}

// Observer is told of every decision and how long it took (metrics).
type Observer interface {
	ObserveDecision(adapter string, d *authz.Decision, took time.Duration)
}

// reporting is what both adapters do with a decision besides answering:
// log it and tell the observer.
type reporting struct {
	decider  Decider
	log      *slog.Logger
	observer Observer
	access   bool
	// metadata: gRPC answers carry dynamic metadata (the default).
	metadata bool
}

// Option configures an adapter.
type Option func(*reporting)

// WithObserver has every decision and its duration reported (metrics).
func WithObserver(o Observer) Option { return func(r *reporting) { r.observer = o } }

// WithMetadata sets whether gRPC answers carry dynamic metadata (on by
// default): off, each answer is about a third smaller, for deployments
// whose access logs and rate-limit descriptors do not read it.
func WithMetadata(on bool) Option { return func(r *reporting) { r.metadata = on } }

// WithAccessLog logs every decision at Info, allows included.
func WithAccessLog(on bool) Option { return func(r *reporting) { r.access = on } }

func newReporting(d Decider, log *slog.Logger, opts []Option) reporting {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := reporting{decider: d, log: log, metadata: true}
	for _, o := range opts {
		o(&r)
	}
	return r
}

// report logs a decision and tells the observer how long it took.
func (r *reporting) report(ctx context.Context, adapter string, req *authz.Request, d *authz.Decision, start time.Time) {
	logDecision(ctx, r.log, r.access, req, d)
	if r.observer != nil {
		r.observer.ObserveDecision(adapter, d, time.Since(start))
	}
}

// logDecision logs refusals and shadow-mode would-be refusals at Info, so
// support can find a decision by the id its client was given, and allows at
// Debug. Never the key: the key id names it.
func logDecision(ctx context.Context, log *slog.Logger, access bool, r *authz.Request, d *authz.Decision) {
	level, msg := slog.LevelDebug, "allowed"
	if access {
		// The access log: every decision, allows included.
		level = slog.LevelInfo
	}
	switch {
	case d.WouldDeny != "":
		level, msg = slog.LevelInfo, "would deny (shadow mode)"
	case d.Kind == authz.KindDeny:
		level, msg = slog.LevelInfo, "denied"
	case d.Kind == authz.KindReply:
		msg = "replied"
	}
	if !log.Enabled(ctx, level) {
		return
	}
	keyID := ""
	if d.Credential != nil {
		keyID = d.Credential.ID
	}
	reason := d.Reason
	if d.WouldDeny != "" {
		reason = d.WouldDeny
	}
	log.LogAttrs(ctx, level, msg,
		slog.String("decision_id", authz.FormatID(d.ID)),
		slog.String("reason", string(reason)),
		slog.Int("status", d.Status),
		slog.String("route", d.Route),
		slog.String("api_key_id", keyID),
		slog.String("peer", r.Peer),
		slog.String("method", r.Method),
		// The query is left out: clients do put keys there, though
		// Keygate never reads them.
		slog.String("path", pathOnly(r.Path)))
}

// pathOnly leaves the query out of logs.
func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}
