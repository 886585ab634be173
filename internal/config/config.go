// Package config owns Keygate's configuration file: its fields and
// defaults (DESIGN.md's embedded ones), loading it, and checking all of it
// at once with each problem's place in the file, so that `keygate config
// validate` and `keygate serve` accept and refuse exactly the same files.
// It turns the file into the settings of the other packages; cmd/keygate
// wires them.
package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

// Config is the YAML file of `keygate serve --config`. Every field is
// optional; its zero value means the default in the comment, which are
// DESIGN.md's embedded defaults. examples/keygate.yaml shows them all.
type Config struct {
	Store struct {
		Path                 string   `yaml:"path"`                   // ./keygate.db
		CacheMaxBytes        int64    `yaml:"cache_max_bytes"`        // 64 MiB
		NegativeCacheEntries int64    `yaml:"negative_cache_entries"` // 100000; -1 disables
		LastUsedFlush        Duration `yaml:"last_used_flush"`        // 10s
		// UsageRetention is how long per-key usage counts are kept.
		UsageRetention Duration `yaml:"usage_retention"` // 2160h (90 days)
		// LookupTimeout bounds a Check's read of the store on a cache miss
		// (an etcd out of reach fails the Check with 503 this quickly).
		LookupTimeout Duration `yaml:"lookup_timeout"` // 1s
		// Etcd, with endpoints, keeps the keys in etcd for many replicas
		// instead of in the file at path.
		Etcd etcdConfig `yaml:"etcd"`
	} `yaml:"store"`
	Listen struct {
		GRPC  string `yaml:"grpc"`  // 127.0.0.1:9001
		Admin string `yaml:"admin"` // 127.0.0.1:9003
		HTTP  string `yaml:"http"`  // 127.0.0.1:9002
		// Metrics serves GET /metrics alone, apart from the admin API, so
		// that a scraper needs no admin token (see metrics.require_token).
		// "off": no metrics listener.
		Metrics string `yaml:"metrics"` // 127.0.0.1:9004
		// MaxConnections caps the connections each listener holds open at
		// once; past it a new connection is closed as soon as it is
		// accepted, so that a flood on one listener cannot take the file
		// descriptors the others (and the store) need. 0: derived at start
		// from the open-file limit, leaving 64 + 10% of it free: grpc and
		// http 40% of the rest each (at most 8192), admin 20% (16 to 1024).
		MaxConnections struct {
			GRPC  int `yaml:"grpc"`  // 0: derived
			HTTP  int `yaml:"http"`  // 0: derived
			Admin int `yaml:"admin"` // 0: derived
			// Scrapers need a connection or two each; the cap only keeps
			// a listener anyone may reach from taking descriptors.
			Metrics int `yaml:"metrics"` // 0: 32
		} `yaml:"max_connections"`
		// IdleTimeout closes a connection with no request in flight for
		// this long (HTTP keep-alive; gRPC after a GOAWAY), so that idle
		// connections do not hold their listener's slots for ever. Keep it
		// above the proxy's own (nginx's upstream keepalive_timeout is 60s)
		// so that the proxy, not Keygate, closes first.
		IdleTimeout Duration `yaml:"idle_timeout"` // 2m
	} `yaml:"listen"`
	Admin struct {
		// TokenFile holds the bootstrap admin token, read again whenever the
		// file changes. Empty: KEYGATE_ADMIN_TOKEN, else (admin on loopback
		// only) a token generated beside the store.
		TokenFile string `yaml:"token_file"`
		// TLSCertFile and TLSKeyFile serve the admin API over TLS. A
		// listener that is not on loopback needs them, or InsecurePublic:
		// the bearer token must not cross a network in clear text.
		TLSCertFile string `yaml:"tls_cert_file"`
		TLSKeyFile  string `yaml:"tls_key_file"`
		// InsecurePublic allows a non-loopback admin listener without TLS
		// (e.g. inside a pod whose mesh sidecar does mTLS). False.
		InsecurePublic bool `yaml:"insecure_public"`
		// AuditRetention is how long entries of the admin audit log are
		// kept; replicas prune older ones hourly. Negative: for ever.
		AuditRetention Duration `yaml:"audit_retention"` // 2160h (90 days)
		// Console serves the key console at /ui/ on the admin listener.
		// Nil (unset): true; see ConsoleOn.
		Console *bool `yaml:"console"`
	} `yaml:"admin"`
	Metrics struct {
		// RequireToken makes the metrics listener ask for a bearer token:
		// the bootstrap admin token or an admin token with the scope
		// metrics:read. False: anyone who reaches the listener may
		// scrape, which is why it serves the metrics and nothing else.
		RequireToken bool `yaml:"require_token"`
	} `yaml:"metrics"`
	Keys struct {
		Prefix        string   `yaml:"prefix"`         // ak
		Sources       []string `yaml:"sources"`        // authorization, x-api-key, x-api-token
		AcceptForeign bool     `yaml:"accept_foreign"` // false
		MaxOrgKeys    int      `yaml:"max_org_keys"`   // 5 usable keys (those in a rotation grace period too); -1: no limit
		Tiers         []string `yaml:"tiers"`          // standard, enterprise
		// MaxRotationGrace bounds a rotation's grace_period, during which
		// the old key keeps working: a week covers a weekly release and a
		// weekend, and a leaked key being rotated away should not keep
		// working longer. 0: 168h (7 days); negative (-1s): no maximum.
		MaxRotationGrace Duration `yaml:"max_rotation_grace"`
	} `yaml:"keys"`
	Errors struct {
		Format          string `yaml:"format"`            // simple | problem
		ProblemTypeBase string `yaml:"problem_type_base"` // urn:keygate:error:
		Realm           string `yaml:"realm"`             // keygate
	} `yaml:"errors"`
	Headers struct {
		Tenant      string `yaml:"tenant"`
		Org         string `yaml:"org"`
		User        string `yaml:"user"`
		KeyID       string `yaml:"key_id"`
		KeyName     string `yaml:"key_name"`
		Environment string `yaml:"environment"`
		Tier        string `yaml:"tier"`
		Scopes      string `yaml:"scopes"`
	} `yaml:"headers"`
	Policy struct {
		Unmatched         string   `yaml:"unmatched"`          // allow_with_key | deny
		OrgHeader         string   `yaml:"org_header"`         // none
		Environments      []string `yaml:"environments"`       // any
		ShadowTenants     []string `yaml:"shadow_tenants"`     // none
		IntrospectionPath string   `yaml:"introspection_path"` // off
		// EscapedSlashes says what "%2F", "%5C" and "\\" in a path mean:
		// reject (400 invalid_path), or decode them to "/" for backends
		// known to do the same.
		EscapedSlashes string `yaml:"escaped_slashes"` // reject | decode
		// CaseVariants says what a path is when read in another case it
		// would reach another rule: refused (400 invalid_path), or exact,
		// matched in its own case only, for backends known to be
		// case-sensitive.
		CaseVariants string `yaml:"case_variants"` // refuse | exact
	} `yaml:"policy"`
	Routes   []routeConfig `yaml:"routes"`
	ClientIP struct {
		Header      string `yaml:"header"`       // none: the peer address
		TrustedHops int    `yaml:"trusted_hops"` // with header
	} `yaml:"client_ip"`
	Signing struct {
		SecretFile string `yaml:"secret_file"` // none: no signature header
		Header     string `yaml:"header"`      // x-keygate-signature
	} `yaml:"signing"`
	Log struct {
		Level  string `yaml:"level"`  // info
		Format string `yaml:"format"` // text | json
		// Access logs every decision (allows too) with its key id, route and
		// reason. False: refusals only.
		Access bool `yaml:"access"`
	} `yaml:"log"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"` // 15s
	// ReloadInterval is how often the config file is checked for changes to
	// its routes and policy. 0: 2s; -1s: only on SIGHUP.
	ReloadInterval Duration `yaml:"reload_interval"`
	RateLimits     struct {
		// Tiers maps a key tier to its limits: one ({requests: 100,
		// window: 1m}, named after the tier) and/or named ones under
		// limits. Empty: standard 100/min, enterprise 1000/min (AlfaOne's).
		// keys.tiers defaults to these names.
		Tiers       map[string]tierConfig `yaml:"tiers"`
		DefaultTier string                `yaml:"default_tier"` // standard
		// Org, Tenant and User are budgets shared by all keys of an org,
		// a tenant, or a user (user_id within a tenant). None by default.
		Org    limitSetConfig `yaml:"org"`
		Tenant limitSetConfig `yaml:"tenant"`
		User   limitSetConfig `yaml:"user"`
		// FailedAuth throttles addresses presenting invalid keys. Zero:
		// 20/min; requests: -1 turns it off.
		FailedAuth limitConfig `yaml:"failed_auth"`
		PerKeyOff  bool        `yaml:"per_key_off"` // false
		// AllowHeaders: rate-limit headers on allowed requests' responses
		// (always on 429s).
		AllowHeaders *bool `yaml:"allow_headers"` // true
		// Redis shares the key, org and tenant budgets between replicas.
		Redis struct {
			Addr         string `yaml:"addr"`          // host:port; empty: budgets per replica
			PasswordFile string `yaml:"password_file"` // none
			DB           int    `yaml:"db"`            // 0
			// FailOpen: with Redis unreachable, fall back to each
			// replica's own budgets. False: refuse with 503.
			FailOpen bool   `yaml:"fail_open"`
			Prefix   string `yaml:"prefix"` // keygate:rl:
		} `yaml:"redis"`
	} `yaml:"rate_limits"`
	Envoy struct {
		// DynamicMetadata: gRPC answers carry dynamic metadata (decision,
		// tenant, key id... under envoy.filters.http.ext_authz). Nil
		// (unset): true; see MetadataOn.
		DynamicMetadata *bool `yaml:"dynamic_metadata"`
	} `yaml:"envoy"`
	Tracing tracingConfig `yaml:"tracing"` // off
	Credits creditsConfig `yaml:"credits"` // no accounts granted

	file          string // where it was read from; empty for defaults
	signingSecret []byte
}

// routeConfig is one entry of routes, in the order they are tried.
type routeConfig struct {
	Name         string   `yaml:"name"`
	Methods      []string `yaml:"methods"`
	Host         string   `yaml:"host"`
	Path         string   `yaml:"path"`
	PathPrefix   string   `yaml:"path_prefix"`
	PathPattern  string   `yaml:"path_pattern"`
	Public       bool     `yaml:"public"`
	Scopes       []string `yaml:"scopes"`
	Environments []string `yaml:"environments"`
	Cost         int      `yaml:"cost"`
	OrgParam     string   `yaml:"org_param"`
	Shadow       bool     `yaml:"shadow"`
	// CaseInsensitive matches the path in any case, for backends that
	// serve /Admin as /admin.
	CaseInsensitive bool `yaml:"case_insensitive"` // false
}

// limitConfig is one limit: requests per window, counted by a sliding
// window (at most requests in any rolling window) unless algorithm is
// token_bucket, whose burst (0: requests) fits at once. A burst without
// an algorithm means token_bucket, as it did before sliding windows.
type limitConfig struct {
	Requests  int      `yaml:"requests"`
	Window    Duration `yaml:"window"`
	Burst     int      `yaml:"burst"`
	Algorithm string   `yaml:"algorithm"`
}

func (l limitConfig) limit() (ratelimit.Limit, error) {
	alg, err := ratelimit.ParseAlgorithm(l.Algorithm)
	if l.Algorithm == "" && l.Burst != 0 {
		alg = ratelimit.TokenBucket
	}
	return ratelimit.Limit{Requests: l.Requests, Window: time.Duration(l.Window), Burst: l.Burst, Algorithm: alg}, err
}

func (l limitConfig) isZero() bool { return l == limitConfig{} }

// limitSetConfig is a budget: one limit, named after the budget (the
// tier, or "org", "tenant", "user"), and/or named limits under limits.
type limitSetConfig struct {
	limitConfig `yaml:",inline"`
	Limits      map[string]limitConfig `yaml:"limits"`
}

// tierConfig is a tier's limits and, optionally, the credits its keys
// get: a balance of refill.amount, refilled on its schedule.
type tierConfig struct {
	limitSetConfig `yaml:",inline"`
	Refill         *refillConfig `yaml:"refill"`
}

// set converts s, named name when it is one limit, reporting problems
// at their fields.
// For a tier, a single limit with zero requests is an error; for a shared
// budget it means none, as it always has.
func (s limitSetConfig) set(name, field string, zeroIsNone bool, report func(field string, err error)) authz.LimitSet {
	var out authz.LimitSet
	add := func(name, field string, l limitConfig) {
		lim, err := l.limit()
		if err != nil {
			report(field+".algorithm", err)
		}
		out = append(out, authz.NamedLimit{Name: name, Limit: lim})
	}
	single := !s.limitConfig.isZero()
	if zeroIsNone {
		single = s.Requests != 0
	}
	if single {
		if err := ratelimit.ValidName(name); err != nil {
			report(field, fmt.Errorf("a single limit is named after its budget: %w", err))
		}
		add(name, field, s.limitConfig)
	}
	for _, n := range slices.Sorted(maps.Keys(s.Limits)) {
		if n == name && single {
			report(field+".limits."+n, fmt.Errorf("limit %q is also the single limit of %s", n, field))
			continue
		}
		if err := ratelimit.ValidName(n); err != nil {
			report(field+".limits."+n, err)
		}
		add(n, field+".limits."+n, s.Limits[n])
	}
	return out
}

type Duration time.Duration

// UnmarshalYAML reads a Go duration ("10s", "1m") or whole days ("1d").
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ratelimit.ParseWindow(n.Value)
	if n.Kind != yaml.ScalarNode {
		err = errors.New("want a duration such as 10s")
	}
	if err != nil {
		// A *yaml.TypeError is collected with the decoder's other type
		// errors (unknown fields, ...); any other error would stop the
		// decoder and hide them.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*d = Duration(v)
	return nil
}

const (
	DefaultStorePath   = "./keygate.db"
	DefaultGRPCListen  = "127.0.0.1:9001"
	DefaultAdminListen = "127.0.0.1:9003"
	DefaultHTTPListen  = "127.0.0.1:9002"
	// DefaultMetricsListen is on loopback like the others: metrics are
	// served without a token unless metrics.require_token is set, so
	// exposing them is a choice.
	DefaultMetricsListen = "127.0.0.1:9004"
	// MetricsListenOff, as listen.metrics, opens no metrics listener.
	MetricsListenOff = "off"
)

// Load reads path (none: defaults only) and checks all of it,
// returning every problem at once, each as "file:line: field: message".
// Unknown fields are errors, so a typo does not silently fall back to a
// default (or drop a route requirement).
func Load(path string) (*Config, error) {
	if path == "" {
		return Parse("", nil)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, raw)
}

// Parse is Load on bytes already read (path names them in
// messages; empty path: no file, the defaults).
func Parse(path string, raw []byte) (*Config, error) {
	cfg := &Config{file: path}
	p := &problems{file: path, lines: map[string]int{}}
	if path != "" {
		var root yaml.Node
		if err := yaml.Unmarshal(raw, &root); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		indexLines(&root, "", p.lines)
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, fmt.Errorf("config %s: %w", path, err)
			}
			// The decoder filled what it could; the checks below still run,
			// so one pass reports type and meaning problems alike.
			p.typeProblems(&root, te)
		}
	}
	cfg.applyDefaults()
	p.add("signing.secret_file", cfg.readSigningSecret())
	cfg.validate(p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// readSigningSecret reads the one file whose contents the engine is built
// with, so that validating and building use the same bytes and neither
// reads the file again.
func (c *Config) readSigningSecret() error {
	if c.Signing.SecretFile == "" {
		return nil
	}
	secret, err := os.ReadFile(c.Signing.SecretFile)
	if err != nil {
		return err
	}
	c.signingSecret = bytes.TrimSpace(secret)
	if len(c.signingSecret) == 0 {
		// Empty means "no signing" to the engine: a secret file that was
		// meant to turn signing on must not turn it off unseen.
		return fmt.Errorf("%s is empty: want a secret of at least 32 bytes", c.Signing.SecretFile)
	}
	return nil
}

func (c *Config) applyDefaults() {
	if c.Store.Path == "" {
		c.Store.Path = DefaultStorePath
	}
	if c.Listen.GRPC == "" {
		c.Listen.GRPC = DefaultGRPCListen
	}
	if c.Listen.Admin == "" {
		c.Listen.Admin = DefaultAdminListen
	}
	if c.Listen.HTTP == "" {
		c.Listen.HTTP = DefaultHTTPListen
	}
	if c.Listen.Metrics == "" {
		c.Listen.Metrics = DefaultMetricsListen
	}
	if c.Listen.IdleTimeout == 0 {
		c.Listen.IdleTimeout = Duration(2 * time.Minute)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(15 * time.Second)
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = Duration(2 * time.Second)
	}
	if c.Admin.AuditRetention == 0 {
		c.Admin.AuditRetention = Duration(keystore.DefaultAuditRetention)
	}
	// Keys may only name tiers that have limits: with rate-limit tiers
	// configured and keys.tiers not, the tiers are those names, the default
	// tier first (new keys get the first).
	if len(c.Keys.Tiers) == 0 && len(c.RateLimits.Tiers) > 0 {
		for name := range c.RateLimits.Tiers {
			c.Keys.Tiers = append(c.Keys.Tiers, name)
		}
		sort.Strings(c.Keys.Tiers)
		def := c.RateLimits.DefaultTier
		if def == "" {
			def = "standard"
		}
		sort.SliceStable(c.Keys.Tiers, func(i, j int) bool { return c.Keys.Tiers[i] == def && c.Keys.Tiers[j] != def })
	}
}

// validate checks every section the way serve will use it, so that
// `keygate config validate` and `serve` refuse the same files. It reads
// the files the config names (TLS pairs, passwords) and writes nothing.
func (c *Config) validate(p *problems) {
	if _, err := c.Format(); err != nil {
		p.add("keys.prefix", err)
	}
	for _, l := range []struct{ field, addr string }{{"listen.grpc", c.Listen.GRPC}, {"listen.admin", c.Listen.Admin}, {"listen.http", c.Listen.HTTP}} {
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			p.add(l.field, err)
		}
	}
	if c.Listen.Metrics != MetricsListenOff {
		if _, _, err := net.SplitHostPort(c.Listen.Metrics); err != nil {
			p.add("listen.metrics", fmt.Errorf("%w (or %q)", err, MetricsListenOff))
		}
	}
	for _, m := range []struct {
		field string
		n     int
	}{{"listen.max_connections.grpc", c.Listen.MaxConnections.GRPC}, {"listen.max_connections.http", c.Listen.MaxConnections.HTTP}, {"listen.max_connections.admin", c.Listen.MaxConnections.Admin}, {"listen.max_connections.metrics", c.Listen.MaxConnections.Metrics}} {
		if m.n < 0 {
			p.add(m.field, errors.New("must not be negative (0: derived from the open-file limit)"))
		}
	}
	if c.Listen.IdleTimeout < 0 {
		p.add("listen.idle_timeout", errors.New("must not be negative"))
	}
	if c.Store.CacheMaxBytes < 0 {
		p.add("store.cache_max_bytes", errors.New("must not be negative"))
	}
	if c.Store.LastUsedFlush < 0 {
		p.add("store.last_used_flush", errors.New("must not be negative"))
	}
	if c.Store.LookupTimeout < 0 {
		p.add("store.lookup_timeout", errors.New("must not be negative"))
	}
	if c.Store.UsageRetention < 0 {
		p.add("store.usage_retention", errors.New("must not be negative"))
	}
	c.validateStore(p)
	c.validateTracing(p)
	c.validateCredits(p)
	if _, err := c.Logger(io.Discard); err != nil {
		p.add("log", err)
	}
	seen := map[string]bool{}
	for i, t := range c.Keys.Tiers {
		field := fmt.Sprintf("keys.tiers[%d]", i)
		if err := keystore.ValidTierName(t); err != nil {
			p.add(field, err)
		} else if seen[t] {
			p.add(field, fmt.Errorf("tier %q is listed twice", t))
		}
		seen[t] = true
	}
	if len(c.RateLimits.Tiers) > 0 {
		for i, t := range c.Keys.Tiers {
			if _, ok := c.RateLimits.Tiers[t]; !ok {
				p.add(fmt.Sprintf("keys.tiers[%d]", i), fmt.Errorf("tier %q has no limit in rate_limits.tiers", t))
			}
		}
	}
	c.limits(p.add)
	for name, r := range c.tierRefills() {
		if err := keystore.ValidRefill(r); err != nil {
			p.add("rate_limits.tiers."+name+".refill", err)
		}
	}
	if r := c.RateLimits.Redis; r.Addr != "" {
		if _, _, err := net.SplitHostPort(r.Addr); err != nil {
			p.add("rate_limits.redis.addr", err)
		}
		if r.PasswordFile != "" {
			if _, err := os.ReadFile(r.PasswordFile); err != nil {
				p.add("rate_limits.redis.password_file", err)
			}
		}
	} else if r.PasswordFile != "" || r.FailOpen || r.DB != 0 || r.Prefix != "" {
		p.add("rate_limits.redis.addr", errors.New("set addr to use Redis (the other redis settings need it)"))
	}
	if (c.Admin.TLSCertFile == "") != (c.Admin.TLSKeyFile == "") {
		p.add("admin.tls_cert_file", errors.New("set both tls_cert_file and tls_key_file, or neither"))
	} else if c.Admin.TLSCertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.Admin.TLSCertFile, c.Admin.TLSKeyFile); err != nil {
			p.add("admin.tls_cert_file", err)
		}
	}
	if c.Signing.SecretFile == "" && c.Signing.Header != "" {
		p.add("signing.header", errors.New("set signing.secret_file too"))
	}
	// A bad policy.unmatched must not hide the problems of the routes.
	pol, err := c.AuthzPolicy()
	for _, e := range Unjoin(err) {
		field := "policy.unmatched"
		switch {
		case errors.Is(e, errEscapedSlashes):
			field = "policy.escaped_slashes"
		case errors.Is(e, errCaseVariants):
			field = "policy.case_variants"
		}
		p.add(field, e)
	}
	// The engine's own check, once, over everything serve gives it; each
	// problem names its setting, which names its place in this file.
	acfg := c.AuthzConfig(apikey.Format{})
	acfg.Policy = pol
	if err := acfg.Validate(); err != nil {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			switch e := e.(type) {
			case *authz.RuleError:
				p.add(fmt.Sprintf("routes[%d]", e.Index), e)
			case *authz.FieldError:
				p.add(authzField(e), e)
			default:
				p.add("", e)
			}
		}
	}
}

// authzFields maps the settings authz.Config.Validate names to the fields
// of this file they are made from.
var authzFields = map[string]string{
	"Sources":                  "keys.sources",
	"Headers":                  "headers",
	"Errors":                   "errors",
	"ClientIP":                 "client_ip",
	"Signing.Secret":           "signing.secret_file",
	"Signing.Header":           "signing.header",
	"RateLimits.Tiers":         "rate_limits.tiers",
	"RateLimits.DefaultTier":   "rate_limits.default_tier",
	"RateLimits.Org":           "rate_limits.org",
	"RateLimits.Tenant":        "rate_limits.tenant",
	"RateLimits.User":          "rate_limits.user",
	"RateLimits.FailedAuth":    "rate_limits.failed_auth",
	"Policy.OrgHeader":         "policy.org_header",
	"Policy.Environments":      "policy.environments",
	"Policy.IntrospectionPath": "policy.introspection_path",
}

// authzField is the field of this file an authz problem is about; a
// setting missing from authzFields is named as authz names it (a test
// keeps the map complete).
func authzField(e *authz.FieldError) string {
	f, ok := authzFields[e.Field]
	if !ok {
		f = e.Field
	}
	if e.Key != "" {
		f += "." + e.Key
	}
	return f
}

// Unjoin returns the errors inside errors.Join (and wrapped joins), or err.
func Unjoin(err error) []error {
	if err == nil {
		return nil
	}
	var out []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		if w := errors.Unwrap(e); w != nil {
			if _, ok := w.(interface{ Unwrap() []error }); ok {
				walk(w)
				return
			}
		}
		out = append(out, e)
	}
	walk(err)
	return out
}

// Format returns the configured key format.
func (c *Config) Format() (apikey.Format, error) {
	p := c.Keys.Prefix
	if p == "" {
		p = apikey.DefaultPrefix
	}
	f, err := apikey.NewFormat(p)
	if err != nil {
		return apikey.Format{}, fmt.Errorf("config keys.prefix: %w", err)
	}
	return f, nil
}

var (
	errEscapedSlashes = errors.New("want reject or decode")
	errCaseVariants   = errors.New("want refuse or exact")
)

func (c *Config) AuthzPolicy() (authz.Policy, error) {
	p := authz.Policy{
		OrgHeader:         c.Policy.OrgHeader,
		Environments:      c.Policy.Environments,
		ShadowTenants:     c.Policy.ShadowTenants,
		IntrospectionPath: c.Policy.IntrospectionPath,
	}
	for _, r := range c.Routes {
		p.Rules = append(p.Rules, authz.Rule{
			Name: r.Name, Methods: r.Methods, Host: r.Host,
			Path: r.Path, PathPrefix: r.PathPrefix, PathPattern: r.PathPattern,
			Public: r.Public, Scopes: r.Scopes, Environments: r.Environments,
			Cost: r.Cost, OrgParam: r.OrgParam, Shadow: r.Shadow,
			CaseInsensitive: r.CaseInsensitive,
		})
	}
	// The rules are filled in even on error, so that validate can check
	// them too.
	var errs []error
	switch c.Policy.Unmatched {
	case "", "allow_with_key":
	case "deny":
		p.DenyUnmatched = true
	default:
		errs = append(errs, fmt.Errorf("%q: want allow_with_key or deny", c.Policy.Unmatched))
	}
	// Two-valued policy words: the default and the one other value.
	for _, w := range []struct {
		v, def, alt string
		set         *bool
		err         error
	}{
		{c.Policy.EscapedSlashes, "reject", "decode", &p.DecodeEscapedSlashes, errEscapedSlashes},
		{c.Policy.CaseVariants, "refuse", "exact", &p.ExactCase, errCaseVariants},
	} {
		switch w.v {
		case "", w.def:
		case w.alt:
			*w.set = true
		default:
			errs = append(errs, fmt.Errorf("%q: %w", w.v, w.err))
		}
	}
	return p, errors.Join(errs...)
}

func (c *Config) StoreOptions(f apikey.Format) keystore.Options {
	return keystore.Options{
		Format:               f,
		MaxOrgKeys:           c.Keys.MaxOrgKeys,
		MaxRotationGrace:     time.Duration(c.Keys.MaxRotationGrace),
		Tiers:                c.Keys.Tiers,
		TierRefills:          c.tierRefills(),
		AccountGrants:        c.accountGrants(),
		CacheMaxBytes:        c.Store.CacheMaxBytes,
		NegativeCacheEntries: c.Store.NegativeCacheEntries,
		LastUsedFlush:        time.Duration(c.Store.LastUsedFlush),
		LookupTimeout:        time.Duration(c.Store.LookupTimeout),
		UsageRetention:       time.Duration(c.Store.UsageRetention),
	}
}

// tierRefills are the tiers' credit refills; nil: none.
func (c *Config) tierRefills() map[string]keystore.Refill {
	var out map[string]keystore.Refill
	for name, t := range c.RateLimits.Tiers {
		if t.Refill == nil {
			continue
		}
		if out == nil {
			out = map[string]keystore.Refill{}
		}
		out[name] = *t.Refill.refill()
	}
	return out
}

// authzConfig is the engine's configuration; the policy is added by the
// caller (it is reloaded on its own).
func (c *Config) AuthzConfig(f apikey.Format) authz.Config {
	h := c.Headers
	return authz.Config{
		Format:            f,
		Sources:           c.Keys.Sources,
		AcceptForeignKeys: c.Keys.AcceptForeign,
		Headers: authz.IdentityHeaders{
			Tenant: h.Tenant, Org: h.Org, User: h.User, KeyID: h.KeyID, KeyName: h.KeyName,
			Environment: h.Environment, Tier: h.Tier, Scopes: h.Scopes,
		},
		Errors: authz.ErrorStyle{
			Format:          c.Errors.Format,
			ProblemTypeBase: c.Errors.ProblemTypeBase,
			Realm:           c.Errors.Realm,
		},
		ClientIP:   authz.ClientIP{Header: strings.ToLower(c.ClientIP.Header), TrustedHops: c.ClientIP.TrustedHops},
		Signing:    authz.Signing{Secret: c.signingSecret, Header: c.Signing.Header},
		RateLimits: c.Limits(),
	}
}

// Limits is the rate-limit section for the decision core. Problems
// (which validate reports) leave the limits they concern as read.
func (c *Config) Limits() authz.RateLimits {
	return c.limits(func(string, error) {})
}

func (c *Config) limits(report func(field string, err error)) authz.RateLimits {
	rl := c.RateLimits
	failed, err := rl.FailedAuth.limit()
	if err != nil {
		report("rate_limits.failed_auth.algorithm", err)
	}
	out := authz.RateLimits{
		DefaultTier: rl.DefaultTier,
		Org:         rl.Org.set("org", "rate_limits.org", true, report),
		Tenant:      rl.Tenant.set("tenant", "rate_limits.tenant", true, report),
		User:        rl.User.set("user", "rate_limits.user", true, report),
		FailedAuth:  failed,
		PerKeyOff:   rl.PerKeyOff,
		QuietAllows: rl.AllowHeaders != nil && !*rl.AllowHeaders,
	}
	if len(rl.Tiers) > 0 {
		out.Tiers = map[string]authz.LimitSet{}
		for name, l := range rl.Tiers {
			out.Tiers[name] = l.set(name, "rate_limits.tiers."+name, false, report)
		}
	}
	return out
}

func (c *Config) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if c.Log.Level != "" {
		if err := level.UnmarshalText([]byte(c.Log.Level)); err != nil {
			return nil, fmt.Errorf("config log.level: %w", err)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.Log.Format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("config log.format %q: want text or json", c.Log.Format)
}

// IsLoopback reports whether a listen address only accepts local
// connections. An empty host listens on every interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// File is the path the config was read from; empty for the defaults.
func (c *Config) File() string { return c.file }

// MetadataOn reports whether gRPC answers carry dynamic metadata: on
// unless envoy.dynamic_metadata is false.
func (c *Config) MetadataOn() bool {
	return c.Envoy.DynamicMetadata == nil || *c.Envoy.DynamicMetadata
}

// ConsoleOn reports whether the admin listener serves the key console: on
// unless admin.console is false. It grants nothing (the page signs in with
// an admin token), so it is on by default.
func (c *Config) ConsoleOn() bool { return c.Admin.Console == nil || *c.Admin.Console }
