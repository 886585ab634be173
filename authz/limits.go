package authz

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/authz/ratelimit"
)

// RateLimits configures request budgets. The zero value limits keys by
// DefaultTiers and throttles failed authentication at 20 per minute per
// client address.
//
// Every budget is a LimitSet: one or more named limits, all of which a
// request must fit, charged together, so a refused request spends nothing
// in any of them. A limit counts by a sliding window unless it says
// otherwise: "100 per minute" is at most 100 in any rolling minute.
type RateLimits struct {
	// Tiers maps a key's tier to its limits. Nil: DefaultTiers.
	Tiers map[string]LimitSet
	// DefaultTier is the tier of a key whose tier has no limit configured
	// (a tier removed from the config after keys were issued). Empty: the
	// tier named "standard" if configured, else the one with the lowest
	// rate.
	DefaultTier string
	// Org, Tenant and User are budgets shared by all keys of one org, of
	// one tenant, or of one user (a user_id within a tenant), on top of
	// each key's own, so that creating keys multiplies nothing. Empty:
	// none. A user's record may override or add to User (see
	// Credential.UserLimits), as a key's may its tier's.
	Org, Tenant, User LimitSet
	// FailedAuth throttles a client address that presents invalid keys:
	// past this many in the window, its requests get 429 without a lookup.
	// Zero: 20 per minute. Requests < 0: off.
	FailedAuth ratelimit.Limit
	// PerKeyOff turns the per-key limits off (for deployments that limit
	// with Envoy's global rate limit service instead); org, tenant and user
	// budgets and credits still apply.
	PerKeyOff bool
	// QuietAllows leaves the rate-limit headers off allowed requests'
	// responses (they stay on every 429), for deployments whose clients do
	// not read them: an allow's answer is then a third smaller.
	QuietAllows bool
	// Shared, when set, holds the key, org, tenant and user budgets for
	// every replica (Redis), so that N replicas do not admit N times the
	// limit. The failed-auth throttle stays per replica.
	Shared SharedLimiter
	// SharedFailOpen says what happens when Shared cannot answer: false
	// (the default) refuses with 503, fail closed; true falls back to this
	// replica's own limiter, whose budgets then apply per replica.
	SharedFailOpen bool
}

// LimitSet is a set of named limits. Names are unique within a set.
type LimitSet []NamedLimit

// One is a set of one limit, named name: a tier's single limit is named
// after the tier, and the headers call it so.
func One(name string, l ratelimit.Limit) LimitSet { return LimitSet{{Name: name, Limit: l}} }

// validate checks a configured set: valid names, no duplicates, every
// limit usable (a configured limit cannot be "off").
func (s LimitSet) validate() error {
	if len(s) > ratelimit.MaxNamed {
		return fmt.Errorf("%d limits: at most %d", len(s), ratelimit.MaxNamed)
	}
	seen := map[string]bool{}
	for _, n := range s {
		if err := ratelimit.ValidName(n.Name); err != nil {
			return err
		}
		if seen[n.Name] {
			return fmt.Errorf("limit %q twice", n.Name)
		}
		seen[n.Name] = true
		if err := n.Limit.Validate(); err != nil {
			return fmt.Errorf("limit %q: %w", n.Name, err)
		}
	}
	return nil
}

// DefaultTiers are AlfaOne's tiers: 100 and 1000 requests per minute.
var DefaultTiers = map[string]LimitSet{
	"standard":   One("standard", ratelimit.Limit{Requests: 100, Window: time.Minute}),
	"enterprise": One("enterprise", ratelimit.Limit{Requests: 1000, Window: time.Minute}),
}

// SharedLimiter charges requests to buckets every replica shares (Redis),
// all or nothing, like ratelimit.Limiter does inside one process, and
// fills each[i] with charges[i]'s own result when each is long enough.
// Bucket names are "<scope>:<limit name>:<owner>" ("key:per_minute:<id>",
// "org:org:<id>", "user:per_day:<tenant>/<user>"). An error means the
// shared state could not be reached; RateLimits.SharedFailOpen decides
// what then happens.
type SharedLimiter interface {
	Take(ctx context.Context, cost int, charges []ratelimit.Charge[string], each []ratelimit.Result) (ratelimit.Result, error)
}

// Credits is the ledger of prepaid balances (Alloovium's credits): Spend
// takes cost from a metered key's balance, all or nothing. ok is false
// when the balance cannot cover it.
type Credits interface {
	Spend(ctx context.Context, c *Credential, cost int) (remaining int64, ok bool, err error)
}

// bucket names a rate-limit bucket without building a string per request.
type bucket struct {
	scope uint8  // scopeKey, ...
	owner string // key, org or tenant id; the tenant of a user
	user  string // the user id within owner
	name  string // the limit's name
}

const (
	scopeKey uint8 = iota
	scopeOrg
	scopeTenant
	scopeUser
)

var scopeNames = [...]string{"key:", "org:", "tenant:", "user:"}

// redisName spells b for the shared limiter. Limit names and ids of
// tenants hold no ':', so the parts cannot run into each other; the user
// id goes last.
func (b bucket) redisName() string {
	s := scopeNames[b.scope] + b.name + ":" + b.owner
	if b.scope == scopeUser {
		s += "/" + b.user
	}
	return s
}

// limitDef is one limit prepared for the Check path.
type limitDef struct {
	name  string // the bucket's
	label string // what the headers call it
	limit ratelimit.Limit
	item  string // its RateLimit-Policy item
}

func newDef(scope uint8, n NamedLimit) *limitDef {
	label := n.Name
	if scope != scopeKey && n.Name != strings.TrimSuffix(scopeNames[scope], ":") {
		// "org" alone is the org's single limit; named ones say whose.
		label = strings.TrimSuffix(scopeNames[scope], ":") + "." + n.Name
	}
	return &limitDef{name: n.Name, label: label, limit: n.Limit, item: policyItem(label, n.Limit)}
}

func compileSet(scope uint8, s LimitSet) []*limitDef {
	out := make([]*limitDef, len(s))
	for i, n := range s {
		out[i] = newDef(scope, n)
	}
	return out
}

// tierLimit is one tier's limits and the policy headers that go with them.
type tierLimit struct {
	name   string
	limits []*limitDef
	// policy is the RateLimit-Policy value of a key of this tier with no
	// limits of its own, by whether it has an org (bit 0) and a user (bit
	// 1) whose default budgets then apply too.
	policy [4]string
}

// limits is RateLimits prepared for the Check path.
type limits struct {
	tiers             map[string]*tierLimit
	fallback          *tierLimit
	org, tenant, user []*limitDef
	perKeyOff         bool
	quietAllows       bool
	shared            SharedLimiter
	failOpen          bool
	keys              *ratelimit.Limiter[bucket]
	failures          *ratelimit.Limiter[netip.Addr]
	failLimit         ratelimit.Limit
}

// withDefaults fills in the documented defaults of the zero fields.
func (rl RateLimits) withDefaults() RateLimits {
	if rl.Tiers == nil {
		rl.Tiers = DefaultTiers
	}
	if rl.FailedAuth.Requests == 0 {
		rl.FailedAuth.Requests = 20
	}
	if rl.FailedAuth.Window == 0 {
		rl.FailedAuth.Window = time.Minute
	}
	return rl
}

// compile prepares limits that validate accepted.
func (rl RateLimits) compile(now func() time.Time) *limits {
	rl = rl.withDefaults()
	l := &limits{tiers: map[string]*tierLimit{}, perKeyOff: rl.PerKeyOff, quietAllows: rl.QuietAllows, shared: rl.Shared, failOpen: rl.SharedFailOpen,
		org: compileSet(scopeOrg, rl.Org), tenant: compileSet(scopeTenant, rl.Tenant), user: compileSet(scopeUser, rl.User)}
	for _, name := range slices.Sorted(maps.Keys(rl.Tiers)) {
		t := &tierLimit{name: name, limits: compileSet(scopeKey, rl.Tiers[name])}
		for v := range t.policy {
			var items []string
			for _, d := range l.applying(t.limits, nil, nil, v&1 != 0, v&2 != 0) {
				items = append(items, d.item)
			}
			t.policy[v] = strings.Join(items, ", ")
		}
		l.tiers[name] = t
		if l.fallback == nil || slowest(rl.Tiers[name]) < slowest(rl.Tiers[l.fallback.name]) {
			l.fallback = t
		}
	}
	switch {
	case rl.DefaultTier != "":
		l.fallback = l.tiers[rl.DefaultTier]
	case l.tiers["standard"] != nil:
		l.fallback = l.tiers["standard"]
	}
	if rl.FailedAuth.Requests > 0 {
		l.failures = ratelimit.New[netip.Addr](now)
		l.failLimit = rl.FailedAuth
	}
	l.keys = ratelimit.New[bucket](now)
	return l
}

// slowest is the lowest rate of a set, to pick the fallback tier.
func slowest(s LimitSet) float64 {
	r := 0.0
	for i, n := range s {
		if x := float64(n.Limit.Requests) / n.Limit.Window.Seconds(); i == 0 || x < r {
			r = x
		}
	}
	return r
}

// applying lists the limits that apply in policy order (key, user, org,
// tenant), for the policy headers. The Check path merges the same way
// without building this list.
func (l *limits) applying(tier []*limitDef, keyOwn, userOwn []NamedLimit, org, user bool) []*limitDef {
	var out []*limitDef
	add := func(scope uint8, defs []*limitDef, own []NamedLimit) {
		mergeSet(scope, defs, own, func(d *limitDef) { out = append(out, d) })
	}
	if !l.perKeyOff {
		add(scopeKey, tier, keyOwn)
	}
	if user {
		add(scopeUser, l.user, userOwn)
	}
	if org {
		add(scopeOrg, l.org, nil)
	}
	add(scopeTenant, l.tenant, nil)
	return out
}

// mergeSet calls fn with every limit of defs, each replaced by the limit
// of the same name in own (skipped when that one is off: zero requests),
// then with own's other limits. Limits of own are prepared on the spot:
// only keys and users with limits of their own pay for it.
func mergeSet(scope uint8, defs []*limitDef, own []NamedLimit, fn func(*limitDef)) {
	for _, d := range defs {
		i := slices.IndexFunc(own, func(n NamedLimit) bool { return n.Name == d.name })
		switch {
		case i < 0:
			fn(d)
		case own[i].Limit.Requests > 0:
			fn(newDef(scope, own[i]))
		}
	}
	for _, n := range own {
		if n.Limit.Requests > 0 && !slices.ContainsFunc(defs, func(d *limitDef) bool { return d.name == n.Name }) {
			fn(newDef(scope, n))
		}
	}
}

// policyItem is one member of the IETF draft's RateLimit-Policy list:
// "name";q=<quota>;w=<window seconds>. A token bucket's quota is its
// burst: what fits at once.
func policyItem(name string, l ratelimit.Limit) string {
	q := l.Requests
	if l.Algorithm == ratelimit.TokenBucket && l.Burst > 0 {
		q = l.Burst
	}
	return strconv.Quote(name) + ";q=" + strconv.Itoa(q) + ";w=" + strconv.FormatInt(int64(max(l.Window/time.Second, 1)), 10)
}

func (l *limits) tierOf(c *Credential) *tierLimit {
	if t, ok := l.tiers[c.Tier]; ok {
		return t
	}
	return l.fallback
}

// maxCharges is how many limits one request's arrays hold on the stack;
// a request under more of them spills to the heap.
const maxCharges = 16

// charged is what one request's rate-limit charge came to, with its
// headers rendered.
type charged struct {
	ratelimit.Result // the tightest limit's numbers
	applied          bool
	policy           string // RateLimit-Policy
	// The header values: substrings of one string, so that rendering
	// them costs one allocation.
	all, limit, remaining, reset, retry string
}

// take charges one request to every limit that applies to the key: its
// tier's (with its own overrides), its user's, its org's and its
// tenant's, all or nothing.
func (l *limits) take(ctx context.Context, c *Credential, cost int, now time.Time) (charged, error) {
	var chargeBuf [maxCharges]ratelimit.Charge[bucket]
	var defBuf [maxCharges]*limitDef
	charges, defs := chargeBuf[:0], defBuf[:0]
	owner := bucket{scope: scopeKey, owner: c.ID}
	add := func(d *limitDef) {
		b := owner
		b.name = d.name
		charges = append(charges, ratelimit.Charge[bucket]{Key: b, Limit: d.limit})
		defs = append(defs, d)
	}
	t := l.tierOf(c)
	if !l.perKeyOff && t != nil {
		mergeSet(scopeKey, t.limits, c.Limits, add)
	}
	if c.UserID != "" {
		owner = bucket{scope: scopeUser, owner: c.TenantID, user: c.UserID}
		mergeSet(scopeUser, l.user, c.UserLimits, add)
	}
	if c.OrgID != "" {
		owner = bucket{scope: scopeOrg, owner: c.OrgID}
		mergeSet(scopeOrg, l.org, nil, add)
	}
	owner = bucket{scope: scopeTenant, owner: c.TenantID}
	mergeSet(scopeTenant, l.tenant, nil, add)
	if len(charges) == 0 {
		return charged{Result: ratelimit.Result{Allowed: true, Remaining: -1}}, nil
	}
	var eachBuf [maxCharges]ratelimit.Result
	var each []ratelimit.Result
	if len(charges) > maxCharges {
		each = make([]ratelimit.Result, len(charges))
	} else {
		each = eachBuf[:len(charges)]
	}
	r, err := l.charge(ctx, cost, charges, each, now)
	if err != nil {
		return charged{}, err
	}
	policy := ""
	if t != nil && c.Limits == nil && c.UserLimits == nil {
		policy = t.policy[b2i(c.OrgID != "")|b2i(c.UserID != "")<<1]
	} else {
		items := make([]string, len(defs))
		for i, d := range defs {
			items[i] = d.item
		}
		policy = strings.Join(items, ", ")
	}
	if !r.Allowed {
		// each[i] is bucket i's answer had it been charged alone; nothing
		// was charged, so what a bucket that had room still has is its
		// answer's remaining plus the cost (exact for both algorithms).
		for i := range each {
			if each[i].Allowed {
				each[i].Remaining += int64(cost)
			}
		}
	}
	return render(r, policy, defs, each, now), nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// charge asks the shared limiter, or this replica's.
func (l *limits) charge(ctx context.Context, cost int, charges []ratelimit.Charge[bucket], each []ratelimit.Result, now time.Time) (ratelimit.Result, error) {
	if l.shared != nil {
		// Built here, on the heap (an interface call keeps what it is
		// given), so that the local path's arrays stay on the stack.
		shared := make([]ratelimit.Charge[string], len(charges))
		for i, ch := range charges {
			shared[i] = ratelimit.Charge[string]{Key: ch.Key.redisName(), Limit: ch.Limit}
		}
		got := make([]ratelimit.Result, len(each))
		r, err := l.shared.Take(ctx, cost, shared, got)
		if err == nil {
			copy(each, got)
			return r, nil
		}
		if !l.failOpen {
			return ratelimit.Result{}, fmt.Errorf("shared rate limit: %w", err)
		}
		// Fail open to this replica's own budgets.
	}
	return l.keys.TakeEach(now, cost, charges, each)
}

// render writes the rate-limit header values into one buffer: every
// limit's remaining and reset in RateLimit, the tightest one's in the
// x-ratelimit-* headers.
func render(r ratelimit.Result, policy string, defs []*limitDef, each []ratelimit.Result, now time.Time) charged {
	var buf [256]byte
	b := buf[:0]
	for i, d := range defs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '"')
		b = append(b, d.label...)
		b = append(b, `";r=`...)
		b = strconv.AppendInt(b, each[i].Remaining, 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, seconds(each[i].Reset), 10)
	}
	i1 := len(b)
	b = strconv.AppendInt(b, r.Limit, 10)
	i2 := len(b)
	b = strconv.AppendInt(b, r.Remaining, 10)
	i3 := len(b)
	b = strconv.AppendInt(b, now.Unix()+seconds(r.Reset), 10)
	i4 := len(b)
	b = strconv.AppendInt(b, max(seconds(r.RetryAfter), 1), 10)
	s := string(b) // the one allocation; the values are substrings of it
	return charged{Result: r, applied: true, policy: policy,
		all: s[:i1], limit: s[i1:i2], remaining: s[i2:i3], reset: s[i3:i4], retry: s[i4:]}
}

// throttled reports whether addr has used up its failed authentications.
func (l *limits) throttled(addr netip.Addr, now time.Time) (time.Duration, bool) {
	// No address has failed lately: nothing to look up (the common case).
	if l.failures == nil || !addr.IsValid() || l.failures.Empty() {
		return 0, false
	}
	r, err := l.failures.PeekAt(now, 1, ratelimit.Charge[netip.Addr]{Key: throttleKey(addr), Limit: l.failLimit})
	if err != nil || r.Allowed {
		return 0, false
	}
	return r.RetryAfter, true
}

func (l *limits) failed(addr netip.Addr, now time.Time) {
	if l.failures == nil || !addr.IsValid() {
		return
	}
	l.failures.TakeAt(now, 1, ratelimit.Charge[netip.Addr]{Key: throttleKey(addr), Limit: l.failLimit})
}

// throttleKey groups IPv6 clients by /64, the block one subscriber holds,
// so rotating through addresses of one block gains nothing.
func throttleKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// sweep forgets refilled buckets.
func (l *limits) sweep() {
	l.keys.Sweep()
	if l.failures != nil {
		l.failures.Sweep()
	}
}

// seconds rounds a wait up to whole seconds, at least 1 for a wait.
func seconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// rateHeaders adds the rate-limit headers of ch to dst; retry adds
// Retry-After, for a refusal.
func rateHeaders(dst []Header, ch *charged, retry bool) []Header {
	dst = append(dst,
		Header{Name: "ratelimit-policy", Value: ch.policy},
		Header{Name: "ratelimit", Value: ch.all},
		Header{Name: "x-ratelimit-limit", Value: ch.limit},
		Header{Name: "x-ratelimit-remaining", Value: ch.remaining},
		Header{Name: "x-ratelimit-reset", Value: ch.reset},
	)
	if retry {
		dst = append(dst, Header{Name: "retry-after", Value: ch.retry})
	}
	return dst
}

// errNoTiers: validation's complaint when nothing would limit keys.
var errNoTiers = errors.New("rate limits: no tiers configured")
