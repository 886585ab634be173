package keystore

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keygate/keygate/authz"
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
	ID            string            `json:"id"`
	Name          string            `json:"name"`
	DisplayPrefix string            `json:"display_prefix"`
	TenantID      string            `json:"tenant_id"`
	OrgID         string            `json:"org_id,omitempty"` // empty: tenant-level key
	UserID        string            `json:"user_id,omitempty"`
	Environment   string            `json:"environment"`
	Tier          string            `json:"tier"`
	Scopes        []string          `json:"scopes"`
	Status        authz.Status      `json:"status"` // as stored: active, inactive or revoked
	Slot          string            `json:"slot,omitempty"`
	Imported      bool              `json:"imported,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
	ExpiresAt     *time.Time        `json:"expires_at,omitempty"`
	LastUsedAt    *time.Time        `json:"last_used_at,omitempty"`
	RevokedAt     *time.Time        `json:"revoked_at,omitempty"` // may be in the future during a rotation's grace period
	RotatedTo     string            `json:"rotated_to,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	// CreditsRemaining is the optional prepaid balance; nil means unmetered.
	CreditsRemaining *int64 `json:"credits_remaining,omitempty"`
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
	switch {
	case k.Status == authz.StatusRevoked || k.RevokedAt != nil && !now.Before(*k.RevokedAt):
		return StateRevoked
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return StateExpired
	case k.Status == authz.StatusInactive:
		return StateInactive
	}
	return StateActive
}

// storedKey is the bbolt value of a key: the public record and its hash,
// which is kept so that deletes can drop the hash index entry.
type storedKey struct {
	Key
	Hash []byte `json:"hash"`
}

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
	}
	if k.ExpiresAt != nil {
		c.ExpiresAt = *k.ExpiresAt
	}
	if k.RevokedAt != nil {
		c.RevokesAt = *k.RevokedAt
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
)

// validText accepts UTF-8 text without control characters, since names and
// ids are sent upstream as header values.
func validText(field, s string, max int, required bool) error {
	switch {
	case s == "" && required:
		return fmt.Errorf("%w: %s is required", ErrInvalid, field)
	case len(s) > max:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalid, field, max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, field)
	case s != strings.TrimSpace(s):
		return fmt.Errorf("%w: %s has leading or trailing space", ErrInvalid, field)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return fmt.Errorf("%w: %s contains a control character", ErrInvalid, field)
		}
	}
	return nil
}

// validScopes accepts scope names such as "vault:read" or "vault:*":
// letters, digits and ":._-*/", deduplicated in the order given.
func validScopes(scopes []string) ([]string, error) {
	if len(scopes) > maxScopes {
		return nil, fmt.Errorf("%w: more than %d scopes", ErrInvalid, maxScopes)
	}
	out := make([]string, 0, len(scopes))
	seen := map[string]bool{}
	for _, s := range scopes {
		if s == "" || len(s) > maxScopeLen {
			return nil, fmt.Errorf("%w: scope %q: want 1 to %d characters", ErrInvalid, s, maxScopeLen)
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":._-*/", c) >= 0) {
				return nil, fmt.Errorf("%w: scope %q: want letters, digits and \":._-*/\"", ErrInvalid, s)
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
		return fmt.Errorf("%w: more than %d metadata entries", ErrInvalid, maxMetadata)
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
		return fmt.Errorf("%w: environment %q: want %q or %q", ErrInvalid, env, apikey.EnvLive, apikey.EnvTest)
	}
	return nil
}
