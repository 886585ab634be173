package keystore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
)

// ListFilter selects keys to list. Zero fields select everything.
type ListFilter struct {
	TenantID string
	OrgID    string
	// State filters by the key's state now (active, inactive, revoked,
	// expired). Empty: any.
	State State
	// Cursor is the NextCursor of the previous page; empty for the first.
	Cursor string
	// Limit is the page size. Zero: 50. At most 1000.
	Limit int
}

// Page is one page of a key listing, in creation order.
type Page struct {
	Keys       []Key  `json:"data"`
	NextCursor string `json:"next_cursor,omitempty"`
	HasMore    bool   `json:"has_more"`
}

const (
	defaultPageSize = 50
	maxPageSize     = 1000
)

// ListKeys returns one page of keys. Key ids sort by creation time, and the
// cursor is the last id of the page, so keys created while a client pages
// through appear at the end and none is skipped or repeated.
func (s *Store) ListKeys(ctx context.Context, f ListFilter) (Page, error) {
	switch {
	case f.Limit == 0:
		f.Limit = defaultPageSize
	case f.Limit < 0 || f.Limit > maxPageSize:
		return Page{}, fmt.Errorf("list keys: %w", refuse(ErrInvalid, "limit must be 1 to %d", maxPageSize))
	}
	switch f.State {
	case "", StateActive, StateInactive, StateRevoked, StateExpired:
	default:
		return Page{}, fmt.Errorf("list keys: %w", refuse(ErrInvalid, "status %q: want active, inactive, revoked or expired", f.State))
	}
	now := s.now()
	page := Page{Keys: []Key{}}
	err := s.view(ctx, func(tx Tx) error {
		// Walk the narrowest index: an org's keys, a tenant's, or all.
		bucket, prefix := bucketKeys, []byte(nil)
		switch {
		case f.OrgID != "":
			bucket, prefix = bucketKeysByOrg, s.indexPrefix(f.OrgID)
		case f.TenantID != "":
			bucket, prefix = bucketKeysByTenant, s.indexPrefix(f.TenantID)
		}
		var start []byte
		if f.Cursor != "" {
			start = append(append(start, prefix...), s.idKeyOf(f.Cursor)...)
		}
		return tx.Scan(bucket, prefix, start, func(ik, _ []byte) (bool, error) {
			if start != nil && bytes.Equal(ik, start) {
				return true, nil
			}
			id, err := s.indexID(ik[len(prefix):])
			if err != nil {
				return false, err
			}
			k, err := getKey(tx, id)
			if errors.Is(err, ErrNotFound) {
				// An index entry left by a delete of an older build
				// (which wrote the entries in another form).
				return true, nil
			}
			if err != nil {
				return false, err
			}
			if f.TenantID != "" && k.TenantID != f.TenantID || f.State != "" && k.StateAt(now) != f.State {
				return true, nil
			}
			if len(page.Keys) == f.Limit {
				page.HasMore = true
				page.NextCursor = page.Keys[len(page.Keys)-1].ID
				return false, nil
			}
			s.overlayCredits(&k.Key)
			page.Keys = append(page.Keys, k.Key)
			return true, nil
		})
	})
	if err != nil {
		return Page{}, fmt.Errorf("list keys: %w", err)
	}
	return page, nil
}

// CountKeys counts keys by their state now, for metrics and operators.
func (s *Store) CountKeys(ctx context.Context) (map[State]int, error) {
	now := s.now()
	out := map[State]int{StateActive: 0, StateInactive: 0, StateRevoked: 0, StateExpired: 0}
	err := s.view(ctx, func(tx Tx) error {
		// Every key's record is under its hash; in a store part way
		// through its upgrade, some are still named there by their id.
		var k storedKey
		return tx.Scan(bucketHashes, nil, nil, func(h, v []byte) (bool, error) {
			var err error
			if isHashedRecord(v) {
				err = decodeKeyRecord("", h, v, &k)
			} else {
				err = readIndexed(tx, v, &k)
			}
			if err != nil {
				return false, err
			}
			out[k.StateAt(now)]++
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("count keys: %w", err)
	}
	return out, nil
}
