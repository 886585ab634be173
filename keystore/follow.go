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
		// A new hash (a created or imported key) must not stay in the
		// negative cache; a removed one must not stay in the positive.
		if len(key) == len(apikey.Hash{}) {
			s.cache.invalidate(apikey.Hash(key))
		}
	case bucketKeys:
		cur, curOK := decodeKey(key, value)
		old, oldOK := decodeKey(key, prev)
		switch {
		case curOK:
			s.ledger.rebase(cur.ID, &cur.Meter, cur.CreditsOwner)
		case value == nil && len(key) > 0:
			s.ledger.rebase(string(key), nil, "")
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
		if value != nil && !curOK {
			// A record that cannot be read names no hash to invalidate. (A
			// delete without its previous value needs nothing here: the
			// same transaction deletes the hash index entry.)
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
}

// decodeKey reads a followed key record, in either form: an older
// replica may still write JSON.
func decodeKey(id, raw []byte) (*storedKey, bool) {
	if raw == nil {
		return nil, false
	}
	var k storedKey
	if decodeKeyRecord(string(id), raw, &k) != nil {
		return nil, false
	}
	return &k, true
}
