package keystore

import (
	"encoding/json"
	"reflect"

	"github.com/keygate/keygate/keystore/apikey"
)

// follower applies writes made through a shared backend, by any replica, to
// this store's cache and in-memory views. The writing replica's own
// update invalidates too; both are harmless together.
type follower struct{ s *Store }

func (f follower) Changed(bucket string, key, value, prev []byte) {
	s := f.s
	switch bucket {
	case bucketHashes:
		if len(key) != len(apikey.Hash{}) {
			return
		}
		h := apikey.Hash(key)
		if value == nil {
			s.legacy.moved(h) // gone: no detour through its id
		}
		if !isHashedRecord(value) && !isHashedRecord(prev) {
			// An index entry of before schema 3, or a delete whose value
			// before is not known: a new hash must not stay in the
			// negative cache, a removed one not in the positive. (The
			// same write deletes the key's id, which rebases its credits.)
			s.cache.invalidate(h)
			return
		}
		cur, curOK := decodeKey(nil, key, value)
		old, oldOK := decodeKey(nil, key, prev)
		f.keyChanged(value, cur, curOK, old, oldOK)
		if value != nil && !curOK {
			// The record under h cannot be read: h is the one credential
			// it could be.
			s.cache.invalidate(h)
		}
	case bucketKeys:
		if h, ref, _ := decodeHashRef(value); ref {
			// The record's own write is followed under its hash; this
			// one ends a detour through the id, if any.
			s.legacy.moved(h)
			s.cache.invalidate(h)
			return
		}
		if value == nil {
			if _, ref, _ := decodeHashRef(prev); ref {
				// A key deleted (its record goes in the same write).
				if id, err := decodeIndexID(key); err == nil {
					s.ledger.rebase(id, nil, "")
				}
			} else if old, ok := decodeKey(key, nil, prev); ok && len(old.Hash) == len(apikey.Hash{}) {
				// A record by id gone: moved under its hash, whose own
				// write carries its credits, or deleted by an older
				// build, whose delete of the hash's entry is followed
				// too. Either way, not a reason to forget a live balance.
				s.cache.invalidate(apikey.Hash(old.Hash))
			}
			return
		}
		// A record as stores before schema 3 kept it, by id: written by
		// an older build, once this one has upgraded the store.
		cur, curOK := decodeKey(key, nil, value)
		old, oldOK := decodeKey(key, nil, prev)
		if curOK && len(cur.Hash) == len(apikey.Hash{}) {
			s.legacy.wrote(s, apikey.Hash(cur.Hash), cur.ID)
		}
		f.keyChanged(value, cur, curOK, old, oldOK)
		if !curOK {
			// A record that cannot be read names no hash to invalidate.
			s.cache.invalidateAll()
		}
	case bucketOrgs:
		s.orgTenants.Delete(string(key))
	case bucketAccounts:
		if value != nil {
			s.anyAccounts.some()
		}
		var a Account
		switch {
		case value != nil && json.Unmarshal(value, &a) == nil:
			s.ledger.rebase(string(key), &a.Meter, "")
		default:
			s.ledger.rebase(string(key), nil, "")
		}
		// An account opened or closed changes which balances its owner's
		// keys spend: their cached credentials list them. One granted to a
		// new tenant or org has no keys yet, and a new user's grant comes
		// with the user record's write, which invalidates by itself: so a
		// sign-up does not empty every replica's cache.
		if value == nil || prev == nil && a.GrantedAt == nil {
			s.cache.invalidateAll()
		}
	case bucketUsers:
		if value != nil {
			s.anyUsers.some()
		}
		// Any key may be the user's (keys are not indexed by user), and
		// its credential carries the user's limits.
		s.cache.invalidateAll()
	}
}

func (f follower) Reset() {
	f.s.resets.Add(1)
	f.s.cache.invalidateAll()
	f.s.orgTenants.Clear()
	f.s.ledger.forget()
	// Records written while not followed may be the first of their kind.
	f.s.anyAccounts.forget()
	f.s.anyUsers.forget()
}

// keyChanged applies a followed write of a key's record (value, decoded
// as cur: nil if deleted or unreadable; old, the record before when
// known) to the credits ledger and the cache.
func (f follower) keyChanged(value []byte, cur *storedKey, curOK bool, old *storedKey, oldOK bool) {
	s := f.s
	switch {
	case curOK:
		s.ledger.rebase(cur.ID, &cur.Meter, cur.CreditsOwner)
	case value == nil && oldOK:
		s.ledger.rebase(old.ID, nil, "")
	}
	// Last-used times and credit reservations are written often for
	// every busy key; they change no credential, so they leave the
	// cache alone, which is what keeps replicas' hit rates up.
	if curOK && oldOK && reflect.DeepEqual(cur.credential(), old.credential()) {
		return
	}
	for _, k := range []*storedKey{cur, old} {
		if k != nil && len(k.Hash) == len(apikey.Hash{}) {
			s.cache.invalidate(apikey.Hash(k.Hash))
		}
	}
}

// decodeKey reads a followed key record, in any form: by id (before
// schema 3; an older replica may still write JSON) or under its hash.
func decodeKey(id, hash, raw []byte) (*storedKey, bool) {
	if raw == nil {
		return nil, false
	}
	var k storedKey
	if decodeKeyRecord(string(id), hash, raw, &k) != nil {
		return nil, false
	}
	return &k, true
}
