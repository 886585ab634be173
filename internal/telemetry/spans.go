package telemetry

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore/admin"
	"github.com/keygate/keygate/keystore/apikey"
)

// Span names.
const (
	CheckSpan  = "keygate.check"
	LookupSpan = "keystore.lookup"
	AdminSpan  = "keygate.admin"
)

// Decider is the decision core as the adapters call it (envoy.Decider).
type Decider interface {
	Decide(ctx context.Context, req *authz.Request) (authz.Decision, error)
}

// Decider returns d with a server span around every decision, joined to
// the trace the request's traceparent and tracestate headers name. Nil
// (tracing off): d itself.
func (t *Tracing) Decider(d Decider) Decider {
	if t == nil {
		return d
	}
	return &checkTracer{next: d, t: t}
}

type checkTracer struct {
	next Decider
	t    *Tracing
}

func (c *checkTracer) Decide(ctx context.Context, req *authz.Request) (authz.Decision, error) {
	// The headers are already lower-case, as the W3C propagator asks them.
	ctx = c.t.prop.Extract(ctx, propagation.MapCarrier(req.Headers))
	ctx, span := c.t.tracer.Start(ctx, CheckSpan, trace.WithSpanKind(trace.SpanKindServer))
	d, err := c.next.Decide(ctx, req)
	if span.IsRecording() {
		span.SetAttributes(checkAttributes(req, &d)...)
		if err != nil {
			// Failed closed: the system, not the client, is at fault. A
			// denial is an answer, not an error.
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
	return d, err
}

// checkAttributes describe a decision by its reason, route and the key's
// id and tenant; never the key, its hash, or a credential header. The
// query is left out of the path: clients put keys there.
func checkAttributes(req *authz.Request, d *authz.Decision) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		attribute.String("keygate.reason", string(d.Reason)),
		attribute.String("keygate.route", d.Route),
		attribute.Int("keygate.status", d.Status),
		attribute.String("keygate.decision_id", authz.FormatID(d.ID)),
		attribute.String("http.request.method", req.Method),
		attribute.String("url.path", pathOnly(req.Path)),
	}
	if d.WouldDeny != "" {
		attrs = append(attrs, attribute.String("keygate.would_deny", string(d.WouldDeny)))
	}
	if c := d.Credential; c != nil {
		attrs = append(attrs,
			attribute.String("keygate.tenant", c.TenantID),
			attribute.String("keygate.key_id", c.ID))
		if c.OrgID != "" {
			attrs = append(attrs, attribute.String("keygate.org", c.OrgID))
		}
	}
	return attrs
}

func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// Lookup returns l with a span around every key lookup, a child of the
// Check's. Nil (tracing off): l itself. The result implements Lookup
// only: give authz.Config.Orgs the store itself.
func (t *Tracing) Lookup(l authz.Lookup) authz.Lookup {
	if t == nil {
		return l
	}
	return &lookupTracer{next: l, t: t}
}

type lookupTracer struct {
	next authz.Lookup
	t    *Tracing
}

func (l *lookupTracer) LookupKey(ctx context.Context, hash apikey.Hash) (*authz.Credential, bool, error) {
	ctx, span := l.t.tracer.Start(ctx, LookupSpan)
	c, found, err := l.next.LookupKey(ctx, hash)
	if span.IsRecording() {
		span.SetAttributes(attribute.Bool("keystore.found", found))
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
	return c, found, err
}

// Admin returns h with a server span around every admin write (any method
// but GET, HEAD and OPTIONS), joined to the trace of the request's
// traceparent header. AdminObserved names the span after its route once
// the API has matched one. Nil (tracing off): h itself.
func (t *Tracing) Admin(h http.Handler) http.Handler {
	if t == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			h.ServeHTTP(w, r)
			return
		}
		ctx := t.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := t.tracer.Start(ctx, AdminSpan, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method)))
		defer span.End()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// AdminObserved completes the span Admin started for o's request: named
// after the route pattern (not the path, which carries ids), with the
// status and who made it, by kind and token id (never the token). Give it
// to admin.Options.RequestMetrics. Nil (tracing off): nothing.
func (t *Tracing) AdminObserved(o admin.Observed) {
	if t == nil || o.Request == nil {
		return
	}
	span := trace.SpanFromContext(o.Request.Context())
	if !span.IsRecording() {
		return
	}
	route := o.Route
	if route == "" {
		route = "(unmatched)"
	}
	span.SetName(AdminSpan + " " + route)
	span.SetAttributes(
		attribute.String("http.route", route),
		attribute.Int("http.response.status_code", o.Status))
	if p := o.Principal; p != nil {
		kind := "token"
		if p.Bootstrap {
			kind = "bootstrap"
		}
		span.SetAttributes(attribute.String("keygate.admin.principal", kind))
		if p.TokenID != "" {
			span.SetAttributes(attribute.String("keygate.admin.token_id", p.TokenID))
		}
	}
	if o.Status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(o.Status))
	}
}
