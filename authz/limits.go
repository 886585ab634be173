package authz

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/keygate/keygate/authz/ratelimit"
)

// RateLimits configures request budgets. The zero value limits keys by
// DefaultTiers and throttles failed authentication at 20 per minute per
// client address.
type RateLimits struct {
	// Tiers maps a key's tier to its limit. Nil: DefaultTiers.
	Tiers map[string]ratelimit.Limit
	// DefaultTier is the tier of a key whose tier has no limit configured
	// (a tier removed from the config after keys were issued). Empty: the
	// tier named "standard" if configured, else the lowest limit.
	DefaultTier string
	// Org and Tenant, when Requests > 0, are budgets shared by all keys of
	// one org, or of one tenant, on top of each key's own. Zero Requests:
	// none.
	Org, Tenant ratelimit.Limit
	// FailedAuth throttles a client address that presents invalid keys:
	// past this many in the window, its requests get 429 without a lookup.
	// Zero: 20 per minute. Requests < 0: off.
	FailedAuth ratelimit.Limit
	// PerKeyOff turns the per-key limits off (for deployments that limit
	// with Envoy's global rate limit service instead); org and tenant
	// budgets and credits still apply.
	PerKeyOff bool
	// Shared, when set, holds the key, org and tenant budgets for every
	// replica (Redis), so that N replicas do not admit N times the limit.
	// The failed-auth throttle stays per replica.
	Shared SharedLimiter
	// SharedFailOpen says what happens when Shared cannot answer: false
	// (the default) refuses with 503, fail closed; true falls back to this
	// replica's own limiter, whose budgets then apply per replica.
	SharedFailOpen bool
}

// DefaultTiers are AlfaOne's tiers: 100 and 1000 requests per minute.
var DefaultTiers = map[string]ratelimit.Limit{
	"standard":   {Requests: 100, Window: time.Minute},
	"enterprise": {Requests: 1000, Window: time.Minute},
}

// SharedLimiter charges requests to buckets every replica shares (Redis),
// all or nothing, like ratelimit.Limiter does inside one process. Keys are
// bucket names ("key:<id>", "org:<id>", "tenant:<id>"). An error means the
// shared state could not be reached; RateLimits.SharedFailOpen decides what
// then happens.
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
	scope uint8 // scopeKey, scopeOrg, scopeTenant
	id    string
}

const (
	scopeKey uint8 = iota
	scopeOrg
	scopeTenant
)

// tierLimit is one tier's limit and the policy header that goes with it.
type tierLimit struct {
	name   string
	limit  ratelimit.Limit
	policy string // RateLimit-Policy value, covering org and tenant budgets too
}

// limits is RateLimits prepared for the Check path.
type limits struct {
	tiers       map[string]*tierLimit
	fallback    *tierLimit
	org, tenant ratelimit.Limit
	perKeyOff   bool
	shared      SharedLimiter
	failOpen    bool
	keys        *ratelimit.Limiter[bucket]
	failures    *ratelimit.Limiter[netip.Addr]
	failLimit   ratelimit.Limit
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
	l := &limits{tiers: map[string]*tierLimit{}, org: rl.Org, tenant: rl.Tenant, perKeyOff: rl.PerKeyOff,
		shared: rl.Shared, failOpen: rl.SharedFailOpen}
	for _, name := range slices.Sorted(maps.Keys(rl.Tiers)) {
		lim := rl.Tiers[name]
		t := &tierLimit{name: name, limit: lim, policy: policyItem(name, lim)}
		if rl.Org.Requests > 0 {
			t.policy += ", " + policyItem("org", rl.Org)
		}
		if rl.Tenant.Requests > 0 {
			t.policy += ", " + policyItem("tenant", rl.Tenant)
		}
		l.tiers[name] = t
		if l.fallback == nil || rate(lim) < rate(l.fallback.limit) {
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

func rate(l ratelimit.Limit) float64 { return float64(l.Requests) / l.Window.Seconds() }

// policyItem is one member of the IETF draft's RateLimit-Policy list:
// "name";q=<quota>;w=<window seconds>.
func policyItem(name string, l ratelimit.Limit) string {
	q := l.Requests
	if l.Burst > 0 {
		q = l.Burst
	}
	return strconv.Quote(name) + ";q=" + strconv.Itoa(q) + ";w=" + strconv.FormatInt(int64(l.Window/time.Second), 10)
}

func (l *limits) tierOf(c *Credential) *tierLimit {
	if t, ok := l.tiers[c.Tier]; ok {
		return t
	}
	return l.fallback
}

// charged is what one request's rate-limit charge came to.
type charged struct {
	ratelimit.Result
	tier   *tierLimit // the key's tier: its policy header goes to the client
	bucket string     // the bucket the numbers describe; empty: no budget applies
}

// take charges one request to the key's buckets.
func (l *limits) take(ctx context.Context, c *Credential, cost int, now time.Time) (charged, error) {
	var all [3]ratelimit.Charge[bucket]
	var names [3]string
	charges := all[:0]
	t := l.tierOf(c)
	if !l.perKeyOff && t != nil {
		charges = append(charges, ratelimit.Charge[bucket]{Key: bucket{scopeKey, c.ID}, Limit: t.limit})
		names[len(charges)-1] = t.name
	}
	if l.org.Requests > 0 && c.OrgID != "" {
		charges = append(charges, ratelimit.Charge[bucket]{Key: bucket{scopeOrg, c.OrgID}, Limit: l.org})
		names[len(charges)-1] = "org"
	}
	if l.tenant.Requests > 0 {
		charges = append(charges, ratelimit.Charge[bucket]{Key: bucket{scopeTenant, c.TenantID}, Limit: l.tenant})
		names[len(charges)-1] = "tenant"
	}
	if len(charges) == 0 {
		return charged{Result: ratelimit.Result{Allowed: true, Remaining: -1}, tier: t}, nil
	}
	if l.shared != nil {
		var sc [3]ratelimit.Charge[string]
		shared := sc[:len(charges)]
		for i, ch := range charges {
			shared[i] = ratelimit.Charge[string]{Key: [...]string{"key:", "org:", "tenant:"}[ch.Key.scope] + ch.Key.id, Limit: ch.Limit}
		}
		r, err := l.shared.Take(ctx, cost, shared, nil)
		if err == nil {
			return charged{r, t, names[r.Index]}, nil
		}
		if !l.failOpen {
			return charged{}, fmt.Errorf("shared rate limit: %w", err)
		}
		// Fail open to this replica's own budgets.
	}
	r, err := l.keys.TakeAt(now, cost, charges...)
	return charged{r, t, names[r.Index]}, err
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

// rateHeaders renders the rate-limit headers into dst. All numbers are
// written into one buffer, so a Check pays one allocation for them.
func rateHeaders(dst []Header, t *tierLimit, name string, r ratelimit.Result, now time.Time, retry bool) []Header {
	reset := seconds(r.Reset)
	var buf [96]byte
	b := buf[:0]
	mark := func() int { return len(b) }
	i0 := mark()
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, `";r=`...)
	b = strconv.AppendInt(b, r.Remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, reset, 10)
	i1 := mark()
	b = strconv.AppendInt(b, r.Limit, 10)
	i2 := mark()
	b = strconv.AppendInt(b, r.Remaining, 10)
	i3 := mark()
	b = strconv.AppendInt(b, now.Unix()+reset, 10)
	i4 := mark()
	b = strconv.AppendInt(b, seconds(r.RetryAfter), 10)
	i5 := mark()
	s := string(b) // the one allocation; the values below are substrings of it
	sub := func(a, z int) string { return s[a:z] }
	if t != nil {
		dst = append(dst, Header{Name: "ratelimit-policy", Value: t.policy})
	}
	dst = append(dst,
		Header{Name: "ratelimit", Value: sub(i0, i1)},
		Header{Name: "x-ratelimit-limit", Value: sub(i1, i2)},
		Header{Name: "x-ratelimit-remaining", Value: sub(i2, i3)},
		Header{Name: "x-ratelimit-reset", Value: sub(i3, i4)},
	)
	if retry {
		dst = append(dst, Header{Name: "retry-after", Value: sub(i4, i5)})
	}
	return dst
}
