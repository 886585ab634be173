package keystore

import (
	"context"
	"fmt"
)

// copyChunk is how many records one write of Copy carries (etcd refuses
// transactions of more than 128 operations by default).
const copyChunk = 100

// CopyStats counts what Copy wrote.
type CopyStats struct {
	Tenants int `json:"tenants"`
	Orgs    int `json:"orgs"`
	Keys    int `json:"keys"`
	Users   int `json:"users"`
	// Records counts every entry written, indexes included.
	Records int `json:"records"`
}

// Copy writes every record of src into dst, which must hold no tenants,
// orgs or keys: it moves a store from one backend to another (bbolt to
// etcd and back) with ids, hashes, balances and last-used times as they
// are. src is read in one snapshot. Credit spending and last-used times
// that a running server holds in memory are not in src until it flushes
// them; copy from a stopped server's store, or accept losing up to one
// flush interval of them.
func Copy(ctx context.Context, dst, src Backend) (CopyStats, error) {
	var st CopyStats
	if _, err := checkSchema(ctx, src, false, nil); err != nil {
		return st, fmt.Errorf("copy from %s: %w", src, err)
	}
	if _, err := checkSchema(ctx, dst, true, nil); err != nil {
		return st, fmt.Errorf("copy to %s: %w", dst, err)
	}
	err := dst.View(ctx, func(tx Tx) error {
		for _, b := range []string{bucketTenants, bucketOrgs, bucketKeys} {
			found := false
			err := tx.Scan(b, nil, nil, func(_, _ []byte) (bool, error) { found = true; return false, nil })
			if err != nil {
				return err
			}
			if found {
				return refuse(ErrConflict, "%s already holds %s; copy only into an empty store", dst, b)
			}
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("copy to %s: %w", dst, err)
	}
	type kv struct{ k, v []byte }
	var batch []kv
	bucket := ""
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := dst.Update(ctx, func(tx Tx) error {
			for _, e := range batch {
				if err := tx.Put(bucket, e.k, e.v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("copy to %s: %w", dst, err)
		}
		st.Records += len(batch)
		batch = batch[:0]
		return nil
	}
	err = src.View(ctx, func(tx Tx) error {
		return scanAll(tx, false, &st, func(b string, k, v []byte) error {
			if b != bucket {
				if err := flush(); err != nil {
					return err
				}
				bucket = b
			}
			// Slices are valid only inside the transaction.
			batch = append(batch, kv{append([]byte(nil), k...), append([]byte{}, v...)})
			if len(batch) == copyChunk {
				return flush()
			}
			return nil
		})
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return st, fmt.Errorf("copy from %s: %w", src, err)
	}
	// Records of an older schema were copied as they were: dst holds
	// this build's schema, so they are moved to its forms now, as an
	// upgrade of dst would.
	var counts []any
	if _, err := upgradeRecords(upgradeStep(ctx), dst, &counts); err != nil {
		return st, fmt.Errorf("copy to %s: %w", dst, err)
	}
	return st, nil
}

// scanAll calls fn with every record of tx, bucket by bucket in the order
// of Buckets, counting them in st (when not nil). The meta bucket is
// skipped unless withMeta: Copy writes the schema version itself.
func scanAll(tx Tx, withMeta bool, st *CopyStats, fn func(bucket string, k, v []byte) error) error {
	if st == nil {
		st = &CopyStats{}
	}
	for _, bucket := range Buckets {
		if bucket == bucketMeta && !withMeta {
			continue
		}
		err := tx.Scan(bucket, nil, nil, func(k, v []byte) (bool, error) {
			switch bucket {
			case bucketTenants:
				st.Tenants++
			case bucketOrgs:
				st.Orgs++
			case bucketKeys:
				st.Keys++
			case bucketUsers:
				st.Users++
			}
			return true, fn(bucket, k, v)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
