package authz

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/keygate/keygate/keystore/apikey"
)

// Policy is the route table and the settings that apply across it. The
// zero Policy lets any valid key through on any route.
type Policy struct {
	// Rules are tried in order; the first that matches decides.
	Rules []Rule
	// DenyUnmatched refuses (403 route_not_allowed) requests no rule
	// matches. False: they need a valid key and nothing more.
	DenyUnmatched bool
	// OrgHeader names a request header (e.g. "x-org-id") that selects the
	// org a request is for when the matched rule has no org parameter.
	// Empty: only rules' path parameters name orgs.
	OrgHeader string
	// Environments limits every route to keys of these environments
	// ("live", "test"). Empty: any.
	Environments []string
	// ShadowTenants lists tenants whose requests are never refused: the
	// decision is made and reported as WouldDeny, and the request goes on.
	ShadowTenants []string
	// IntrospectionPath, when set, is answered by Keygate itself (GET or
	// HEAD) with the principal of the presented key as JSON, the way
	// Alloovium's /me works, so a client can test its key without a backend.
	IntrospectionPath string
	// DecodeEscapedSlashes reads "%2F", "%5C" and "\\" in a path as "/",
	// for backends known to do the same. False: such paths are refused
	// (400 invalid_path), since backends disagree on what they mean.
	DecodeEscapedSlashes bool
	// ExactCase matches paths in their exact case only, for backends known
	// to be case-sensitive. False: a path that would reach another rule
	// (or another org) were it matched ignoring case is refused (400
	// invalid_path), since a case-insensitive backend serves "/Admin" as
	// "/admin"; rules with CaseInsensitive match in any case either way.
	ExactCase bool
}

// Rule is one route rule. A rule matches when every matcher it sets
// matches; the other fields say what the route requires.
type Rule struct {
	Name string
	// Matchers. Methods are compared case-insensitively; Host matches the
	// request's host without port, exactly or ("*.example.com") by suffix.
	// At most one of Path (exact), PathPrefix and PathPattern is set; a
	// pattern's "{name}" and "*" match one segment, a final "**" the rest.
	Methods     []string
	Host        string
	Path        string
	PathPrefix  string
	PathPattern string

	// Public routes need no key; identity headers a client sent are still
	// removed.
	Public bool
	// Scopes the key must hold, all of them. A key scope ending in "*"
	// ("vault:*", or "*") grants every scope it is a prefix of.
	Scopes []string
	// Environments allowed on this route. Empty: any.
	Environments []string
	// Cost is the rate-limit tokens one request spends. Zero: 1.
	Cost int
	// OrgParam names the PathPattern parameter that holds the org id; an
	// org-level key must belong to that org, a tenant-level key to its
	// tenant.
	OrgParam string
	// Shadow computes and reports the decision but never refuses.
	Shadow bool
	// CaseInsensitive matches Path, PathPrefix and the literal segments of
	// PathPattern in any case, for backends that serve "/Admin" as
	// "/admin". False: exact case.
	CaseInsensitive bool
}

// Settings names in Envoy's per-route context_extensions. They override
// the same fields of the matched rule (or of the unmatched default), so an
// Envoy or Istio operator can keep policy in the route config.
const (
	SettingPublic       = "keygate.public"
	SettingScopes       = "keygate.scopes"
	SettingEnvironments = "keygate.environments"
	SettingCost         = "keygate.cost"
	SettingShadow       = "keygate.shadow"
	settingPrefix       = "keygate."
)

// envSet is a set of key environments as bits; zero means any.
type envSet uint8

const (
	envLive envSet = 1 << iota
	envTest
)

func parseEnvs(envs []string) (envSet, error) {
	var s envSet
	for _, e := range envs {
		switch strings.TrimSpace(e) {
		case apikey.EnvLive:
			s |= envLive
		case apikey.EnvTest:
			s |= envTest
		default:
			return 0, fmt.Errorf("environment %q: want %q or %q", e, apikey.EnvLive, apikey.EnvTest)
		}
	}
	return s, nil
}

func (s envSet) allows(env string) bool {
	switch {
	case s == 0:
		return true
	case env == apikey.EnvLive:
		return s&envLive != 0
	case env == apikey.EnvTest:
		return s&envTest != 0
	}
	return false
}

// compiledPolicy is a Policy checked and prepared for matching.
type compiledPolicy struct {
	rules         []compiledRule
	denyUnmatched bool
	orgHeader     string
	envs          envSet
	shadowTenants map[string]bool
	introspection string
	decodeSlashes bool
	// foldCheck compares each path's exact and case-folded readings;
	// upperRule says a rule spells a literal with upper case, so that even
	// an all-lower-case path can read differently folded.
	foldCheck    bool
	upperRule    bool
	defaultRoute route
}

type compiledRule struct {
	name       string
	methods    []string // upper case; empty: any
	host       string   // lower case, without "*." when hostSuffix
	hostSuffix bool
	fold       bool // case-insensitive path
	exact      string
	prefix     string
	pattern    *pattern
	route      route
}

// route is what applies to one request once a rule (or the default) and the
// request's per-route settings are merged.
type route struct {
	name     string
	public   bool
	scopes   []string
	envs     envSet
	cost     int
	orgParam string
	shadow   bool
}

// RuleError is a problem with one rule, so that a config loader can point
// at the rule's place in its file.
type RuleError struct {
	Index int // 0-based position in Policy.Rules
	Name  string
	Err   error
}

func (e *RuleError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("rule %d (%s): %v", e.Index+1, e.Name, e.Err)
	}
	return fmt.Sprintf("rule %d: %v", e.Index+1, e.Err)
}

func (e *RuleError) Unwrap() error { return e.Err }

// compile checks every rule and reports all problems at once, each with the
// rule's position, so an operator fixes a config in one pass.
func (p Policy) compile() (*compiledPolicy, error) {
	var errs []error
	cp := &compiledPolicy{
		denyUnmatched: p.DenyUnmatched,
		introspection: p.IntrospectionPath,
		decodeSlashes: p.DecodeEscapedSlashes,
		foldCheck:     !p.ExactCase,
		shadowTenants: map[string]bool{},
		defaultRoute:  route{name: "(unmatched)", cost: 1},
	}
	if p.OrgHeader != "" {
		if err := validHeaderName(p.OrgHeader); err != nil {
			errs = append(errs, fieldError("Policy.OrgHeader", fmt.Errorf("org header: %w", err)))
		}
		cp.orgHeader = strings.ToLower(p.OrgHeader)
	}
	var err error
	if cp.envs, err = parseEnvs(p.Environments); err != nil {
		errs = append(errs, fieldError("Policy.Environments", fmt.Errorf("environments: %w", err)))
	}
	for _, t := range p.ShadowTenants {
		cp.shadowTenants[t] = true
	}
	if p.IntrospectionPath != "" && (!strings.HasPrefix(p.IntrospectionPath, "/") || cleanPath(p.IntrospectionPath) != p.IntrospectionPath) {
		errs = append(errs, fieldError("Policy.IntrospectionPath", fmt.Errorf("introspection path %q: want a clean absolute path", p.IntrospectionPath)))
	}
	names := map[string]int{}
	for i, r := range p.Rules {
		cr, rerrs := r.compile()
		if r.Name != "" {
			if j, dup := names[r.Name]; dup {
				rerrs = append(rerrs, fmt.Errorf("name %q is also rule %d's", r.Name, j+1))
			}
			names[r.Name] = i
		}
		for _, e := range rerrs {
			errs = append(errs, &RuleError{Index: i, Name: r.Name, Err: e})
		}
		cp.rules = append(cp.rules, cr)
		cp.upperRule = cp.upperRule || hasUpper(r.Path+r.PathPrefix+r.PathPattern)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cp, nil
}

func (r Rule) compile() (compiledRule, []error) {
	var errs []error
	cr := compiledRule{exact: r.Path, prefix: r.PathPrefix, fold: r.CaseInsensitive}
	cr.name = r.Name
	if cr.name == "" {
		cr.name = firstNonEmpty(r.Path, r.PathPrefix, r.PathPattern, r.Host, "(any)")
	}
	for _, m := range r.Methods {
		m = strings.ToUpper(strings.TrimSpace(m))
		if m == "" || strings.ContainsAny(m, " \t/") {
			errs = append(errs, fmt.Errorf("method %q", m))
		}
		cr.methods = append(cr.methods, m)
	}
	if h := strings.TrimRight(strings.ToLower(r.Host), "."); h != "" {
		cr.host, cr.hostSuffix = strings.CutPrefix(h, "*.")
		if cr.host == "" || strings.ContainsAny(cr.host, "*/: ") {
			errs = append(errs, fmt.Errorf("host %q: want a name or *.suffix", r.Host))
		}
	}
	set := 0
	for _, v := range []string{r.Path, r.PathPrefix, r.PathPattern} {
		if v != "" {
			set++
			if !strings.HasPrefix(v, "/") {
				errs = append(errs, fmt.Errorf("path %q must start with /", v))
			}
		}
	}
	if set > 1 {
		errs = append(errs, errors.New("set only one of path, path_prefix and path_pattern"))
	}
	if r.PathPattern != "" {
		p, err := compilePattern(r.PathPattern)
		if err != nil {
			errs = append(errs, err)
		}
		cr.pattern = &p
	}
	if r.OrgParam != "" && (cr.pattern == nil || !cr.pattern.hasParam(r.OrgParam)) {
		errs = append(errs, fmt.Errorf("org_param %q is not a {parameter} of path_pattern", r.OrgParam))
	}
	envs, err := parseEnvs(r.Environments)
	if err != nil {
		errs = append(errs, err)
	}
	if err := validRequiredScopes(r.Scopes); err != nil {
		errs = append(errs, err)
	}
	if r.Cost < 0 {
		errs = append(errs, fmt.Errorf("cost %d must not be negative", r.Cost))
	}
	if r.Public && (len(r.Scopes) > 0 || len(r.Environments) > 0 || r.OrgParam != "") {
		errs = append(errs, errors.New("a public route cannot require scopes, environments or an org"))
	}
	cr.route = route{
		name:     cr.name,
		public:   r.Public,
		scopes:   slices.Clone(r.Scopes),
		envs:     envs,
		cost:     max(r.Cost, 1),
		orgParam: r.OrgParam,
		shadow:   r.Shadow,
	}
	return cr, errs
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func validRequiredScopes(scopes []string) error {
	for _, s := range scopes {
		if s == "" || strings.ContainsAny(s, " \t,") {
			return fmt.Errorf("scope %q: want a name without spaces or commas", s)
		}
	}
	return nil
}

// route finds the route for a request: the first matching rule, or the
// default. org is the value of the route's org parameter, if any. ok is
// false when readings of the path a backend could serve as one resource
// would be decided by different rules, or name different orgs: with and
// without ";params", and (unless ExactCase) in exact and in any case.
func (cp *compiledPolicy) route(method, host string, f pathForms) (rt route, org string, matched, ok bool) {
	host = canonicalHost(host)
	i, org := cp.match(method, host, f.clean, false)
	if f.bare != f.clean {
		if j, bareOrg := cp.match(method, host, f.bare, false); j != i || bareOrg != org {
			return cp.defaultRoute, "", false, false
		}
	}
	if cp.foldCheck && (cp.upperRule || hasUpper(f.clean) || hasUpper(f.bare)) {
		forms := [2]string{f.clean, f.bare}
		n := 1
		if f.bare != f.clean {
			n = 2 // the bare reading folded too; the same path needs one match
		}
		for _, p := range forms[:n] {
			if j, foldOrg := cp.match(method, host, p, true); j != i || !strings.EqualFold(foldOrg, org) {
				return cp.defaultRoute, "", false, false
			}
		}
	}
	if i < 0 {
		return cp.defaultRoute, "", false, true
	}
	return cp.rules[i].route, org, true, true
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// match returns the index of the first rule that matches (-1: none) and
// the value of its org parameter; fold matches every rule in any case.
func (cp *compiledPolicy) match(method, host, path string, fold bool) (int, string) {
	for i := range cp.rules {
		r := &cp.rules[i]
		if len(r.methods) > 0 && !containsFold(r.methods, method) {
			continue
		}
		if r.host != "" && !hostMatches(host, r.host, r.hostSuffix) {
			continue
		}
		org := ""
		fold := fold || r.fold
		switch {
		case r.exact != "":
			if !equalPath(path, r.exact, fold) {
				continue
			}
		case r.prefix != "":
			if len(path) < len(r.prefix) || !equalPath(path[:len(r.prefix)], r.prefix, fold) {
				continue
			}
		case r.pattern != nil:
			v, ok := r.pattern.match(path, r.route.orgParam, fold)
			if !ok {
				continue
			}
			org = v
		}
		return i, org
	}
	return -1, ""
}

func equalPath(a, b string, fold bool) bool {
	if fold {
		return strings.EqualFold(a, b)
	}
	return a == b
}

// canonicalHost is the host a rule is matched against: without its port
// and without trailing dots ("api.example.com." is the same name to DNS
// and to most servers, so it must not skip a rule for "api.example.com").
func canonicalHost(h string) string {
	h = hostOnly(h)
	for len(h) > 0 && h[len(h)-1] == '.' {
		h = h[:len(h)-1]
	}
	return h
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// hostOnly drops a port from a Host or :authority value ("a.com:8443",
// "[::1]:80"); it does not allocate, unlike net.SplitHostPort's errors. A
// name is cut at its first colon, so that "a.com:1:2" is a.com (as lenient
// servers read it) rather than a name no host rule matches.
func hostOnly(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return h
	}
	i := strings.IndexByte(h, ':')
	if i < 0 {
		return h
	}
	if strings.IndexByte(h[i+1:], ':') >= 0 {
		if _, err := netip.ParseAddr(h); err == nil {
			return h // a bare IPv6 address
		}
	}
	return h[:i]
}

func hostMatches(host, want string, suffix bool) bool {
	if !suffix {
		return strings.EqualFold(host, want)
	}
	return len(host) > len(want)+1 && host[len(host)-len(want)-1] == '.' && strings.EqualFold(host[len(host)-len(want):], want)
}

// withSettings overrides rt with the keygate.* entries of Envoy's
// context_extensions. An unknown keygate.* name or a bad value is an error:
// a typo must not quietly drop a requirement, so the engine fails closed.
func (rt route) withSettings(settings map[string]string) (_ route, set bool, err error) {
	for k, v := range settings {
		if !strings.HasPrefix(k, settingPrefix) {
			continue
		}
		set = true
		switch k {
		case SettingPublic:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return rt, false, fmt.Errorf("context_extensions %s=%q: %w", k, v, err)
			}
			rt.public = b
		case SettingScopes:
			rt.scopes = splitList(v)
			if err := validRequiredScopes(rt.scopes); err != nil {
				return rt, false, fmt.Errorf("context_extensions %s: %w", k, err)
			}
		case SettingEnvironments:
			envs, err := parseEnvs(splitList(v))
			if err != nil {
				return rt, false, fmt.Errorf("context_extensions %s: %w", k, err)
			}
			rt.envs = envs
		case SettingCost:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return rt, false, fmt.Errorf("context_extensions %s=%q: want a non-negative integer", k, v)
			}
			rt.cost = max(n, 1)
		case SettingShadow:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return rt, false, fmt.Errorf("context_extensions %s=%q: %w", k, v, err)
			}
			rt.shadow = b
		default:
			return rt, false, fmt.Errorf("context_extensions: unknown setting %q", k)
		}
	}
	return rt, set, nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// missingScopes returns the required scopes the key does not grant.
func missingScopes(required, held []string) []string {
	var missing []string
	for _, r := range required {
		if !grants(held, r) {
			missing = append(missing, r)
		}
	}
	return missing
}

func grants(held []string, want string) bool {
	for _, h := range held {
		if h == want {
			return true
		}
		if p, ok := strings.CutSuffix(h, "*"); ok && strings.HasPrefix(want, p) {
			return true
		}
	}
	return false
}
