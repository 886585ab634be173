package keystore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore/apikey"
)

// User is an identity: the user_id keys carry, within one tenant, with the
// limits all of that user's keys share, so that a customer cannot multiply
// its budget by creating more keys. A key's user_id needs no record; one
// without a record gets the configured per-user limits.
type User struct {
	TenantID string `json:"tenant_id"`
	// ID is the user_id the user's keys carry.
	ID       string            `json:"id"`
	Name     string            `json:"name,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Limits replace the configured per-user limit of the same name or add
	// to them; one with requests 0 turns that default off for this user.
	Limits    map[string]ratelimit.Limit `json:"limits,omitempty"`
	CreatedAt time.Time                  `json:"created_at"`
	UpdatedAt time.Time                  `json:"updated_at"`
}

// UserSpec is what PutUser stores: the whole record, replacing the last.
type UserSpec struct {
	Name     string                     `json:"name,omitempty"`
	Metadata map[string]string          `json:"metadata,omitempty"`
	Limits   map[string]ratelimit.Limit `json:"limits,omitempty"`
}

// UserPage is one page of a tenant's users, by user id.
type UserPage struct {
	Users      []User `json:"data"`
	NextCursor string `json:"next_cursor,omitempty"`
	HasMore    bool   `json:"has_more"`
}

// userKey is a user's key in bucketUsers: "<tenant id>/<user id>". Tenant
// ids are generated UUIDs and never hold a '/' (validTenantRef refuses one
// that does), so the first '/' splits the two however the user id is
// spelt, and "<tenant id>/" prefixes exactly that tenant's users.
func userKey(tenantID, userID string) []byte { return []byte(tenantID + "/" + userID) }

// validUserRef checks the ids naming a user record.
func validUserRef(tenantID, userID string) error {
	if err := validText("tenant_id", tenantID, maxIDLen, true); err != nil {
		return err
	}
	if strings.Contains(tenantID, "/") {
		return notFound("tenant", tenantID)
	}
	return validText("user_id", userID, maxIDLen, true)
}

// PutUser creates or replaces the record of userID within an existing
// tenant, and reports whether it created it. Every cached credential is
// dropped once it commits, on every replica: any key may be the user's,
// and a changed limit applies from the next request.
func (s *Store) PutUser(ctx context.Context, tenantID, userID string, spec UserSpec) (User, bool, error) {
	if err := validUserRef(tenantID, userID); err != nil {
		return User{}, false, fmt.Errorf("put user: %w", err)
	}
	if err := validText("name", spec.Name, maxNameLen, false); err != nil {
		return User{}, false, fmt.Errorf("put user: %w", err)
	}
	if err := validMetadata(spec.Metadata); err != nil {
		return User{}, false, fmt.Errorf("put user: %w", err)
	}
	limits, err := validLimits(spec.Limits)
	if err != nil {
		return User{}, false, fmt.Errorf("put user: %w", err)
	}
	now := s.now()
	var (
		out     User
		created bool
	)
	err = s.updateUsers(ctx, func(tx Tx) error {
		if _, err := getTenant(tx, tenantID); err != nil {
			return err
		}
		u := User{TenantID: tenantID, ID: userID, Name: spec.Name, Metadata: spec.Metadata, Limits: limits, CreatedAt: now, UpdatedAt: now}
		var old User
		found, err := getJSON(tx, bucketUsers, string(userKey(tenantID, userID)), &old)
		if err != nil {
			return err
		}
		if found {
			u.CreatedAt = old.CreatedAt
		}
		out, created = u, !found
		if err := putJSON(tx, bucketUsers, string(userKey(tenantID, userID)), &u); err != nil {
			return err
		}
		if !created {
			return nil
		}
		// A user whose account exists (opened by hand before the record)
		// keeps it: the grant is for owners new to Keygate.
		v, err := tx.Get(bucketAccounts, []byte(Owner{Kind: AccountUser, TenantID: tenantID, UserID: userID}.ID()))
		if err != nil || v != nil {
			return err
		}
		return s.grant(tx, Owner{Kind: AccountUser, TenantID: tenantID, UserID: userID}, now)
	})
	if err != nil {
		return User{}, false, fmt.Errorf("put user: %w", err)
	}
	return out, created, nil
}

// User returns the record of userID within tenantID.
func (s *Store) User(ctx context.Context, tenantID, userID string) (User, error) {
	if err := validUserRef(tenantID, userID); err != nil {
		return User{}, fmt.Errorf("get user: %w", err)
	}
	var u User
	err := s.view(ctx, func(tx Tx) error {
		if _, err := getTenant(tx, tenantID); err != nil {
			return err
		}
		found, err := getJSON(tx, bucketUsers, string(userKey(tenantID, userID)), &u)
		if err != nil {
			return err
		}
		if !found {
			return notFound("user", userID)
		}
		return nil
	})
	if err != nil {
		return User{}, fmt.Errorf("get user: %w", err)
	}
	return u, nil
}

// ListUsers returns one page of a tenant's users in user id order. The
// cursor is the last user id of the previous page, so users added while a
// client pages through are listed if they sort after it, and none is
// listed twice. limit 0 is 50; at most 1000.
func (s *Store) ListUsers(ctx context.Context, tenantID, cursor string, limit int) (UserPage, error) {
	switch {
	case limit == 0:
		limit = defaultPageSize
	case limit < 0 || limit > maxPageSize:
		return UserPage{}, fmt.Errorf("list users: %w", refuse(ErrInvalid, "limit must be 1 to %d", maxPageSize))
	}
	if err := validText("tenant_id", tenantID, maxIDLen, true); err != nil {
		return UserPage{}, fmt.Errorf("list users: %w", err)
	}
	if strings.Contains(tenantID, "/") {
		return UserPage{}, fmt.Errorf("list users: %w", notFound("tenant", tenantID))
	}
	page := UserPage{Users: []User{}}
	err := s.view(ctx, func(tx Tx) error {
		if _, err := getTenant(tx, tenantID); err != nil {
			return err
		}
		prefix := userKey(tenantID, "")
		start := userKey(tenantID, cursor)
		return tx.Scan(bucketUsers, prefix, start, func(k, v []byte) (bool, error) {
			if cursor != "" && bytes.Equal(k, start) {
				return true, nil
			}
			if len(page.Users) == limit {
				page.HasMore = true
				page.NextCursor = page.Users[len(page.Users)-1].ID
				return false, nil
			}
			u, err := decodeUser(k, v)
			if err != nil {
				return false, err
			}
			page.Users = append(page.Users, u)
			return true, nil
		})
	})
	if err != nil {
		return UserPage{}, fmt.Errorf("list users: %w", err)
	}
	return page, nil
}

// DeleteUser removes a user's record; the user's keys keep working, under
// the configured per-user limits.
func (s *Store) DeleteUser(ctx context.Context, tenantID, userID string) error {
	if err := validUserRef(tenantID, userID); err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	err := s.updateUsers(ctx, func(tx Tx) error {
		if _, err := getTenant(tx, tenantID); err != nil {
			return err
		}
		k := userKey(tenantID, userID)
		v, err := tx.Get(bucketUsers, k)
		if err != nil {
			return err
		}
		if v == nil {
			return notFound("user", userID)
		}
		return tx.Delete(bucketUsers, k)
	})
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	return nil
}

// updateUsers is update for writes to user records. Which keys a user
// has is not indexed, and a lookup reads the user record beside the key's,
// so every cached credential goes; user writes are rare admin actions.
// Like update, it invalidates even after a failed commit, which may have
// landed.
func (s *Store) updateUsers(ctx context.Context, fn func(tx Tx) error) error {
	s.anyUsers.some()
	err := s.update(ctx, func(tx Tx, _ func(apikey.Hash)) error { return fn(tx) })
	s.cache.invalidateAll()
	return err
}

func decodeUser(k, v []byte) (User, error) {
	var u User
	if err := json.Unmarshal(v, &u); err != nil {
		return User{}, fmt.Errorf("decode record %s: %w", k, err)
	}
	return u, nil
}

// userLimits reads the limits of a key's user for its credential: nil
// when the key names no user, or the user has no record or no limits.
func (s *Store) userLimits(tx Tx, tenantID, userID string) ([]authz.NamedLimit, error) {
	if userID == "" {
		return nil, nil
	}
	if none, err := s.anyUsers.none(tx, bucketUsers); none || err != nil {
		return nil, err
	}
	// On every uncached Check of a user's key: one allocation for the
	// record's key, and none more when the user has no record.
	k := make([]byte, 0, len(tenantID)+1+len(userID))
	k = append(append(append(k, tenantID...), '/'), userID...)
	raw, err := tx.Get(bucketUsers, k)
	if err != nil || raw == nil {
		return nil, err
	}
	var u User
	if err := json.Unmarshal(raw, &u); err != nil {
		return nil, fmt.Errorf("decode record %s: %w", k, err)
	}
	return namedLimits(u.Limits), nil
}

// namedLimits is a set of limits as a credential holds it: sorted by name,
// so that equal sets compare equal and headers list them in a stable
// order. Empty: nil.
func namedLimits(m map[string]ratelimit.Limit) []authz.NamedLimit {
	if len(m) == 0 {
		return nil
	}
	out := make([]authz.NamedLimit, 0, len(m))
	for _, name := range slices.Sorted(maps.Keys(m)) {
		out = append(out, authz.NamedLimit{Name: name, Limit: m[name]})
	}
	return out
}

// validLimits checks a key's or a user's own limits, which override a
// default set: each named as ratelimit.ValidName wants, at most
// ratelimit.MaxNamed, each a limit that works, or requests 0, which turns
// the default of that name off (its other fields are then dropped). An
// empty set is nil, so that the record omits it.
func validLimits(m map[string]ratelimit.Limit) (map[string]ratelimit.Limit, error) {
	if len(m) > ratelimit.MaxNamed {
		return nil, refuse(ErrInvalid, "more than %d limits", ratelimit.MaxNamed)
	}
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]ratelimit.Limit, len(m))
	for _, name := range slices.Sorted(maps.Keys(m)) {
		if err := ratelimit.ValidName(name); err != nil {
			return nil, refuse(ErrInvalid, "limits: %v", err)
		}
		l := m[name]
		switch {
		case l.Requests == 0:
			l = ratelimit.Limit{}
		case l.Requests < 0:
			return nil, refuse(ErrInvalid, "limit %q: requests %d: want at least 1, or 0 to turn the limit off", name, l.Requests)
		default:
			if err := l.Validate(); err != nil {
				return nil, refuse(ErrInvalid, "limit %q: %v", name, err)
			}
		}
		out[name] = l
	}
	return out, nil
}
