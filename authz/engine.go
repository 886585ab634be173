package authz

import (
	"context"
	"errors"
	"fmt"
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
	recorder Recorder
	now      func() time.Time
	names    [numIdentity]string
	// remove[source][mask] is the precomputed Remove list for a key read
	// from that source whose empty identity values are the bits of mask, so
	// allowing a request allocates no list of names.
	remove  [][1 << numIdentity][]string
	denials map[Reason]Decision
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
	hdr := cfg.Headers.withDefaults()
	if err := validateHeaderNames(hdr, cfg.Sources); err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	denials, err := cfg.Errors.render()
	if err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	e := &Engine{
		format:   cfg.Format,
		sources:  append([]string(nil), cfg.Sources...),
		foreign:  cfg.AcceptForeignKeys,
		lookup:   l,
		recorder: cfg.Recorder,
		now:      cfg.Now,
		names:    hdr.names(),
		denials:  denials,
	}
	e.remove = make([][1 << numIdentity][]string, len(e.sources))
	for src := range e.sources {
		for mask := range 1 << numIdentity {
			list := []string{e.sources[src]}
			for i, n := range e.names {
				if mask&(1<<i) != 0 {
					list = append(list, n)
				}
			}
			e.remove[src][mask] = list
		}
	}
	return e, nil
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
// rendered as is; a non-nil error (wrapping ErrUnavailable) says the store or
// the deadline failed, and the Decision is then the fail-closed 503.
func (e *Engine) Decide(ctx context.Context, req *Request) (Decision, error) {
	ex := extract(e.sources, req.Headers)
	if ex.reason != ReasonOK {
		return e.denials[ex.reason], nil
	}
	if _, err := e.format.Parse(ex.raw); err != nil && !e.foreign {
		return e.denials[ReasonInvalidKey], nil
	}
	if err := ctx.Err(); err != nil {
		return e.denials[ReasonUnavailable], fmt.Errorf("%w: before lookup: %w", ErrUnavailable, err)
	}
	cred, found, err := e.lookup.LookupKey(ctx, apikey.HashOf(ex.raw))
	if err != nil {
		return e.denials[ReasonUnavailable], fmt.Errorf("%w: look up key: %w", ErrUnavailable, err)
	}
	if !found {
		return e.denials[ReasonInvalidKey], nil
	}
	now := e.now()
	if r := cred.state(now); r != ReasonOK {
		d := e.denials[r]
		d.Credential = cred
		return d, nil
	}
	if e.recorder != nil {
		e.recorder.KeyUsed(cred, now)
	}
	return e.allow(cred, ex.source), nil
}

func (e *Engine) allow(c *Credential, source int) Decision {
	values := identityValues(c)
	set := make([]Header, 0, numIdentity)
	mask := 0
	for i, v := range values {
		if v == "" {
			mask |= 1 << i
			continue
		}
		set = append(set, Header{Name: e.names[i], Value: v})
	}
	return Decision{
		Allow:      true,
		Reason:     ReasonOK,
		Status:     200,
		Set:        set,
		Remove:     e.remove[source][mask],
		Credential: c,
	}
}
