package authz

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore/apikey"
)

// Lookup finds the stored credential for a key hash. found is false for a
// hash the store does not know; err is for the store failing, which the
// engine answers with 503 rather than guessing.
type Lookup interface {
	LookupKey(ctx context.Context, hash apikey.Hash) (c *Credential, found bool, err error)
}

// OrgDirectory tells which tenant an org belongs to, so that a tenant-level
// key reaches the orgs of its own tenant and no others. found is false for
// an org the store does not know.
type OrgDirectory interface {
	OrgTenant(ctx context.Context, orgID string) (tenantID string, found bool, err error)
}

// Recorder is told when an allowed request used a key, so the store can keep
// last-used times. It must not block: it runs on every allowed Check.
type Recorder interface {
	KeyUsed(c *Credential, at time.Time)
}

// ErrUnavailable wraps every failure that made the engine fail closed.
var ErrUnavailable = errors.New("authorization unavailable")

// Config configures an Engine. The zero value of each field means its
// documented default.
type Config struct {
	// Format is the key format issued by this deployment. Zero: prefix "ak".
	Format apikey.Format
	// Sources lists where keys are looked for, in order: SourceAuthorization
	// (`Authorization: Bearer`) or a lower-case header carrying the bare key.
	// Nil: DefaultSources.
	Sources []string
	// AcceptForeignKeys lets keys that are not in Format (imported from
	// another system) be looked up by hash. False: such strings are
	// rejected as invalid without a lookup.
	AcceptForeignKeys bool
	// Headers names the identity headers set upstream. Zero fields: defaults.
	Headers IdentityHeaders
	// Errors shapes denial bodies. Zero: simple `{"error": "..."}` bodies.
	Errors ErrorStyle
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// Recorder, when set, is told of every allowed use of a key.
	Recorder Recorder
	// Orgs resolves org ids to tenants for tenant-level keys on routes that
	// name an org. Nil: the Lookup, if it implements OrgDirectory.
	Orgs OrgDirectory
	// Policy is the initial route table; SetPolicy replaces it.
	Policy Policy
	// ClientIP says where the client's address is read from.
	ClientIP ClientIP
	// Signing, when its Secret is set, adds an HMAC signature over the
	// identity headers to every allowed request.
	Signing Signing
	// RateLimits are the request budgets per key, org and tenant, and the
	// failed-authentication throttle.
	RateLimits RateLimits
	// Credits, when set, is charged the route's cost for keys with a
	// prepaid balance (Credential.Metered).
	Credits Credits
}

// IdentityHeaders names the headers the engine sets on allowed requests.
type IdentityHeaders struct {
	Tenant      string // default x-tenant-id
	Org         string // default x-org-id
	User        string // default x-user-id
	KeyID       string // default x-api-key-id
	KeyName     string // default x-api-key-name
	Environment string // default x-api-key-environment
	Tier        string // default x-rate-limit-tier
	Scopes      string // default x-scopes
}

// DefaultIdentityHeaders are the header names of DESIGN.md.
var DefaultIdentityHeaders = IdentityHeaders{
	Tenant:      "x-tenant-id",
	Org:         "x-org-id",
	User:        "x-user-id",
	KeyID:       "x-api-key-id",
	KeyName:     "x-api-key-name",
	Environment: "x-api-key-environment",
	Tier:        "x-rate-limit-tier",
	Scopes:      "x-scopes",
}

func (h IdentityHeaders) withDefaults() IdentityHeaders {
	d := DefaultIdentityHeaders
	for _, p := range []struct {
		dst *string
		v   string
	}{
		{&d.Tenant, h.Tenant}, {&d.Org, h.Org}, {&d.User, h.User}, {&d.KeyID, h.KeyID},
		{&d.KeyName, h.KeyName}, {&d.Environment, h.Environment}, {&d.Tier, h.Tier}, {&d.Scopes, h.Scopes},
	} {
		if p.v != "" {
			*p.dst = p.v
		}
	}
	return d
}

// names returns the header names in the order of identityValues.
func (h IdentityHeaders) names() [numIdentity]string {
	return [numIdentity]string{h.Tenant, h.Org, h.User, h.KeyID, h.KeyName, h.Environment, h.Tier, h.Scopes}
}

const numIdentity = 8

func identityValues(c *Credential) [numIdentity]string {
	return [numIdentity]string{c.TenantID, c.OrgID, c.UserID, c.ID, c.Name, c.Environment, c.Tier, c.ScopesHeader}
}

// Engine makes decisions. It is safe for concurrent use; build one with New.
type Engine struct {
	format   apikey.Format
	sources  []string
	foreign  bool
	lookup   Lookup
	orgs     OrgDirectory
	recorder Recorder
	now      func() time.Time
	clientIP ClientIP
	signer   *signer
	style    ErrorStyle
	names    [numIdentity]string
	// twinOf are the header names whose other spellings are stripped
	// (identity, credential and signature headers); hyphenTwins says one
	// of them holds a '_', so a name with only '-' can be a twin too.
	twinOf      []string
	hyphenTwins bool
	// remove[source][mask] is the precomputed Remove list for a key read
	// from that source (len(sources): no credential to strip) whose empty
	// identity values are the bits of mask, so allowing a request allocates
	// no list of names.
	remove  [][1 << numIdentity][]string
	denials map[Reason]Decision
	policy  atomic.Pointer[compiledPolicy]
	limits  *limits
	credits Credits
	// Decision ids: a random base per process plus a counter, unique
	// without a syscall per request.
	idBase uint64
	idSeq  atomic.Uint64
}

// New returns an Engine that looks keys up in l.
func New(cfg Config, l Lookup) (*Engine, error) {
	if l == nil {
		return nil, errors.New("authz: nil Lookup")
	}
	if cfg.Format == (apikey.Format{}) {
		cfg.Format = apikey.MustFormat(apikey.DefaultPrefix)
	}
	if cfg.Sources == nil {
		cfg.Sources = DefaultSources
	}
	if err := validateSources(cfg.Sources); err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Orgs == nil {
		cfg.Orgs, _ = l.(OrgDirectory)
	}
	hdr := cfg.Headers.withDefaults()
	if err := validateHeaderNames(hdr, cfg.Sources); err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	style, err := cfg.Errors.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	denials, err := style.render()
	if err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	if err := cfg.ClientIP.validate(); err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	sg, err := newSigner(cfg.Signing, hdr)
	if err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	lim, err := cfg.RateLimits.compile(cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("authz: decision id seed: %w", err)
	}
	e := &Engine{
		format:   cfg.Format,
		sources:  append([]string(nil), cfg.Sources...),
		foreign:  cfg.AcceptForeignKeys,
		lookup:   l,
		orgs:     cfg.Orgs,
		recorder: cfg.Recorder,
		now:      cfg.Now,
		clientIP: cfg.ClientIP,
		signer:   sg,
		style:    style,
		names:    hdr.names(),
		denials:  denials,
		idBase:   binary.LittleEndian.Uint64(seed[:]),
		limits:   lim,
		credits:  cfg.Credits,
	}
	e.remove = make([][1 << numIdentity][]string, len(e.sources)+1)
	for src := range e.remove {
		for mask := range 1 << numIdentity {
			var list []string
			if src < len(e.sources) {
				list = append(list, e.sources[src])
			}
			for i, n := range e.names {
				if mask&(1<<i) != 0 {
					list = append(list, n)
				}
			}
			e.remove[src][mask] = list
		}
	}
	e.twinOf = append(e.twinOf, e.names[:]...)
	for _, s := range e.sources {
		if s != SourceAuthorization {
			e.twinOf = append(e.twinOf, s)
		}
	}
	if sg != nil {
		e.twinOf = append(e.twinOf, sg.header)
	}
	for _, n := range e.twinOf {
		e.hyphenTwins = e.hyphenTwins || strings.IndexByte(n, '_') >= 0
	}
	if err := e.SetPolicy(cfg.Policy); err != nil {
		return nil, err
	}
	return e, nil
}

// SetPolicy replaces the route table atomically: a Check in flight finishes
// under the table it started with, the next one uses the new table. An
// invalid policy is refused and the current one stays.
func (e *Engine) SetPolicy(p Policy) error {
	cp, err := p.compile()
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if cp.orgHeader != "" {
		for _, s := range e.sources {
			if s == cp.orgHeader {
				return fmt.Errorf("policy: org header %q is also a credential source", cp.orgHeader)
			}
		}
	}
	e.policy.Store(cp)
	return nil
}

// ValidatePolicy reports every problem of p without installing it.
func ValidatePolicy(p Policy) error {
	if _, err := p.compile(); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	return nil
}

func validateHeaderNames(h IdentityHeaders, sources []string) error {
	seen := map[string]string{}
	for _, s := range sources {
		seen[s] = "credential source"
	}
	for _, n := range h.names() {
		if err := validHeaderName(n); err != nil {
			return err
		}
		if what, dup := seen[n]; dup {
			return fmt.Errorf("identity header %q is also a %s", n, what)
		}
		seen[n] = "identity header"
	}
	return nil
}

func validHeaderName(n string) error {
	if n == "" || n[0] == ':' || n == "host" {
		return fmt.Errorf("header name %q cannot be set", n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("header name %q: want lower-case letters, digits, '-', '_' or '.'", n)
		}
	}
	return nil
}

// Decide answers one request. It always returns a Decision that can be
// rendered as is; a non-nil error (wrapping ErrUnavailable) says the store,
// the deadline or the route settings failed, and the Decision is then the
// fail-closed 503 (or, in shadow mode, an allow that reports it).
//
// The order is DESIGN.md's: a request that cannot be read one way only is
// refused (400), then the route (public routes end here), credential, key
// format, lookup, key state, client address, environment, org, scopes,
// limits and credits. The introspection path skips org and scopes (it
// names no resource) but pays like any request.
func (e *Engine) Decide(ctx context.Context, req *Request) (Decision, error) {
	cp := e.policy.Load()
	ex := extract(e.sources, req.Headers)
	st := strip{sources: ex.present, headers: req.Headers}
	if req.Unroutable != "" {
		return e.finish(cp, cp.defaultRoute, e.denials[ReasonAmbiguousRequest], nil, st), nil
	}
	forms, ok := normalizePath(req.Path, cp.decodeSlashes)
	if !ok {
		return e.finish(cp, cp.defaultRoute, e.denials[ReasonInvalidPath], nil, st), nil
	}
	rt, org, matched, ok := cp.route(req.Method, req.Host, forms)
	if !ok {
		return e.finish(cp, cp.defaultRoute, e.denials[ReasonInvalidPath], nil, st), nil
	}
	var err error
	routed := matched
	if len(req.Settings) > 0 {
		var set bool
		if rt, set, err = rt.withSettings(req.Settings); err != nil {
			err = fmt.Errorf("%w: route %s: %w", ErrUnavailable, rt.name, err)
			return e.finish(cp, rt, e.denials[ReasonUnavailable], nil, st), err
		}
		// A route that carries Keygate settings in Envoy is a configured
		// route, even if no rule of the file matches it.
		routed = routed || set
	}
	switch {
	case !routed && cp.denyUnmatched:
		return e.finish(cp, rt, e.denials[ReasonRouteNotAllowed], nil, st), nil
	case rt.public:
		return e.finish(cp, rt, e.allow(nil, st, ""), nil, st), nil
	}

	now := e.now()
	if ex.reason == ReasonMissingKey {
		return e.finish(cp, rt, e.denials[ex.reason], nil, st), nil
	}
	// An address that keeps presenting invalid keys is refused before any
	// parsing or lookup: guessing costs the guesser, not the store.
	addr, throttleKey := e.clientIP.addr(req)
	if wait, ok := e.limits.throttled(throttleKey, now); ok {
		return e.finish(cp, rt, e.rateLimited(e.denials[ReasonRateLimited], nil, "", ratelimit.Result{RetryAfter: wait}, now), nil, st), nil
	}
	if ex.reason != ReasonOK {
		e.limits.failed(throttleKey, now)
		return e.finish(cp, rt, e.denials[ex.reason], nil, st), nil
	}
	if _, perr := e.format.Parse(ex.raw); perr != nil && !e.foreign {
		e.limits.failed(throttleKey, now)
		return e.finish(cp, rt, e.denials[ReasonInvalidKey], nil, st), nil
	}
	if err := ctx.Err(); err != nil {
		return e.finish(cp, rt, e.denials[ReasonUnavailable], nil, st), fmt.Errorf("%w: before lookup: %w", ErrUnavailable, err)
	}
	cred, found, err := e.lookup.LookupKey(ctx, apikey.HashOf(ex.raw))
	if err != nil {
		return e.finish(cp, rt, e.denials[ReasonUnavailable], nil, st), fmt.Errorf("%w: look up key: %w", ErrUnavailable, err)
	}
	if !found {
		e.limits.failed(throttleKey, now)
		return e.finish(cp, rt, e.denials[ReasonInvalidKey], nil, st), nil
	}
	if r := cred.state(now); r != ReasonOK {
		return e.finish(cp, rt, e.denials[r], cred, st), nil
	}
	if len(cred.AllowedIPs) > 0 && !allowedFrom(addr, cred.AllowedIPs) {
		return e.finish(cp, rt, e.denials[ReasonIPNotAllowed], cred, st), nil
	}
	if !cp.envs.allows(cred.Environment) || !rt.envs.allows(cred.Environment) {
		return e.finish(cp, rt, e.denials[ReasonEnvironmentNotAllowed], cred, st), nil
	}
	introspect := cp.introspection != "" && forms.clean == cp.introspection && (req.Method == "GET" || req.Method == "HEAD")
	if !introspect {
		if org == "" && rt.orgParam == "" && cp.orgHeader != "" {
			org = trimOWS(req.Headers[cp.orgHeader])
		}
		var ok bool
		org, ok, err = e.resolveOrg(ctx, cred, org)
		if err != nil {
			return e.finish(cp, rt, e.denials[ReasonUnavailable], cred, st), err
		}
		if !ok {
			return e.finish(cp, rt, e.denials[ReasonOrgForbidden], cred, st), nil
		}
		if missing := missingScopes(rt.scopes, cred.Scopes); len(missing) > 0 {
			d, rerr := e.style.denial(ReasonInsufficientScope, denials[ReasonInsufficientScope].message+": "+strings.Join(missing, ", "), missing)
			if rerr != nil {
				return e.finish(cp, rt, e.denials[ReasonUnavailable], cred, st), fmt.Errorf("%w: %w", ErrUnavailable, rerr)
			}
			return e.finish(cp, rt, d, cred, st), nil
		}
	}
	rl, err := e.limits.take(ctx, cred, rt.cost, now)
	if err != nil {
		return e.finish(cp, rt, e.denials[ReasonUnavailable], cred, st), fmt.Errorf("%w: rate limit: %w", ErrUnavailable, err)
	}
	if !rl.Allowed {
		return e.finish(cp, rt, e.rateLimited(e.denials[ReasonRateLimited], rl.tier, rl.bucket, rl.Result, now), cred, st), nil
	}
	credits := int64(-1)
	if cred.Metered && e.credits != nil {
		left, ok, err := e.credits.Spend(ctx, cred, rt.cost)
		if err != nil {
			return e.finish(cp, rt, e.denials[ReasonUnavailable], cred, st), fmt.Errorf("%w: spend credits: %w", ErrUnavailable, err)
		}
		if !ok {
			return e.finish(cp, rt, e.denials[ReasonCreditsExhausted], cred, st), nil
		}
		credits = left
	}
	if e.recorder != nil {
		e.recorder.KeyUsed(cred, now)
	}
	var d Decision
	if introspect {
		d = e.introspect(cred)
	} else {
		d = e.allow(cred, st, org)
	}
	if rl.bucket != "" {
		d.ResponseHeaders = rateHeaders(d.ResponseHeaders, rl.tier, rl.bucket, rl.Result, now, false)
	}
	if credits >= 0 {
		d.ResponseHeaders = append(d.ResponseHeaders, Header{Name: "x-credits-remaining", Value: strconv.FormatInt(credits, 10)})
	}
	return e.finish(cp, rt, d, cred, st), nil
}

// rateLimited adds the rate-limit headers to a precomputed 429. The
// failed-authentication throttle (no bucket name) says only when to retry.
func (e *Engine) rateLimited(d Decision, t *tierLimit, name string, r ratelimit.Result, now time.Time) Decision {
	hs := make([]Header, 0, len(d.ResponseHeaders)+6)
	hs = append(hs, d.ResponseHeaders...)
	if name == "" {
		hs = append(hs, Header{Name: "retry-after", Value: strconv.FormatInt(max(seconds(r.RetryAfter), 1), 10)})
	} else {
		hs = rateHeaders(hs, t, name, r, now, true)
	}
	d.ResponseHeaders = hs
	return d
}

// Sweep forgets rate-limit state that no longer limits anything; a server
// calls it now and then so that idle buckets do not hold memory.
func (e *Engine) Sweep() { e.limits.sweep() }

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

// finish stamps a decision with its id and route, and applies shadow mode:
// a refusal on a shadow route or of a shadow tenant's key becomes an allow
// that reports what would have happened. Identity headers are set only for
// a key that authenticated; every other identity header is stripped, and
// so is every credential the request carried.
func (e *Engine) finish(cp *compiledPolicy, rt route, d Decision, cred *Credential, st strip) Decision {
	if !d.Allow && d.Reason != ReasonIntrospection && (rt.shadow || cred != nil && cp.shadowTenants[cred.TenantID]) {
		would := d.Reason
		switch {
		case cred != nil && cred.state(e.now()) == ReasonOK:
			d = e.allow(cred, st, cred.OrgID)
		default:
			d = e.allow(nil, st, "")
			d.Credential = cred
		}
		d.WouldDeny = would
	}
	if d.Credential == nil && cred != nil {
		// A refusal of a known key names it in logs and metadata.
		d.Credential = cred
	}
	d.ID = e.idBase + e.idSeq.Add(1)
	d.Route = rt.name
	d.Cost = rt.cost
	return d
}

// allow builds an allowing decision: identity headers of c (none when c is
// nil), with org as the org, and the removals that go with them.
func (e *Engine) allow(c *Credential, st strip, org string) Decision {
	var values [numIdentity]string
	if c != nil {
		values = identityValues(c)
		values[1] = org
	}
	// One allocation holds the upstream headers and, after them, room for
	// the client's rate-limit headers.
	buf := make([]Header, 0, numIdentity+1+7)
	set := buf
	mask := 0
	for i, v := range values {
		if v == "" {
			mask |= 1 << i
			continue
		}
		set = append(set, Header{Name: e.names[i], Value: v})
	}
	if e.signer != nil {
		set = append(set, e.signer.sign(values, e.now()))
	}
	return Decision{
		Allow:           true,
		Reason:          ReasonOK,
		Status:          200,
		Set:             set[:len(set):len(set)],
		ResponseHeaders: set[len(set):],
		Remove:          e.removeList(st, mask),
		Credential:      c,
	}
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

// removeList is the Remove list of an allow. The common requests (one
// credential header or none, no twins) get a precomputed list; anything
// else is an attacker's or a confused client's, and pays an allocation.
func (e *Engine) removeList(st strip, mask int) []string {
	twins := e.twins(st.headers)
	if twins == nil && bits.OnesCount64(st.sources) <= 1 {
		src := len(e.sources)
		if st.sources != 0 {
			src = bits.TrailingZeros64(st.sources)
		}
		return e.remove[src][mask]
	}
	var list []string
	for i, s := range e.sources {
		if st.sources&(1<<i) != 0 {
			list = append(list, s)
		}
	}
	for i, n := range e.names {
		if mask&(1<<i) != 0 {
			list = append(list, n)
		}
	}
	return append(list, twins...)
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
