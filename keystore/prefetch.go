package keystore

import "context"

// Prefetcher is a Tx that can read many records in one round trip. A
// backend whose every read is a network round trip (etcd) offers it; one
// that reads from memory (bbolt) need not.
//
// Prefetch reads reads at the transaction's snapshot and keeps them, so
// that the Gets of them that follow are answered without a round trip,
// with what a Get would have answered then. It is only a hint: a record
// prefetched and never read with Get plays no part in the transaction
// (a shared backend compares at commit only what Get returned), and a
// record the transaction wrote is still read as written.
type Prefetcher interface {
	Prefetch(reads []BucketKey) error
}

// BucketKey names one record, or with Prefix the records a Scan of that
// prefix (from its start) reads.
type BucketKey struct {
	Bucket string
	Key    []byte
	Prefix bool
	// Follow, with Prefix, names the bucket of the records the index
	// entries found list: what follows the prefix in each entry's key is
	// one's key there, and those are read too (an index scan, then the
	// records it counts).
	Follow string
	// Then, for a record read (one that Follow lists too), names the
	// record its value points to, read next (a key's id, then its record
	// under its hash).
	Then func(value []byte) (BucketKey, bool)
}

// prefetch hands reads to tx when it can take them.
func prefetch(tx Tx, reads []BucketKey) error {
	p, ok := tx.(Prefetcher)
	if !ok || len(reads) == 0 {
		return nil
	}
	return p.Prefetch(reads)
}

// Syncer is a Shared backend whose Batch writes can be confirmed together:
// Sync returns once every live replica has applied every write committed
// before it was called, which is what Update waits for after each write.
// A bulk import commits its batches with Batch and Syncs once, instead of
// paying a round of confirmations per batch.
type Syncer interface {
	Sync(ctx context.Context) error
}
