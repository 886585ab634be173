package keystore

import (
	"context"
	"fmt"
	"strings"
)

// OrgTenant implements authz.OrgDirectory: it runs on the Check path of
// every route that names an org.
//
// Known orgs are remembered in memory for the life of the store. That is
// only correct because orgs are never deleted or moved to another tenant
// today: whatever adds either must invalidate s.orgTenants in the same write
// (and a shared backend's follower drops an org that changes elsewhere), or
// a tenant-level key would keep reaching an org its tenant lost. Unknown
// org ids are not remembered: they come from request paths, so a client could
// grow the map without bound, while a miss is one backend read.
func (s *Store) OrgTenant(ctx context.Context, orgID string) (string, bool, error) {
	if s.cache.isClosed() {
		return "", false, ErrClosed
	}
	if orgID == "" {
		return "", false, nil
	}
	if t, ok := s.orgTenants.Load(orgID); ok {
		return t.(string), true, nil
	}
	if err := ctx.Err(); err != nil {
		return "", false, fmt.Errorf("look up org: %w", err)
	}
	var (
		o     Org
		found bool
	)
	err := s.checkView(ctx, func(tx Tx) error {
		var err error
		found, err = getJSON(tx, bucketOrgs, orgID, &o)
		return err
	})
	if err != nil {
		return "", false, fmt.Errorf("look up org: %w", err)
	}
	if !found {
		return "", false, nil
	}
	// The id usually points into the request's path; a copy keeps the map
	// from pinning that whole buffer.
	s.orgTenants.Store(strings.Clone(orgID), o.TenantID)
	return o.TenantID, true, nil
}
