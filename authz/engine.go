package authz

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

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

// UsageRecorder is a Recorder that also counts what every decision about a
// known key did (per-key usage). The engine then tells it once per such
// decision, through KeyDecided alone, so that the hot path takes the
// recorder's lock once rather than twice. Like KeyUsed it must not block
// or allocate for a key it has seen this hour.
type UsageRecorder interface {
	Recorder
	KeyDecided(c *Credential, at time.Time, u Use)
}

// Use is what one decision about a known key did.
type Use struct {
	// Status is the status answered: 200 for an allow (a shadow allow
	// included) or a reply, else the denial's.
	Status int
	// Admitted is what KeyUsed reports: the key passed every stage, so its
	// last-used time moves.
	Admitted bool
	// Credits is what the request took from a metered key's balance.
	Credits int64
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
	usage    UsageRecorder // the recorder, when it counts decisions
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
	denials     map[Reason]Decision
	policy      atomic.Pointer[compiledPolicy]
	limits      *limits
	credits     Credits
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
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	if cfg.Sources == nil {
		cfg.Sources = DefaultSources
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Orgs == nil {
		cfg.Orgs, _ = l.(OrgDirectory)
	}
	hdr := cfg.Headers.withDefaults()
	style := cfg.Errors.withDefaults()
	denials, err := style.render()
	if err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	sg := newSigner(cfg.Signing)
	lim := cfg.RateLimits.compile(cfg.Now)
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
	e.usage, _ = cfg.Recorder.(UsageRecorder)
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
	if err := orgHeaderIsSource(cp.orgHeader, e.sources); err != nil {
		return fmt.Errorf("policy: %w", err)
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

// Sweep forgets rate-limit state that no longer limits anything; a server
// calls it now and then so that idle buckets do not hold memory.
func (e *Engine) Sweep() { e.limits.sweep() }
