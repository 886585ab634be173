package authz

import (
	"github.com/keygate/keygate/authz/ratelimit"
	"net/netip"
	"strings"
	"time"
)

// Request is what the core needs to know about one HTTP request, whatever
// proxy asked. Adapters fill it; the core never sees their types. Its
// strings may share memory with the whole message the proxy sent (the gRPC
// adapter reads them in place): what outlives a decision (a cache entry, a
// map key) is cloned first, so that it does not keep the message alive.
type Request struct {
	Method string
	// Path is the request target as the proxy saw it, including any raw
	// query string (Envoy sends it that way).
	Path string
	Host string
	// Headers holds the request headers with lower-case names. A header sent
	// more than once is one entry whose values are joined with ",", as
	// Envoy's CheckRequest delivers them (AddHeader folds them so).
	Headers map[string]string
	// Peer is the address of the client as the proxy saw it (no port).
	Peer string
	// Settings are per-route settings from the proxy (Envoy's
	// context_extensions), by name.
	Settings map[string]string
	// Unroutable names a header that says where the request goes (the
	// original URI, method or host a proxy forwards) and that arrived more
	// than once, or not at all: the proxy and the backend could read
	// different copies, and a proxy that sends none leaves the rules
	// nothing to match (deciding "GET /" instead would drop every rule's
	// requirements). The request is refused. Empty: all there, once.
	Unroutable string
}

// AddHeader adds one header to h in the shape Request.Headers has: the
// name in lower case, a value joined with "," to one already there (a
// repeated header, as Envoy folds it, so that two credentials read as one
// invalid value rather than the proxy's first and the backend's last).
func AddHeader(h map[string]string, name, value string) {
	name = strings.ToLower(name)
	if prev, ok := h[name]; ok {
		value = prev + "," + value
	}
	h[name] = value
}

// Header is one HTTP header name and value.
type Header struct {
	Name  string
	Value string
}

// Decision is the core's answer. A denial is a Decision, not an error: an
// error from the core means the system could not decide, and adapters then
// fail closed.
type Decision struct {
	// Kind says how an adapter renders the decision: pass the request
	// upstream (KindAllow), refuse it (KindDeny), or answer it in the
	// proxy's place (KindReply). The zero value refuses.
	Kind Kind
	// Reason is ReasonOK for an allow, why Keygate answers a reply
	// (ReasonIntrospection) and the denial code otherwise: for logs and
	// metrics, not for rendering.
	Reason Reason
	// Status is the HTTP status of a denial (400, 401, 403, 429, 503) or a
	// reply (200); 200 on allow.
	Status int

	// Upstream headers, on allow only. Set overwrites whatever the client
	// sent under the same name; Remove lists headers to strip before the
	// request goes upstream (credentials, and identity headers this
	// decision does not set). No name is in both.
	Set    []Header
	Remove []string

	// ResponseHeaders go to the client: on a denial or a reply with Body as
	// Keygate's answer (content-type, www-authenticate, retry-after, ...);
	// on an allow they are added to the backend's response (rate-limit
	// headers).
	ResponseHeaders []Header
	Body            string

	// Credential is the key that was presented, when one was found in the
	// store (on allow, and on denials of a known key). Adapters use it for
	// metadata and logs; they must not decide on it.
	Credential *Credential

	// ID identifies this decision in logs and, on denials, in the
	// DecisionIDHeader the client gets, so support can find why a request
	// was refused. Format it with FormatID.
	ID uint64
	// Route is the name of the rule that matched ("(unmatched)" if none).
	Route string
	// Cost is the rate-limit tokens this request spends (at least 1).
	Cost int
	// WouldDeny, on an allow, is the reason the request would have been
	// refused had its route or tenant not been in shadow mode.
	WouldDeny Reason
}

// Kind is how a Decision is rendered.
type Kind uint8

// Decision kinds. The zero value is KindDeny, so a Decision left unset
// refuses.
const (
	KindDeny  Kind = iota // Keygate refuses: Status, ResponseHeaders and Body are the answer
	KindAllow             // the request goes upstream with Set and Remove applied
	KindReply             // Keygate answers in the proxy's place (Status 200, Body); nothing goes upstream
)

// Allow reports whether the request may go upstream.
func (d Decision) Allow() bool { return d.Kind == KindAllow }

// DecisionIDHeader carries the decision id to the client on denials.
const DecisionIDHeader = "x-keygate-decision-id"

// FormatID renders a decision id as 16 hex digits.
func FormatID(id uint64) string {
	const hexdigits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = hexdigits[id&0xf]
		id >>= 4
	}
	return string(b[:])
}

// Credential is what the store knows about a key that the decision needs.
// The store hands out shared, read-only values: callers never modify one.
type Credential struct {
	ID            string
	Name          string
	DisplayPrefix string
	TenantID      string
	OrgID         string // empty for a tenant-level key
	UserID        string
	Environment   string
	Tier          string
	Scopes        []string
	Status        Status
	ExpiresAt     time.Time // zero: never
	// RevokesAt is when a key stops working because it was revoked: the
	// moment of revocation, or the end of a rotation's grace period. Zero:
	// not revoked.
	RevokesAt time.Time

	// Metered keys spend prepaid credits (Alloovium's): from a balance of
	// their own, held by the key BalanceID names (the key itself, or, for a
	// key in its rotation grace period, its successor, so that both spend
	// one balance; empty: none), and from the balances of the accounts
	// Accounts names (their owners': user, org, tenant). The Credits
	// implementation reads these; the core only asks it when Metered.
	Metered   bool
	BalanceID string
	Accounts  []string
	// ScopesHeader is Scopes joined with ",", computed once by the store so
	// the Check path does not join on every request.
	ScopesHeader string
	// AllowedIPs, when not empty, lists the only client networks the key
	// may be used from; elsewhere it is refused (a leaked key stays useless).
	AllowedIPs []netip.Prefix
	// Limits are the key's own named limits, sorted by name: each replaces
	// the tier's limit of the same name or adds to the tier's; one with
	// Requests 0 turns the tier's limit of that name off for this key.
	Limits []NamedLimit
	// UserLimits are the limits of the key's user record (UserID within
	// TenantID), sorted by name, shared by all of the user's keys: each
	// replaces the configured per-user limit (RateLimits.User) of the same
	// name or adds to them; one with Requests 0 turns that default off for
	// this user. Nil when the key has no user, or its user no record or no
	// limits: the defaults apply unchanged.
	UserLimits []NamedLimit
}

// NamedLimit is one of a set of limits (a tier's, a key's, a user's): its
// name is what the RateLimit headers call it.
type NamedLimit struct {
	Name  string
	Limit ratelimit.Limit
}

// Status of a key as stored.
type Status string

// Key statuses.
const (
	StatusActive   Status = "active"
	StatusInactive Status = "inactive"
	StatusRevoked  Status = "revoked"
)

// state returns the reason a credential cannot be used at now, or ReasonOK.
func (c *Credential) state(now time.Time) Reason {
	return KeyState(c.Status, c.RevokesAt, c.ExpiresAt, now)
}

// KeyState is the one rule of a key's state at now, for the decision and
// for the store's listings alike: ReasonOK for a usable key, else why not.
// Revocation (at revokesAt, or now for StatusRevoked) wins over expiry, and
// expiry over an operator's pause (any status but active), so the client is
// told the most final fact. Zero times mean never.
func KeyState(status Status, revokesAt, expiresAt, now time.Time) Reason {
	switch {
	case status == StatusRevoked || !revokesAt.IsZero() && !now.Before(revokesAt):
		return ReasonRevokedKey
	case !expiresAt.IsZero() && !now.Before(expiresAt):
		return ReasonExpiredKey
	case status != StatusActive:
		return ReasonInactiveKey
	}
	return ReasonOK
}
