// Package etcdstore owns the shared key-store backend: Keygate's buckets
// kept in etcd, so that many replicas serve one truth. It turns the
// keystore's transactions into optimistic etcd transactions (retried on
// conflict), follows every write through a watch so that each replica's
// cache drops what changed, and makes a write return only once every live
// replica has applied it: each replica publishes the revision it has
// applied under a leased key, and a writer waits for them.
//
// While a replica cannot confirm that it still follows writes (its watch
// broke, or its lease could not be renewed for a TTL), it trusts nothing it
// cached and reads etcd for every lookup, which fails closed when etcd is
// out of reach. Writers stop waiting for a replica once its lease expires,
// which is never before that replica stopped trusting its cache.
package etcdstore
