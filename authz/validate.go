package authz

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// FieldError is a problem with one setting of Config. Field is the
// setting's path in Config in Go's spelling ("Sources", "Headers",
// "Errors", "ClientIP", "Signing.Secret", "Signing.Header",
// "RateLimits.Tiers", "RateLimits.DefaultTier", "RateLimits.Org",
// "RateLimits.Tenant", "RateLimits.FailedAuth", "Policy.OrgHeader",
// "Policy.Environments", "Policy.IntrospectionPath"), and Key the map key
// under it where there is one (a tier's name), so that a loader can point
// at the place in its own file the setting came from. A problem with one
// route rule is a *RuleError instead.
type FieldError struct {
	Field string
	Key   string
	Err   error
}

// Error is the problem alone: where it is, the caller says in its own terms.
func (e *FieldError) Error() string { return e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

func fieldError(field string, err error) error {
	if err == nil {
		return nil
	}
	return &FieldError{Field: field, Err: err}
}

// Validate reports every problem New would refuse c for, all at once, each
// a *FieldError or a *RuleError, joined (errors.Join); nil when c is valid.
// It reads c and nothing else and builds no engine (the route table is
// compiled and dropped: compiling is its check), so a config loader can
// check a file without a store. New calls it: each rule is written once.
func (c Config) Validate() error {
	sources := c.Sources
	if sources == nil {
		sources = DefaultSources
	}
	hdr := c.Headers.withDefaults()
	errs := []error{
		fieldError("Sources", validateSources(sources)),
		// Against the configured sources even when they are invalid: a
		// clash with a listed source is a problem either way.
		fieldError("Headers", validateHeaderNames(hdr, sources)),
		fieldError("Errors", c.Errors.validate()),
		fieldError("ClientIP", c.ClientIP.validate()),
	}
	errs = append(errs, c.Signing.validate(hdr)...)
	errs = append(errs, c.RateLimits.validate()...)
	if _, err := c.Policy.compile(); err != nil {
		errs = append(errs, unjoin(err)...)
	}
	errs = append(errs, fieldError("Policy.OrgHeader", orgHeaderIsSource(c.Policy.OrgHeader, sources)))
	return errors.Join(errs...)
}

// unjoin returns the errors errors.Join joined, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// orgHeaderIsSource refuses an org header that is also a credential
// source: the header would be both the secret and a routing hint, and be
// stripped as a credential before the backend saw the org.
func orgHeaderIsSource(orgHeader string, sources []string) error {
	h := strings.ToLower(orgHeader)
	for _, s := range sources {
		if h != "" && s == h {
			return fmt.Errorf("org header %q is also a credential source", h)
		}
	}
	return nil
}

func (s ErrorStyle) validate() error {
	if s.Format != "" && s.Format != FormatSimple && s.Format != FormatProblem {
		return fmt.Errorf("error format %q: want %q or %q", s.Format, FormatSimple, FormatProblem)
	}
	if strings.ContainsAny(s.Realm, "\"\\\r\n") {
		return fmt.Errorf("realm %q: quotes, backslashes and line breaks are not allowed", s.Realm)
	}
	return nil
}

// validate checks the signing settings against the identity header names
// in effect (names with their defaults). Without a secret there is no
// signing, and nothing else is looked at.
func (s Signing) validate(names IdentityHeaders) []error {
	if len(s.Secret) == 0 {
		return nil
	}
	var errs []error
	if len(s.Secret) < 32 {
		errs = append(errs, fieldError("Signing.Secret", fmt.Errorf("signing secret is %d bytes, want at least 32", len(s.Secret))))
	}
	header := s.header()
	if err := validHeaderName(header); err != nil {
		errs = append(errs, fieldError("Signing.Header", fmt.Errorf("signing: %w", err)))
	}
	for _, n := range names.names() {
		if n == header {
			errs = append(errs, fieldError("Signing.Header", fmt.Errorf("signing header %q is also an identity header", n)))
		}
	}
	return errs
}

func (s Signing) header() string {
	if s.Header == "" {
		return DefaultSignatureHeader
	}
	return s.Header
}

// validate checks rl with its defaults applied, each limit on its own.
func (rl RateLimits) validate() []error {
	rl = rl.withDefaults()
	var errs []error
	for _, opt := range []struct {
		field, name string
		set         LimitSet
	}{{"RateLimits.Org", "org", rl.Org}, {"RateLimits.Tenant", "tenant", rl.Tenant}, {"RateLimits.User", "user", rl.User}} {
		if err := opt.set.validate(); err != nil {
			errs = append(errs, fieldError(opt.field, fmt.Errorf("rate limit %s: %w", opt.name, err)))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(rl.Tiers)) {
		err := rl.Tiers[name].validate()
		if err == nil && len(rl.Tiers[name]) == 0 {
			err = errors.New("no limits")
		}
		if err != nil {
			errs = append(errs, &FieldError{Field: "RateLimits.Tiers", Key: name, Err: fmt.Errorf("rate limit tier %q: %w", name, err)})
		}
	}
	if def := rl.DefaultTier; def != "" {
		if _, ok := rl.Tiers[def]; !ok {
			errs = append(errs, fieldError("RateLimits.DefaultTier", fmt.Errorf("rate limit default tier %q is not a configured tier", def)))
		}
	}
	if len(rl.Tiers) == 0 && !rl.PerKeyOff {
		errs = append(errs, fieldError("RateLimits.Tiers", errNoTiers))
	}
	if rl.FailedAuth.Requests > 0 {
		if err := rl.FailedAuth.Validate(); err != nil {
			errs = append(errs, fieldError("RateLimits.FailedAuth", fmt.Errorf("failed-auth throttle: %w", err)))
		}
	}
	return errs
}
