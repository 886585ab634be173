package keystore

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore/apikey"
)

// KeySpec describes a key to create or import.
type KeySpec struct {
	TenantID string `json:"tenant_id"`
	OrgID    string `json:"org_id,omitempty"` // empty: a tenant-level key
	UserID   string `json:"user_id,omitempty"`
	Name     string `json:"name"`
	// Environment is "live" or "test". Empty: live (for an import of a key in
	// Keygate's format, the key's own environment).
	Environment string            `json:"environment,omitempty"`
	Tier        string            `json:"tier,omitempty"` // empty: the first configured tier
	Scopes      []string          `json:"scopes,omitempty"`
	ExpiresAt   *time.Time        `json:"expires_at,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// Slot, when set, names a slot of the tenant (and org) that holds one
	// key: creating a key in it revokes the key it held, in the same
	// transaction (Alloy Embedded's "Generate" button).
	Slot             string `json:"slot,omitempty"`
	CreditsRemaining *int64 `json:"credits_remaining,omitempty"`
	// AllowedCIDRs lists the client networks (CIDRs or bare addresses) the
	// key works from. Empty: any address.
	AllowedCIDRs []string `json:"allowed_cidrs,omitempty"`
	// Limits are the key's own named limits (see Key.Limits).
	Limits map[string]ratelimit.Limit `json:"limits,omitempty"`
	// Refill sets the key's credits to its amount on a schedule, from the
	// next boundary on (see Refill). A key with a schedule and no
	// CreditsRemaining starts with the amount.
	Refill *Refill `json:"refill,omitempty"`
}

// CreatedKey is a new key with its secret, which is returned this once and
// never stored. The secret prints and encodes redacted; whatever hands it to
// its holder (the admin API's answer) reveals it on purpose.
type CreatedKey struct {
	Key
	Secret apikey.Secret `json:"key"`
}

// Import describes an existing key brought over from another system, so its
// holder keeps a working key. Exactly one of Raw and SHA256 is set.
type Import struct {
	KeySpec
	// Raw is the key as its holder sends it.
	Raw apikey.Secret `json:"key,omitzero"`
	// SHA256 is the hex SHA-256 of the raw key, for systems that kept only
	// hashes.
	SHA256 string `json:"key_sha256,omitempty"`
	// DisplayPrefix is shown in lists for a hash import, which has no raw
	// key to take it from. Optional.
	DisplayPrefix string `json:"display_prefix,omitempty"`
}

// CreateKey generates and stores a new key.
func (s *Store) CreateKey(ctx context.Context, spec KeySpec) (CreatedKey, error) {
	if spec.Environment == "" {
		spec.Environment = apikey.EnvLive
	}
	if err := validEnv(spec.Environment); err != nil {
		return CreatedKey{}, fmt.Errorf("create key: %w", err)
	}
	raw, err := s.opts.Format.Generate(spec.Environment)
	if err != nil {
		return CreatedKey{}, fmt.Errorf("create key: %w", err)
	}
	k, err := s.insert(ctx, spec, apikey.HashOf(raw), apikey.DisplayPrefix(raw), false)
	if err != nil {
		return CreatedKey{}, fmt.Errorf("create key: %w", err)
	}
	return CreatedKey{Key: k, Secret: apikey.NewSecret(raw)}, nil
}

// ImportKey stores an existing key by its raw form or its SHA-256.
func (s *Store) ImportKey(ctx context.Context, im Import) (Key, error) {
	h, display, err := s.importHash(&im)
	if err != nil {
		return Key{}, fmt.Errorf("import key: %w", err)
	}
	k, err := s.insert(ctx, im.KeySpec, h, display, true)
	if err != nil {
		return Key{}, fmt.Errorf("import key: %w", err)
	}
	return k, nil
}

// importHash checks an import's key or hash and returns the hash and the
// display prefix; it settles im's environment (ImportKeys shares it).
func (s *Store) importHash(im *Import) (apikey.Hash, string, error) {
	var (
		h       apikey.Hash
		display string
		raw     = im.Raw.Reveal()
	)
	switch {
	case (raw == "") == (im.SHA256 == ""):
		return h, "", refuse(ErrInvalid, "give exactly one of key and key_sha256")
	case raw != "":
		if len(raw) > apikey.MaxLen || len(raw) < 16 {
			return h, "", refuse(ErrInvalid, "key must be 16 to %d bytes", apikey.MaxLen)
		}
		if !apikey.Plausible(raw) {
			return h, "", refuse(ErrInvalid, "key must be visible ASCII without ','")
		}
		if p, err := s.opts.Format.Parse(raw); err == nil {
			if im.Environment != "" && im.Environment != p.Env {
				return h, "", refuse(ErrInvalid, "environment %q contradicts the key's own %q", im.Environment, p.Env)
			}
			im.Environment = p.Env
		}
		h = apikey.HashOf(raw)
		display = apikey.DisplayPrefix(raw)
	default:
		b, err := hex.DecodeString(im.SHA256)
		if err != nil || len(b) != len(h) {
			return h, "", refuse(ErrInvalid, "key_sha256 must be 64 hex digits")
		}
		copy(h[:], b)
		if err := validText("display_prefix", im.DisplayPrefix, apikey.DisplayLen, false); err != nil {
			return h, "", err
		}
		display = im.DisplayPrefix
	}
	if im.Environment == "" {
		im.Environment = apikey.EnvLive
	}
	return h, display, nil
}

func (s *Store) validSpec(spec *KeySpec) error {
	if err := validText("tenant_id", spec.TenantID, maxIDLen, true); err != nil {
		return err
	}
	if err := validText("org_id", spec.OrgID, maxIDLen, false); err != nil {
		return err
	}
	if err := validText("user_id", spec.UserID, maxIDLen, false); err != nil {
		return err
	}
	if err := validText("name", spec.Name, maxNameLen, true); err != nil {
		return err
	}
	if err := validText("slot", spec.Slot, maxNameLen, false); err != nil {
		return err
	}
	if err := validEnv(spec.Environment); err != nil {
		return err
	}
	if spec.Tier == "" {
		spec.Tier = s.opts.Tiers[0]
	}
	if err := s.validTier(spec.Tier); err != nil {
		return err
	}
	scopes, err := validScopes(spec.Scopes)
	if err != nil {
		return err
	}
	spec.Scopes = scopes
	cidrs, err := validCIDRs(spec.AllowedCIDRs)
	if err != nil {
		return err
	}
	spec.AllowedCIDRs = cidrs
	if spec.Limits, err = validLimits(spec.Limits); err != nil {
		return err
	}
	if spec.CreditsRemaining != nil && *spec.CreditsRemaining < 0 {
		return refuse(ErrInvalid, "credits_remaining must not be negative")
	}
	if r, ok := s.opts.TierRefills[spec.Tier]; ok && spec.Refill == nil && spec.CreditsRemaining == nil {
		spec.Refill = &r
	}
	if spec.Refill != nil {
		r, err := validRefill(*spec.Refill)
		if err != nil {
			return err
		}
		spec.Refill = &r
		if spec.CreditsRemaining == nil {
			// A schedule refills a balance, so it needs one: it starts full.
			n := r.Amount
			spec.CreditsRemaining = &n
		}
	}
	return validMetadata(spec.Metadata)
}

func (s *Store) validTier(t string) error {
	for _, known := range s.opts.Tiers {
		if t == known {
			return nil
		}
	}
	return refuse(ErrInvalid, "tier %q: want one of %q", t, s.opts.Tiers)
}

// insert stores a new key record under hash h.
func (s *Store) insert(ctx context.Context, spec KeySpec, h apikey.Hash, display string, imported bool) (Key, error) {
	now := s.now()
	k, err := s.newKey(spec, h, display, imported, now)
	if err != nil {
		return Key{}, err
	}
	err = s.update(ctx, func(tx Tx, touch func(apikey.Hash)) error {
		return s.insertTx(tx, touch, &k, now)
	})
	if err != nil {
		return Key{}, err
	}
	return k.Key, nil
}

// newKey validates spec and builds the record of a new key under hash h.
func (s *Store) newKey(spec KeySpec, h apikey.Hash, display string, imported bool, now time.Time) (storedKey, error) {
	if err := s.validSpec(&spec); err != nil {
		return storedKey{}, err
	}
	if spec.ExpiresAt != nil {
		if !spec.ExpiresAt.After(now) {
			return storedKey{}, refuse(ErrInvalid, "expires_at is not in the future")
		}
		at := spec.ExpiresAt.UTC()
		spec.ExpiresAt = &at
	}
	id, err := newID()
	if err != nil {
		return storedKey{}, err
	}
	k := storedKey{Key: Key{
		ID:            id,
		Name:          spec.Name,
		DisplayPrefix: display,
		TenantID:      spec.TenantID,
		OrgID:         spec.OrgID,
		UserID:        spec.UserID,
		Environment:   spec.Environment,
		Tier:          spec.Tier,
		Scopes:        spec.Scopes,
		Status:        authz.StatusActive,
		Slot:          spec.Slot,
		Imported:      imported,
		CreatedAt:     now,
		ExpiresAt:     spec.ExpiresAt,
		Metadata:      spec.Metadata,
		Meter:         Meter{CreditsRemaining: spec.CreditsRemaining},
		AllowedCIDRs:  spec.AllowedCIDRs,
		Limits:        spec.Limits,
	}, Hash: h[:]}
	if spec.Refill != nil {
		// The balance given is this period's: the first refill is at the
		// next boundary.
		start := spec.Refill.periodStart(now)
		k.Refill, k.LastRefillAt = spec.Refill, &start
	}
	return k, nil
}

// insertTx stores k, a new key, in tx. Every check comes before the first
// write, so a refusal leaves tx as it was: ImportKeys goes on with the
// next line in the same transaction.
func (s *Store) insertTx(tx Tx, touch func(apikey.Hash), k *storedKey, now time.Time) error {
	// Only that the tenant exists: decoding its record for every line of
	// a bulk import was a tenth of the import's CPU.
	if v, err := tx.Get(bucketTenants, []byte(k.TenantID)); err != nil {
		return err
	} else if v == nil {
		return notFound("tenant", k.TenantID)
	}
	if k.OrgID != "" {
		o, err := getOrg(tx, k.OrgID)
		if err != nil {
			return err
		}
		if o.TenantID != k.TenantID {
			return refuse(ErrInvalid, "org %s belongs to another tenant", k.OrgID)
		}
	}
	if v, err := tx.Get(bucketHashes, k.Hash); err != nil {
		return err
	} else if v != nil {
		return refuse(ErrConflict, "this key is already stored")
	}
	var (
		held  storedKey
		found bool
	)
	if k.Slot != "" {
		var err error
		if held, found, err = slotHolder(tx, slotKey(&k.Key)); err != nil {
			return err
		}
	}
	if err := s.checkOrgLimit(tx, k.OrgID, now, held.ID); err != nil {
		return err
	}
	if found {
		if held.StateAt(now) != StateRevoked {
			revokeAt(&held.Key, now)
		}
		touch(apikey.Hash(held.Hash))
		if err := putKey(tx, &held, false); err != nil {
			return err
		}
	}
	touch(apikey.Hash(k.Hash))
	return putKey(tx, k, true)
}

func slotKey(k *Key) []byte { return []byte(k.TenantID + "/" + k.OrgID + "/" + k.Slot) }

// slotHolder returns the key a slot holds, if any.
func slotHolder(tx Tx, slot []byte) (storedKey, bool, error) {
	id, err := tx.Get(bucketSlots, slot)
	if id == nil || err != nil {
		return storedKey{}, false, err
	}
	k, err := getKey(tx, string(id))
	if err != nil {
		return storedKey{}, false, fmt.Errorf("slot %s: %w", slot, err)
	}
	return k, true, nil
}

func revokeAt(k *Key, now time.Time) {
	k.Status = authz.StatusRevoked
	k.RevokedAt = &now
}

// checkOrgLimit refuses one more usable key in an org that already holds
// the maximum; except is a key being replaced in the same transaction.
func (s *Store) checkOrgLimit(tx Tx, orgID string, now time.Time, except string) error {
	full, n, err := s.orgFull(tx, orgID, now, except)
	if err != nil || !full {
		return err
	}
	return refuse(ErrOrgKeyLimit, "org %s already has %d usable keys (revoke or deactivate one first)", orgID, n)
}

// orgFull reports whether org holds its maximum of usable keys, not
// counting except, and how many it holds. A key in its rotation grace
// period counts: it works exactly like an active key until the grace ends,
// and leaving it out let repeated rotations with a grace period keep
// twice the limit of working keys.
func (s *Store) orgFull(tx Tx, orgID string, now time.Time, except string) (bool, int, error) {
	if orgID == "" || s.opts.MaxOrgKeys < 0 {
		return false, 0, nil
	}
	n := 0
	err := s.scanIDs(tx, bucketKeysByOrg, orgID, func(id string) error {
		if id == except {
			return nil
		}
		k, err := getKey(tx, id)
		if err != nil {
			return err
		}
		if k.StateAt(now) == StateActive {
			n++
		}
		return nil
	})
	if err != nil {
		return false, 0, err
	}
	return n >= s.opts.MaxOrgKeys, n, nil
}

// putKey writes a key record; with index it also writes its index entries
// (for a new key).
func putKey(tx Tx, k *storedKey, index bool) error {
	if index {
		k.place = placeNone
	}
	if err := putKeyRecord(tx, k.ID, k); err != nil {
		return err
	}
	if !index {
		return nil
	}
	if err := tx.Put(bucketKeysByTenant, indexKey(k.TenantID, k.ID), []byte{}); err != nil {
		return err
	}
	if k.OrgID != "" {
		if err := tx.Put(bucketKeysByOrg, indexKey(k.OrgID, k.ID), []byte{}); err != nil {
			return err
		}
	}
	if k.Slot != "" {
		return tx.Put(bucketSlots, slotKey(&k.Key), []byte(k.ID))
	}
	return nil
}

// putKeyRecord writes the record of key id, k, under its hash, where a
// Check reads it. The keys bucket maps id to that hash: that is written
// for a new key, and for one read in a form of before schema 3, whose
// record under the id's text it replaces.
func putKeyRecord(tx Tx, id string, k *storedKey) error {
	if id != k.ID || len(k.Hash) != len(apikey.Hash{}) {
		return fmt.Errorf("encode key %s: record of key %q with a %d-byte hash", id, k.ID, len(k.Hash))
	}
	if err := recordTimesInRange(k); err != nil {
		return fmt.Errorf("encode key %s: %w", id, err)
	}
	if err := tx.Put(bucketHashes, k.Hash, encodeKeyRecord(nil, k)); err != nil {
		return err
	}
	if k.place == placeRef {
		return nil
	}
	if err := tx.Put(bucketKeys, idKey(id), encodeHashRef(k.Hash)); err != nil {
		return err
	}
	if k.place == placeByID && string(idKey(id)) != id {
		if err := tx.Delete(bucketKeys, []byte(id)); err != nil {
			return err
		}
	}
	k.place = placeRef
	return nil
}

// getKeyRecord reads the record of key id, in any form, into k: through
// the keys bucket's reference to its hash (schema 3), or in the keys
// bucket itself under the id's text (a store before schema 3, or
// upgraded part way).
func getKeyRecord(tx Tx, id string, k *storedKey) (bool, error) {
	raw, err := getByID(tx, id)
	if err != nil || raw == nil {
		*k = storedKey{}
		return false, err
	}
	h, ref, err := decodeHashRef(raw)
	switch {
	case err != nil:
		*k = storedKey{}
		return false, fmt.Errorf("key %s: %w", id, err)
	case !ref:
		if err := decodeKeyRecord(id, nil, raw, k); err != nil {
			return false, err
		}
		k.place = placeByID
		return true, nil
	}
	if raw, err = tx.Get(bucketHashes, h[:]); err != nil {
		*k = storedKey{}
		return false, err
	}
	switch {
	case raw == nil:
		// Deleted by an older build, which knows only the record by
		// id and the hash's entry: the key is gone.
		*k = storedKey{}
		return false, nil
	case !isHashedRecord(raw):
		*k = storedKey{}
		return false, fmt.Errorf("key %s: %w: its hash holds no record", id, errKeyRecord)
	}
	if err := decodeKeyRecord(id, h[:], raw, k); err != nil {
		return false, err
	}
	if k.ID != id {
		// Two ids naming one hash: the record is not this key's.
		*k = storedKey{}
		return false, fmt.Errorf("key %s: %w: its hash holds key %s", id, errKeyRecord, k.ID)
	}
	return true, nil
}

// getByID reads the keys bucket's value for key id: under its key
// (idKey), or under its text as stores before schema 3 wrote it.
func getByID(tx Tx, id string) ([]byte, error) {
	k := idKey(id)
	v, err := tx.Get(bucketKeys, k)
	if v != nil || err != nil || string(k) == id {
		return v, err
	}
	return tx.Get(bucketKeys, []byte(id))
}

func getKey(tx Tx, id string) (storedKey, error) {
	var k storedKey
	found, err := getKeyRecord(tx, id, &k)
	if err != nil {
		return storedKey{}, err
	}
	if !found {
		return storedKey{}, notFound("key", id)
	}
	if len(k.Hash) != len(apikey.Hash{}) {
		return storedKey{}, fmt.Errorf("key %q: stored hash has %d bytes", id, len(k.Hash))
	}
	return k, nil
}

// Key returns one key.
func (s *Store) Key(ctx context.Context, id string) (Key, error) {
	var k storedKey
	err := s.view(ctx, func(tx Tx) error {
		var err error
		k, err = getKey(tx, id)
		return err
	})
	if err != nil {
		return Key{}, fmt.Errorf("get key: %w", err)
	}
	s.overlayCredits(&k.Key)
	return k.Key, nil
}

// overlayCredits shows the balance as this process can spend it: the
// record's remaining plus this process's unspent slice. Other replicas'
// slices are in CreditsReserved, not counted (what they spent of them is
// not known). A refill that fell due is shown applied (exactly its amount:
// the slices of the period before are void).
func (s *Store) overlayCredits(k *Key) { s.overlayMeter(k.ID, &k.Meter) }

// overlayMeter shows the balance of the record id (a key's or an
// account's) as this process sees it: a due refill as applied, else the
// record's balance plus this process's unspent slice.
func (s *Store) overlayMeter(id string, m *Meter) {
	if m.CreditsRemaining == nil || overlayRefill(m, s.now()) {
		return
	}
	left := *m.CreditsRemaining + s.ledger.held(id, m.CreditsEpoch)
	m.CreditsRemaining = &left
}

// KeyUpdate lists the fields to change; nil fields stay as they are.
type KeyUpdate struct {
	Name   *string       `json:"name,omitempty"`
	Scopes *[]string     `json:"scopes,omitempty"`
	Tier   *string       `json:"tier,omitempty"`
	Status *authz.Status `json:"status,omitempty"` // active or inactive; revoke with RevokeKey
	// ExpiresAt sets the expiry; ClearExpiry removes it.
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	ClearExpiry bool       `json:"clear_expiry,omitempty"`
	// AllowedCIDRs replaces the key's IP allowlist; an empty list removes
	// it, so the key works from any address again.
	AllowedCIDRs *[]string `json:"allowed_cidrs,omitempty"`
	// Limits replaces the key's own named limits; an empty map removes
	// them, so the tier's apply unchanged.
	Limits *map[string]ratelimit.Limit `json:"limits,omitempty"`
	// Refill sets the credit refill schedule, from the next boundary on (a
	// refill the old schedule had due is applied first); an unmetered key
	// starts with the amount. ClearRefill removes the schedule and leaves
	// the balance.
	Refill      *Refill `json:"refill,omitempty"`
	ClearRefill bool    `json:"clear_refill,omitempty"`
}

// UpdateKey changes a key's settings. The next lookup of the key sees them.
func (s *Store) UpdateKey(ctx context.Context, id string, u KeyUpdate) (Key, error) {
	now := s.now()
	if u.ExpiresAt != nil && u.ClearExpiry {
		return Key{}, fmt.Errorf("update key: %w", refuse(ErrInvalid, "expires_at and clear_expiry together"))
	}
	if u.ExpiresAt != nil && !u.ExpiresAt.After(now) {
		return Key{}, fmt.Errorf("update key: %w", refuse(ErrInvalid, "expires_at is not in the future (deactivate or revoke the key instead)"))
	}
	if u.Refill != nil && u.ClearRefill {
		return Key{}, fmt.Errorf("update key: %w", refuse(ErrInvalid, "refill and clear_refill together"))
	}
	var out Key
	err := s.modify(ctx, id, func(tx Tx, k *storedKey) error {
		before := k.StateAt(now)
		if before == StateRevoked {
			return refuse(ErrConflict, "key %s is revoked and cannot change", id)
		}
		if u.Name != nil {
			if err := validText("name", *u.Name, maxNameLen, true); err != nil {
				return err
			}
			k.Name = *u.Name
		}
		if u.Scopes != nil {
			scopes, err := validScopes(*u.Scopes)
			if err != nil {
				return err
			}
			k.Scopes = scopes
		}
		if u.AllowedCIDRs != nil {
			cidrs, err := validCIDRs(*u.AllowedCIDRs)
			if err != nil {
				return err
			}
			k.AllowedCIDRs = cidrs
		}
		if u.Limits != nil {
			limits, err := validLimits(*u.Limits)
			if err != nil {
				return err
			}
			k.Limits = limits
		}
		if u.Refill != nil || u.ClearRefill {
			if err := setRefill(k, u.Refill, now); err != nil {
				return err
			}
		}
		if u.Tier != nil {
			if err := s.validTier(*u.Tier); err != nil {
				return err
			}
			k.Tier = *u.Tier
		}
		if u.ExpiresAt != nil {
			at := u.ExpiresAt.UTC()
			k.ExpiresAt = &at
		}
		if u.ClearExpiry {
			k.ExpiresAt = nil
		}
		if u.Status != nil {
			switch *u.Status {
			case authz.StatusActive, authz.StatusInactive:
				k.Status = *u.Status
			default:
				return refuse(ErrInvalid, "status %q: want active or inactive (revoke a key with revoke)", *u.Status)
			}
		}
		// Reactivating and un-expiring both bring a key back into the
		// org's count of active keys.
		if before != StateActive && k.StateAt(now) == StateActive {
			if err := s.checkOrgLimit(tx, k.OrgID, now, k.ID); err != nil {
				return err
			}
		}
		out = k.Key
		return nil
	})
	if err != nil {
		return Key{}, fmt.Errorf("update key: %w", err)
	}
	if u.Refill != nil || u.ClearRefill {
		// The ledger's next boundary, and a refill applied (bbolt has no
		// follower to say so).
		s.ledger.rebase(id, &out.Meter, out.CreditsOwner)
	}
	return out, nil
}

// RevokeKey revokes a key at once; it stops working on the next lookup.
// Revoking a revoked key changes nothing and is not an error.
func (s *Store) RevokeKey(ctx context.Context, id string) (Key, error) {
	now := s.now()
	var out Key
	err := s.modify(ctx, id, func(_ Tx, k *storedKey) error {
		if k.Status != authz.StatusRevoked || k.RevokedAt == nil || k.RevokedAt.After(now) {
			revokeAt(&k.Key, now)
		}
		out = k.Key
		return nil
	})
	if err != nil {
		return Key{}, fmt.Errorf("revoke key: %w", err)
	}
	return out, nil
}

// RotateKey creates a new key with the old one's settings and revokes the
// old one, at once when grace is zero or when the grace period ends. The new
// key keeps the old one's lifetime (expiry minus creation) and slot.
func (s *Store) RotateKey(ctx context.Context, id string, grace time.Duration) (CreatedKey, error) {
	if grace < 0 {
		return CreatedKey{}, fmt.Errorf("rotate key: %w", refuse(ErrInvalid, "negative grace period"))
	}
	if limit := s.opts.MaxRotationGrace; limit >= 0 && grace > limit {
		return CreatedKey{}, fmt.Errorf("rotate key: %w", refuse(ErrInvalid, "grace period %s is longer than the maximum of %s", shortDuration(grace), shortDuration(limit)))
	}
	now := s.now()
	nid, err := newID()
	if err != nil {
		return CreatedKey{}, fmt.Errorf("rotate key: %w", err)
	}
	var (
		out  CreatedKey
		move creditMove
	)
	err = s.modifyTouch(ctx, id, func(tx Tx, touch func(apikey.Hash), old *storedKey) error {
		move = creditMove{}
		if old.StateAt(now) == StateRevoked {
			return refuse(ErrConflict, "key %s is revoked", id)
		}
		if old.RotatedTo != "" {
			// Rotating again would move its end of grace and lose its
			// successor; rotate the successor instead.
			return refuse(ErrConflict, "key %s was already rotated to %s", id, old.RotatedTo)
		}
		raw, err := s.opts.Format.Generate(old.Environment)
		if err != nil {
			return err
		}
		h := apikey.HashOf(raw)
		n := storedKey{Key: old.Key, Hash: h[:]}
		n.ID, n.DisplayPrefix, n.CreatedAt = nid, apikey.DisplayPrefix(raw), now
		n.Imported, n.LastUsedAt, n.RevokedAt, n.RotatedTo, n.RotatedFrom = false, nil, nil, "", ""
		n.Scopes = append([]string(nil), old.Scopes...)
		// The successor of a key locked to some networks is locked to the
		// same ones: rotating must not widen where a key works.
		n.AllowedCIDRs = slices.Clone(old.AllowedCIDRs)
		if old.ExpiresAt != nil {
			at := now.Add(old.ExpiresAt.Sub(old.CreatedAt))
			n.ExpiresAt = &at
		}
		if err := s.checkRotationSlot(tx, old, &n, now, grace); err != nil {
			return err
		}
		if grace == 0 {
			revokeAt(&old.Key, now)
		} else {
			at := now.Add(grace)
			old.RevokedAt = &at
		}
		old.RotatedTo = n.ID
		n.RotatedFrom = old.ID
		if move, err = s.moveCredits(tx, touch, old, &n, now); err != nil {
			return err
		}
		if err := putKey(tx, &n, true); err != nil {
			return err
		}
		out = CreatedKey{Key: n.Key, Secret: apikey.NewSecret(raw)}
		return nil
	})
	if err != nil {
		return CreatedKey{}, fmt.Errorf("rotate key: %w", err)
	}
	s.ledger.moved(move)
	s.overlayCredits(&out.Key)
	return out, nil
}

// checkRotationSlot refuses a rotation that would add a usable key to a
// full org. Rotating a usable key without grace replaces it in place and
// is always allowed, so a full org can still rotate a key that leaked.
// With a grace period both keys work until it ends, so the successor needs
// a free place, as creating it by hand would. Rotating a key that is not
// usable (expired) yields one that is, which counts like a new key.
func (s *Store) checkRotationSlot(tx Tx, old, n *storedKey, now time.Time, grace time.Duration) error {
	if n.StateAt(now) != StateActive {
		return nil // the successor of an inactive key is inactive
	}
	replaced := old.StateAt(now) == StateActive && grace == 0
	if replaced {
		return nil
	}
	full, count, err := s.orgFull(tx, old.OrgID, now, "")
	if err != nil || !full {
		return err
	}
	if grace > 0 && old.StateAt(now) == StateActive {
		return refuse(ErrOrgKeyLimit, "org %s already has %d usable keys, and the old key would keep working beside the new one for the grace period: rotate without a grace period (the old key stops at once), or revoke or deactivate another key first", old.OrgID, count)
	}
	return refuse(ErrOrgKeyLimit, "org %s already has %d usable keys, and key %s is not usable, so its successor would be one more (revoke or deactivate one first)", old.OrgID, count, old.ID)
}

// shortDuration writes d without zero minutes and seconds ("168h", not
// "168h0m0s"), as an operator would.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// DeleteKey removes a key and its index entries. Unlike revocation it leaves
// no record; the key is then unknown ("Invalid API key").
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	err := s.update(ctx, func(tx Tx, touch func(apikey.Hash)) error {
		k, err := getKey(tx, id)
		if err != nil {
			return err
		}
		touch(apikey.Hash(k.Hash))
		type entry struct {
			bucket string
			key    []byte
		}
		dels := []entry{{bucketKeys, idKey(id)}, {bucketHashes, k.Hash}, {bucketKeysByTenant, indexKey(k.TenantID, id)}}
		if k.OrgID != "" {
			dels = append(dels, entry{bucketKeysByOrg, indexKey(k.OrgID, id)})
		}
		if k.place == placeByID {
			// Its entries as stores before schema 3 wrote them.
			dels = append(dels, entry{bucketKeys, []byte(id)}, entry{bucketKeysByTenant, []byte(k.TenantID + "/" + id)})
			if k.OrgID != "" {
				dels = append(dels, entry{bucketKeysByOrg, []byte(k.OrgID + "/" + id)})
			}
		}
		for _, d := range dels {
			if err := tx.Delete(d.bucket, d.key); err != nil {
				return err
			}
		}
		if k.Slot != "" {
			held, err := tx.Get(bucketSlots, slotKey(&k.Key))
			if err != nil {
				return err
			}
			if bytes.Equal(held, []byte(id)) {
				return tx.Delete(bucketSlots, slotKey(&k.Key))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete key: %w", err)
	}
	return nil
}

// modify runs fn on a stored key inside a write transaction, writes it back
// and invalidates its cache entry before returning.
func (s *Store) modify(ctx context.Context, id string, fn func(tx Tx, k *storedKey) error) error {
	return s.modifyTouch(ctx, id, func(tx Tx, _ func(apikey.Hash), k *storedKey) error { return fn(tx, k) })
}

// modifyTouch is modify for changes that touch other keys too.
func (s *Store) modifyTouch(ctx context.Context, id string, fn func(tx Tx, touch func(apikey.Hash), k *storedKey) error) error {
	return s.update(ctx, func(tx Tx, touch func(apikey.Hash)) error {
		k, err := getKey(tx, id)
		if err != nil {
			return err
		}
		if err := fn(tx, touch, &k); err != nil {
			return err
		}
		touch(apikey.Hash(k.Hash))
		return putKey(tx, &k, false)
	})
}

// moveCredits hands a rotated key's balance to its successor: the old key,
// during its grace period, spends the successor's balance, so one balance
// is never spent twice. The record moves whole (remaining, epoch, and the
// slices processes hold, which they then spend and return as the
// successor's). Keys that spent the old key's balance (its own
// predecessors, still in grace) follow to the successor. It changes only
// the transaction; the ledger follows with ledger.moved after commit.
func (s *Store) moveCredits(tx Tx, touch func(apikey.Hash), old, n *storedKey, now time.Time) (creditMove, error) {
	if old.CreditsRemaining == nil {
		return creditMove{}, nil
	}
	n.CreditsRemaining, n.CreditsEpoch, n.CreditsReserved, n.CreditsOwner = old.CreditsRemaining, old.CreditsEpoch, old.CreditsReserved, ""
	old.CreditsRemaining, old.CreditsEpoch, old.CreditsReserved, old.CreditsOwner = nil, 0, nil, n.ID
	// The schedule refills the balance, so it moves with it.
	old.Refill, old.LastRefillAt = nil, nil
	// Walk back along the rotation chain while its keys are in grace: only
	// those can still spend. Pointing them at the successor keeps their
	// owner chain short; a key the walk misses (rotated before rotated_from
	// was recorded) still reaches the balance through the old key's
	// credits_owner, which reservations and returns follow.
	for id, hops := old.RotatedFrom, 0; id != "" && hops < 64; hops++ {
		k, err := getKey(tx, id)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return creditMove{}, err
		}
		if k.StateAt(now) == StateRevoked {
			break
		}
		if k.CreditsOwner == old.ID {
			k.CreditsOwner = n.ID
			touch(apikey.Hash(k.Hash))
			if err := putKey(tx, &k, false); err != nil {
				return creditMove{}, err
			}
		}
		id = k.RotatedFrom
	}
	return creditMove{from: old.ID, to: n.ID}, nil
}
