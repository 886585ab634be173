package keystore

import (
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore/apikey"
)

// Tenant is a customer account; every key belongs to one.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Org is an organization inside one tenant.
type Org struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Key is an API key as operators see it: every stored fact except the
// secret and its hash, which never leave the store.
type Key struct {
	ID            string       `json:"id"`
	Name          string       `json:"name"`
	DisplayPrefix string       `json:"display_prefix"`
	TenantID      string       `json:"tenant_id"`
	OrgID         string       `json:"org_id,omitempty"` // empty: tenant-level key
	UserID        string       `json:"user_id,omitempty"`
	Environment   string       `json:"environment"`
	Tier          string       `json:"tier"`
	Scopes        []string     `json:"scopes"`
	Status        authz.Status `json:"status"` // as stored: active, inactive or revoked
	Slot          string       `json:"slot,omitempty"`
	Imported      bool         `json:"imported,omitempty"`
	CreatedAt     time.Time    `json:"created_at"`
	ExpiresAt     *time.Time   `json:"expires_at,omitempty"`
	LastUsedAt    *time.Time   `json:"last_used_at,omitempty"`
	RevokedAt     *time.Time   `json:"revoked_at,omitempty"` // may be in the future during a rotation's grace period
	RotatedTo     string       `json:"rotated_to,omitempty"`
	// RotatedFrom names the key this one replaced by rotation.
	RotatedFrom string            `json:"rotated_from,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// Meter is the key's own prepaid credit balance, if any.
	Meter
	// CreditsOwner, on a key rotated away from, names the key whose balance
	// it spends during its grace period (its successor).
	CreditsOwner string `json:"credits_owner,omitempty"`
	// AllowedCIDRs, when not empty, lists the only client networks the key
	// works from, in canonical form ("10.0.0.0/8", "2001:db8::1/128"), so a
	// leaked key is refused elsewhere. Empty: any address.
	AllowedCIDRs []string `json:"allowed_cidrs,omitempty"`
	// Limits are the key's own named limits: each replaces the tier's
	// limit of that name or adds one; requests 0 turns the tier's off.
	Limits map[string]ratelimit.Limit `json:"limits,omitempty"`
}

// Meter is a prepaid credit balance and its bookkeeping: a key's own, or
// an account's (a tenant's, an org's, a user's; see accounts.go). Its
// fields are inlined in the record that holds it.
type Meter struct {
	// CreditsRemaining is the optional prepaid balance; nil means unmetered.
	// In the record it is the balance not handed out to any process; Key
	// and ListKeys add this process's unspent slice (see credits.go).
	CreditsRemaining *int64 `json:"credits_remaining,omitempty"`
	// CreditsEpoch counts SetCredits calls: a slice reserved in an older
	// epoch is void.
	CreditsEpoch uint64 `json:"credits_epoch,omitempty"`
	// CreditsReserved maps each process (a random id per Store) holding a
	// slice of the balance to the slice it reserved, an upper bound of what
	// it may still spend. An entry left by a process that crashed is what
	// the crash stranded; SetCredits clears them all.
	CreditsReserved map[string]int64 `json:"credits_reserved,omitempty"`
	// Refill resets the credit balance on a schedule; LastRefillAt is the
	// period boundary of the last refill applied (or when the schedule was
	// set, before the first).
	Refill       *Refill    `json:"refill,omitempty"`
	LastRefillAt *time.Time `json:"last_refill_at,omitempty"`
}

// Refill is a schedule that sets a key's credit balance to Amount once
// per period, at the period's start (UTC): midnight for "daily", midnight
// of Day for "monthly". It is applied once per period however many
// replicas spend the key, by the first transaction that reads the record
// after the boundary (a Check's reservation, AddCredits, SetCredits), and
// voids the slices reserved in the period before, as SetCredits does (see
// credits.go; the crash bound is unchanged). Missed periods do not stack:
// a key unused for three months is refilled once, to Amount. A key nobody
// used since the boundary shows the refill in Key and ListKeys already.
// Setting a schedule records the current period's start as the last
// refill, so the first refill is at the next boundary.
type Refill struct {
	// Interval is "daily" or "monthly".
	Interval string `json:"interval"`
	// Day is the day of the month a monthly refill falls on, 1 to 31; in
	// a shorter month, its last day. Zero: 1.
	Day    int   `json:"day,omitempty"`
	Amount int64 `json:"amount"`
}

// State is a key's status as a client would experience it at a moment: the
// stored status, with "expired" and the end of a grace period applied.
type State string

// States of a key. StateActive, StateInactive and StateRevoked share the
// names of the stored statuses.
const (
	StateActive   State = "active"
	StateInactive State = "inactive"
	StateRevoked  State = "revoked"
	StateExpired  State = "expired"
)

// StateAt returns the key's state at now, with the same precedence as the
// decision core: revoked, then expired, then inactive.
func (k *Key) StateAt(now time.Time) State {
	var revokes, expires time.Time
	if k.RevokedAt != nil {
		revokes = *k.RevokedAt
	}
	if k.ExpiresAt != nil {
		expires = *k.ExpiresAt
	}
	switch authz.KeyState(k.Status, revokes, expires, now) {
	case authz.ReasonRevokedKey:
		return StateRevoked
	case authz.ReasonExpiredKey:
		return StateExpired
	case authz.ReasonInactiveKey:
		return StateInactive
	}
	return StateActive
}

// storedKey is a key as the store holds it: the public record and its
// hash, the record's key in key_hashes.
type storedKey struct {
	Key
	Hash []byte `json:"hash"`
	// place is where the keys bucket stands for this record: what
	// writing it back must fix there (putKeyRecord).
	place recordPlace
}

// recordPlace is what the keys bucket holds for a key record.
type recordPlace uint8

const (
	// placeRef: the id's key holds the reference to the record's hash,
	// as schema 3 writes it.
	placeRef recordPlace = iota
	// placeNone: nothing yet (a new key).
	placeNone
	// placeByID: the record itself, under the id's text, as stores
	// before schema 3 kept it (or an older build wrote it since).
	placeByID
)

// credential builds the read-only view the decision core works from.
func (k *Key) credential() *authz.Credential {
	c := &authz.Credential{
		ID:            k.ID,
		Name:          k.Name,
		DisplayPrefix: k.DisplayPrefix,
		TenantID:      k.TenantID,
		OrgID:         k.OrgID,
		UserID:        k.UserID,
		Environment:   k.Environment,
		Tier:          k.Tier,
		Scopes:        append([]string(nil), k.Scopes...),
		Status:        k.Status,
		ScopesHeader:  strings.Join(k.Scopes, ","),
		Limits:        namedLimits(k.Limits),
	}
	if k.ExpiresAt != nil {
		c.ExpiresAt = *k.ExpiresAt
	}
	if k.RevokedAt != nil {
		c.RevokesAt = *k.RevokedAt
	}
	switch {
	case k.CreditsOwner != "":
		c.Metered, c.BalanceID = true, k.CreditsOwner
	case k.CreditsRemaining != nil:
		c.Metered, c.BalanceID = true, k.ID
	}
	if len(k.AllowedCIDRs) > 0 {
		// Parsed here, once per cache fill, so the Check path only compares.
		c.AllowedIPs = make([]netip.Prefix, len(k.AllowedCIDRs))
		for i, s := range k.AllowedCIDRs {
			// Entries were validated when written, so a failure means a
			// damaged record. The zero Prefix contains no address: the key
			// then works from nowhere, where dropping the entry could leave
			// the list empty and the key working from everywhere.
			if p, err := netip.ParsePrefix(s); err == nil {
				c.AllowedIPs[i] = p
			}
		}
	}
	return c
}

// Limits on operator-supplied fields. They keep records small and every
// value safe to put in an HTTP header.
const (
	maxNameLen      = 200
	maxIDLen        = 200
	maxScopes       = 100
	maxScopeLen     = 128
	maxMetadata     = 32
	maxMetaKeyLen   = 64
	maxMetaValueLen = 1024
	maxAllowedCIDRs = 100
	// maxCIDRLen is well above the longest textual prefix netip accepts
	// ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128"); it only keeps
	// error messages from quoting megabytes.
	maxCIDRLen = 64
)

// validText accepts UTF-8 text without control characters, since names and
// ids are sent upstream as header values.
func validText(field, s string, max int, required bool) error {
	switch {
	case s == "" && required:
		return refuse(ErrInvalid, "%s is required", field)
	case len(s) > max:
		return refuse(ErrInvalid, "%s is longer than %d bytes", field, max)
	case !utf8.ValidString(s):
		return refuse(ErrInvalid, "%s is not valid UTF-8", field)
	case s != strings.TrimSpace(s):
		return refuse(ErrInvalid, "%s has leading or trailing space", field)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return refuse(ErrInvalid, "%s contains a control character", field)
		}
	}
	return nil
}

// validScopes accepts scope names such as "vault:read" or "vault:*":
// letters, digits and ":._-*/", deduplicated in the order given.
func validScopes(scopes []string) ([]string, error) {
	if len(scopes) > maxScopes {
		return nil, refuse(ErrInvalid, "more than %d scopes", maxScopes)
	}
	out := make([]string, 0, len(scopes))
	seen := map[string]bool{}
	for _, s := range scopes {
		if s == "" || len(s) > maxScopeLen {
			return nil, refuse(ErrInvalid, "scope %q: want 1 to %d characters", s, maxScopeLen)
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":._-*/", c) >= 0) {
				return nil, refuse(ErrInvalid, "scope %q: want letters, digits and \":._-*/\"", s)
			}
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, nil
}

func validMetadata(m map[string]string) error {
	if len(m) > maxMetadata {
		return refuse(ErrInvalid, "more than %d metadata entries", maxMetadata)
	}
	for k, v := range m {
		if err := validText("metadata key", k, maxMetaKeyLen, true); err != nil {
			return err
		}
		if err := validText("metadata value of "+k, v, maxMetaValueLen, false); err != nil {
			return err
		}
	}
	return nil
}

func validEnv(env string) error {
	if !apikey.ValidEnv(env) {
		return refuse(ErrInvalid, "environment %q: want %q or %q", env, apikey.EnvLive, apikey.EnvTest)
	}
	return nil
}

// validCIDRs canonicalizes an IP allowlist: each entry is a CIDR or a bare
// address (a single host), masked to its network, IPv4-mapped IPv6 turned
// into IPv4, and deduplicated in the order given. An empty list is nil, so
// that the record omits it.
func validCIDRs(entries []string) ([]string, error) {
	if len(entries) > maxAllowedCIDRs {
		return nil, refuse(ErrInvalid, "more than %d allowed_cidrs entries", maxAllowedCIDRs)
	}
	var out []string
	seen := map[netip.Prefix]bool{}
	for _, e := range entries {
		p, err := parseCIDR(e)
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p.String())
		}
	}
	return out, nil
}

func parseCIDR(e string) (netip.Prefix, error) {
	bad := func(why string) (netip.Prefix, error) {
		shown := e
		if len(shown) > maxCIDRLen {
			shown = shown[:maxCIDRLen] + "..."
		}
		return netip.Prefix{}, refuse(ErrInvalid, "allowed_cidrs entry %q: %s", shown, why)
	}
	if len(e) > maxCIDRLen {
		return bad("too long")
	}
	var p netip.Prefix
	if strings.Contains(e, "/") {
		var err error
		if p, err = netip.ParsePrefix(e); err != nil {
			return bad("want a CIDR such as 10.0.0.0/8 or an address such as 192.0.2.1")
		}
	} else {
		a, err := netip.ParseAddr(e)
		if err != nil {
			return bad("want a CIDR such as 10.0.0.0/8 or an address such as 192.0.2.1")
		}
		if a.Zone() != "" {
			// A zone names an interface of this host; it says nothing
			// about a remote client.
			return bad("an address with a zone cannot name a client")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	p = p.Masked()
	// Proxies report IPv4 clients of a dual-stack socket as ::ffff:a.b.c.d,
	// so the mapped form of an IPv4 network is stored as that network. A
	// shorter prefix reaches beyond the mapped range and stays IPv6.
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

// ValidTierName reports whether name can be a tier: the check Open applies
// to configured tiers, exported so a config loader refuses the same names.
func ValidTierName(name string) error {
	return validText("tier", name, 64, true)
}
