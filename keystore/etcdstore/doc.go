// Package etcdstore owns the shared key-store backend: Keygate's buckets
// kept in etcd, so that many replicas serve one truth. It turns the
// keystore's transactions into optimistic etcd transactions (retried on
// conflict), follows every write through a watch so that each replica's
// cache drops what changed, and makes a write return only once every live
// replica has applied it: each replica publishes the revision it has
// applied in an entry of its own under a lease, and a writer waits for
// them (follow.go).
//
// While a replica cannot confirm that it still follows writes (its watch
// broke, or its lease could not be renewed for a TTL), it trusts nothing it
// cached and reads etcd for every lookup, which fails closed when etcd is
// out of reach. Writers stop waiting for a replica once its lease expires,
// which is never before that replica stopped trusting its cache.
//
// A replica owns its entry (entry.go): it claims its id in one transaction
// and refuses one that a live replica holds, and it writes the entry only
// if it is as it left it. It notices an etcd restored from a snapshot
// (history.go) by its revision going back, its cluster id changing or its
// own entry growing older, then drops its cache and follows the store as
// it now is.
package etcdstore
