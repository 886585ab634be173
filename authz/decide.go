package authz

import (
	"context"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/keystore/apikey"
)

// Decide answers one request. It always returns a Decision that can be
// rendered as is; a non-nil error (wrapping ErrUnavailable) says the store,
// the deadline or the route settings failed, and the Decision is then the
// fail-closed 503 (or, in shadow mode, an allow that reports it).
//
// A request goes through four stages, in DESIGN.md's order, each of which
// lets it on or says why not: route (a request that cannot be read one way
// only is refused; public routes end here), authenticate (credential, key
// format, lookup, key state), authorize (client address, environment, org,
// scopes) and admit (limits, credits). finish renders the outcome, the one
// place a Decision is made. The introspection path skips org and scopes (it
// names no resource) but pays like any request.
func (e *Engine) Decide(ctx context.Context, req *Request) (Decision, error) {
	c := checking{req: req, cp: e.policy.Load()}
	o := e.route(&c)
	if o.next() {
		o = e.authenticate(ctx, &c)
	}
	if o.next() {
		o = e.authorize(ctx, &c)
	}
	if o.next() {
		o = e.admit(ctx, &c)
	}
	return e.finish(&c, o), o.err
}

// checking is one request's state as it goes through the stages.
type checking struct {
	req    *Request
	cp     *compiledPolicy
	rt     route
	org    string // the org the request is for, reported upstream
	strip  strip
	raw    apikey.Secret // the presented key
	now    time.Time
	addr   netip.Addr // for allowlists; invalid when unknown
	cred   *Credential
	intro  bool // the introspection path
	rl     charged
	credit int64 // credits left; -1: not metered
	// admitted: the key passed admit, for a UsageRecorder told in finish.
	admitted bool
	// refusal is a refusal with more than its precomputed form (missing
	// scopes, rate-limit headers), when a stage's outcome is custom: kept
	// here rather than in the outcome so that outcomes stay small to pass
	// along, and by value so that a refusal allocates nothing it does not
	// show.
	refusal Decision
}

// outcome is what a stage says: go on (ReasonOK), stop and allow (done,
// on a public route), or refuse for reason, with checking.refusal as the
// answer when custom; err is the failure behind a fail-closed refusal.
type outcome struct {
	reason Reason
	done   bool
	custom bool
	err    error
}

// refuseWith refuses with d as the answer.
func (c *checking) refuseWith(d Decision) outcome {
	c.refusal = d
	return outcome{reason: d.Reason, custom: true}
}

var proceed = outcome{reason: ReasonOK}

func (o outcome) next() bool { return o.reason == ReasonOK && !o.done }

func refuse(r Reason) outcome { return outcome{reason: r} }

func failed(err error) outcome { return outcome{reason: ReasonUnavailable, err: err} }

// route reads where the request goes and which rule applies.
func (e *Engine) route(c *checking) outcome {
	c.rt = c.cp.defaultRoute
	ex := extract(e.sources, c.req.Headers)
	c.strip = strip{sources: ex.present, headers: c.req.Headers}
	if c.req.Unroutable != "" {
		return refuse(ReasonAmbiguousRequest)
	}
	forms, ok := normalizePath(c.req.Path, c.cp.decodeSlashes)
	if !ok {
		return refuse(ReasonInvalidPath)
	}
	rt, org, matched, ok := c.cp.route(c.req.Method, c.req.Host, forms)
	if !ok {
		return refuse(ReasonInvalidPath)
	}
	c.rt, c.org = rt, org
	if len(c.req.Settings) > 0 {
		rt, set, err := c.rt.withSettings(c.req.Settings)
		if err != nil {
			return failed(fmt.Errorf("%w: route %s: %w", ErrUnavailable, c.rt.name, err))
		}
		// A route that carries Keygate settings in Envoy is a configured
		// route, even if no rule of the file matches it.
		c.rt, matched = rt, matched || set
	}
	switch {
	case !matched && c.cp.denyUnmatched:
		return refuse(ReasonRouteNotAllowed)
	case c.rt.public:
		return outcome{reason: ReasonOK, done: true}
	}
	c.intro = c.cp.introspection != "" && forms.clean == c.cp.introspection && (c.req.Method == "GET" || c.req.Method == "HEAD")
	if ex.reason == ReasonMissingKey {
		return refuse(ReasonMissingKey)
	}
	// An unreadable credential (two keys, garbage) leaves raw empty:
	// authenticate counts it as a failed attempt.
	c.raw = ex.raw
	return proceed
}

// authenticate finds the key and checks its state. An address that keeps
// presenting invalid keys is refused before any parsing or lookup:
// guessing costs the guesser, not the store.
func (e *Engine) authenticate(ctx context.Context, c *checking) outcome {
	c.now = e.now()
	var throttle netip.Addr
	c.addr, throttle = e.clientIP.addr(c.req)
	if wait, ok := e.limits.throttled(throttle, c.now); ok {
		return c.refuseWith(e.rateLimited(e.denials[ReasonRateLimited], nil, wait))
	}
	if c.raw.IsZero() {
		e.limits.failed(throttle, c.now)
		return refuse(ReasonInvalidKey)
	}
	if _, err := e.format.Parse(c.raw.Reveal()); err != nil && !e.foreign {
		e.limits.failed(throttle, c.now)
		return refuse(ReasonInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return failed(fmt.Errorf("%w: before lookup: %w", ErrUnavailable, err))
	}
	cred, found, err := e.lookup.LookupKey(ctx, c.raw.Hash())
	if err != nil {
		return failed(fmt.Errorf("%w: look up key: %w", ErrUnavailable, err))
	}
	if !found {
		e.limits.failed(throttle, c.now)
		return refuse(ReasonInvalidKey)
	}
	c.cred = cred
	return refuse(cred.state(c.now))
}

// authorize checks what the key may reach: from where, in which
// environment, which org, with which scopes.
func (e *Engine) authorize(ctx context.Context, c *checking) outcome {
	cred := c.cred
	if len(cred.AllowedIPs) > 0 && !allowedFrom(c.addr, cred.AllowedIPs) {
		return refuse(ReasonIPNotAllowed)
	}
	if !c.cp.envs.allows(cred.Environment) || !c.rt.envs.allows(cred.Environment) {
		return refuse(ReasonEnvironmentNotAllowed)
	}
	if c.intro {
		return proceed
	}
	org := c.org
	if org == "" && c.rt.orgParam == "" && c.cp.orgHeader != "" {
		org = trimOWS(c.req.Headers[c.cp.orgHeader])
	}
	org, ok, err := e.resolveOrg(ctx, cred, org)
	if err != nil {
		return failed(err)
	}
	if !ok {
		return refuse(ReasonOrgForbidden)
	}
	c.org = org
	if missing := missingScopes(c.rt.scopes, cred.Scopes); len(missing) > 0 {
		d, err := e.style.denial(ReasonInsufficientScope, denials[ReasonInsufficientScope].message+": "+strings.Join(missing, ", "), missing)
		if err != nil {
			return failed(fmt.Errorf("%w: %w", ErrUnavailable, err))
		}
		return c.refuseWith(d)
	}
	return proceed
}

// admit charges the request to the key's budgets and credits; a refused
// request spends nothing.
func (e *Engine) admit(ctx context.Context, c *checking) outcome {
	rl, err := e.limits.take(ctx, c.cred, c.rt.cost, c.now)
	if err != nil {
		return failed(fmt.Errorf("%w: rate limit: %w", ErrUnavailable, err))
	}
	if !rl.Allowed {
		return c.refuseWith(e.rateLimited(e.denials[ReasonRateLimited], &rl, 0))
	}
	c.rl, c.credit = rl, -1
	if c.cred.Metered && e.credits != nil {
		left, ok, err := e.credits.Spend(ctx, c.cred, c.rt.cost)
		if err != nil {
			return failed(fmt.Errorf("%w: spend credits: %w", ErrUnavailable, err))
		}
		if !ok {
			return refuse(ReasonCreditsExhausted)
		}
		c.credit = left
	}
	switch {
	case e.usage != nil:
		c.admitted = true
	case e.recorder != nil:
		e.recorder.KeyUsed(c.cred, c.now)
	}
	return proceed
}

// finish renders an outcome as the Decision, stamped with its id and
// route, and applies shadow mode: a refusal on a shadow route or of a
// shadow tenant's key becomes an allow that reports what would have
// happened. Identity headers are set only for a key that authenticated;
// every other identity header is stripped, and so is every credential the
// request carried.
func (e *Engine) finish(c *checking, o outcome) Decision {
	var (
		d     Decision
		spent int64
	)
	switch {
	case o.reason == ReasonOK && c.cred == nil:
		d = e.allow(nil, c.strip, "")
	case o.reason == ReasonOK:
		if c.intro {
			d = e.introspect(c.cred)
		} else {
			d = e.allow(c.cred, c.strip, c.org)
		}
		if c.rl.applied && !e.limits.quietAllows {
			d.ResponseHeaders = rateHeaders(d.ResponseHeaders, &c.rl, false)
		}
		if c.credit >= 0 {
			spent = int64(c.rt.cost)
			d.ResponseHeaders = append(d.ResponseHeaders, Header{Name: "x-credits-remaining", Value: strconv.FormatInt(c.credit, 10)})
		}
	case o.custom:
		d = c.refusal
	default:
		d = e.denials[o.reason]
	}
	cred := c.cred
	if d.Kind == KindDeny && (c.rt.shadow || cred != nil && c.cp.shadowTenants[cred.TenantID]) {
		would := d.Reason
		if cred != nil && cred.state(e.now()) == ReasonOK {
			d = e.allow(cred, c.strip, cred.OrgID)
		} else {
			d = e.allow(nil, c.strip, "")
			d.Credential = cred
		}
		d.WouldDeny = would
	}
	if d.Credential == nil && cred != nil {
		// A refusal of a known key names it in logs and metadata.
		d.Credential = cred
	}
	d.ID = e.idBase + e.idSeq.Add(1)
	d.Route = c.rt.name
	d.Cost = c.rt.cost
	if e.usage != nil && cred != nil {
		// Every decision about a known key passes here once, whatever
		// stage ended it: counting here cannot miss or double a refusal.
		e.usage.KeyDecided(cred, c.now, Use{Status: d.Status, Admitted: c.admitted, Credits: spent})
	}
	return d
}

// rateLimited adds the rate-limit headers of ch to a precomputed 429. The
// failed-authentication throttle (ch nil) says only when to retry.
func (e *Engine) rateLimited(d Decision, ch *charged, wait time.Duration) Decision {
	hs := make([]Header, 0, len(d.ResponseHeaders)+6)
	hs = append(hs, d.ResponseHeaders...)
	if ch == nil {
		hs = append(hs, Header{Name: "retry-after", Value: strconv.FormatInt(max(seconds(wait), 1), 10)})
	} else {
		hs = rateHeaders(hs, ch, true)
	}
	d.ResponseHeaders = hs
	return d
}

// resolveOrg checks the org a request names against the key: an org-level
// key must name its own org (or none), a tenant-level key an org of its
// tenant. It returns the org to report upstream.
func (e *Engine) resolveOrg(ctx context.Context, c *Credential, org string) (string, bool, error) {
	switch {
	case org == "":
		return c.OrgID, true, nil
	case c.OrgID != "":
		return org, org == c.OrgID, nil
	case e.orgs == nil:
		return "", false, nil
	}
	tenant, found, err := e.orgs.OrgTenant(ctx, org)
	if err != nil {
		return "", false, fmt.Errorf("%w: look up org: %w", ErrUnavailable, err)
	}
	return org, found && tenant == c.TenantID, nil
}

// allow builds an allowing decision: identity headers of c (none when c is
// nil), with org as the org, and the removals that go with them: every
// identity header it does not set, every credential header the request
// carried, and their '_' spellings. One allocation holds all of it, with
// room after the upstream headers for the client's rate-limit headers.
func (e *Engine) allow(c *Credential, st strip, org string) Decision {
	var values [numIdentity]string
	if c != nil {
		values = identityValues(c)
		values[1] = org
	}
	b := new(allowBuf)
	set := b.headers[:0]
	remove := b.remove[:0]
	for s := st.sources; s != 0; s &= s - 1 {
		remove = append(remove, e.sources[bits.TrailingZeros64(s)])
	}
	for i, v := range values {
		if v == "" {
			remove = append(remove, e.names[i])
			continue
		}
		set = append(set, Header{Name: e.names[i], Value: v})
	}
	if e.signer != nil {
		set = append(set, e.signer.sign(values, e.now()))
	}
	remove = append(remove, e.twins(st.headers)...)
	return Decision{
		Kind:            KindAllow,
		Reason:          ReasonOK,
		Status:          200,
		Set:             set[:len(set):len(set)],
		ResponseHeaders: set[len(set):],
		Remove:          remove,
		Credential:      c,
	}
}

// allowBuf is the one allocation of an allow: upstream headers (identity,
// signature) and after them the client's rate-limit headers, and the
// removals (identity headers not set, credential headers present; twins
// past them grow a list of their own).
type allowBuf struct {
	headers [numIdentity + 1 + 7]Header
	remove  [numIdentity + 3]string
}

// strip is what an allowed request carried that must not reach the
// backend besides the identity headers the decision does not set: the
// credential headers present (whether or not a key was read from them)
// and the other spellings of identity and credential headers.
type strip struct {
	sources uint64 // bit i: the request carries e.sources[i]
	// headers are searched for names that spell one of ours with '_' for
	// '-' (or back), on allows only: a refusal sends nothing upstream and
	// so pays nothing for them.
	headers map[string]string
}

// twins finds the headers that spell an identity or credential header
// with '_' where ours has '-' (or the reverse): "x_tenant_id" is not
// "x-tenant-id" to Envoy or to Keygate, but CGI, WSGI and Rack backends
// read both as HTTP_X_TENANT_ID. Only names holding a '_' can be one
// unless a configured name holds one itself.
func (e *Engine) twins(h map[string]string) []string {
	var out []string
	for k := range h {
		if !e.hyphenTwins && strings.IndexByte(k, '_') < 0 {
			continue
		}
		for _, n := range e.twinOf {
			if k != n && sameSpelling(k, n) {
				out = append(out, k)
				break
			}
		}
	}
	return out
}

// sameSpelling reports whether a and b differ only in '-' against '_'.
func sameSpelling(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x != y && !((x == '-' || x == '_') && (y == '-' || y == '_')) {
			return false
		}
	}
	return true
}
