package etcdstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keygate/keygate/keystore"
)

// scanPage is how many keys one range read of a Scan fetches.
const scanPage = 512

// prefetchChunk is how many reads one Prefetch round trip carries: etcd
// refuses a transaction of more than 128 operations by default (reads
// included), and a cluster may be configured lower.
const prefetchChunk = 100

var _ keystore.Prefetcher = (*tx)(nil)

// tx is one attempt at a transaction. Reads see one snapshot (the revision
// of the first read) plus the transaction's own buffered writes; at commit
// every read is compared, so the commit fails if anything read changed.
type tx struct {
	ctx   context.Context
	kv    clientv3.KV
	data  string // key prefix of the buckets
	track bool   // record reads for compares (an Update, not a View)
	rev   int64  // snapshot revision, 0 until the first read
	reads map[string]int64
	// seen holds every record read at rev (by Get or Prefetch), so that
	// a record is fetched once however often the transaction reads it.
	seen map[string]seenKV
	// scanned holds prefetched ranges, whole, by their bounds.
	scanned map[[2]string][]*mvccpb.KeyValue
	ranges  [][2]string
	writes  map[string]*string // nil: deleted
	order   []string
}

func newTx(ctx context.Context, kv clientv3.KV, data string, track bool) *tx {
	return &tx{ctx: ctx, kv: kv, data: data, track: track, reads: map[string]int64{}, seen: map[string]seenKV{}, scanned: map[[2]string][]*mvccpb.KeyValue{}, writes: map[string]*string{}}
}

func (t *tx) key(bucket string, key []byte) string {
	return t.data + bucket + "/" + encodeKey(bucket, key)
}

// encodeKey keeps the hash index's digests out of etcd's keys as raw
// bytes: in hex they are readable with etcdctl and never land raw in
// etcd's own logs. Hex keeps both order and prefixes, so scans work
// unchanged. The 16-byte key ids of the keys and index buckets are no
// secret and stay as they are (etcdctl prints them escaped).
func encodeKey(bucket string, key []byte) string {
	if bucket == keystore.HashIndexBucket {
		return hex.EncodeToString(key)
	}
	return string(key)
}

func decodeKey(bucket, key string) ([]byte, bool) {
	if bucket == keystore.HashIndexBucket {
		b, err := hex.DecodeString(key)
		return b, err == nil
	}
	return []byte(key), true
}

func (t *tx) get(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if t.rev != 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	resp, err := t.kv.Get(t.ctx, key, opts...)
	if err != nil {
		return nil, err
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	return resp, nil
}

// seenKV is a record as read at the snapshot: rev 0 and a nil value for
// one that is absent (etcd's mod revision of a missing key is 0, which is
// what the commit compares then).
type seenKV struct {
	rev int64
	v   []byte
}

func seenOf(kvs []*mvccpb.KeyValue) seenKV {
	if len(kvs) != 1 {
		return seenKV{}
	}
	v := kvs[0].Value
	if v == nil {
		v = []byte{}
	}
	return seenKV{rev: kvs[0].ModRevision, v: v}
}

func (t *tx) Get(bucket string, key []byte) ([]byte, error) {
	k := t.key(bucket, key)
	if w, ok := t.writes[k]; ok {
		if w == nil {
			return nil, nil
		}
		return []byte(*w), nil
	}
	r, ok := t.seen[k]
	if !ok {
		resp, err := t.get(k)
		if err != nil {
			return nil, fmt.Errorf("%w: etcd get: %w", keystore.ErrUnavailable, err)
		}
		r = seenOf(resp.Kvs)
		t.seen[k] = r
	}
	if t.track {
		t.reads[k] = r.rev
	}
	return r.v, nil
}

// Prefetch reads every record of reads not yet read or written, and every
// range asked for, in transactions of prefetchChunk reads at the
// snapshot revision (the first one sets it when nothing was read before);
// then the records the ranges' entries list (Follow), and those the
// records read point to (Then), the same way. Only Get and Scan put what
// they return in the read set compared at commit.
func (t *tx) Prefetch(reads []keystore.BucketKey) error {
	type read struct {
		key, end string // end: a range
		bucket   string // of a range, with its prefix (base) and
		base     string // the bucket of the records it lists
		follow   string
		then     func([]byte) (keystore.BucketKey, bool)
	}
	var todo []read
	queued := map[[2]string]bool{}
	for _, r := range reads {
		k := t.key(r.Bucket, r.Key)
		var q read
		if r.Prefix {
			q = read{key: k, end: clientv3.GetPrefixRangeEnd(k), bucket: r.Bucket, base: k, follow: r.Follow, then: r.Then}
			if _, ok := t.scanned[[2]string{q.key, q.end}]; ok {
				continue
			}
		} else {
			q = read{key: k, then: r.Then}
			if _, ok := t.seen[k]; ok {
				continue
			}
			if _, ok := t.writes[k]; ok {
				continue
			}
		}
		if queued[[2]string{q.key, q.end}] {
			continue
		}
		queued[[2]string{q.key, q.end}] = true
		todo = append(todo, q)
	}
	var follow []keystore.BucketKey
	for len(todo) > 0 {
		chunk := todo[:min(prefetchChunk, len(todo))]
		todo = todo[len(chunk):]
		ops := make([]clientv3.Op, len(chunk))
		for i, q := range chunk {
			var opts []clientv3.OpOption
			if t.rev != 0 {
				opts = append(opts, clientv3.WithRev(t.rev))
			}
			if q.end != "" {
				opts = append(opts, clientv3.WithRange(q.end), clientv3.WithLimit(scanPage))
			}
			ops[i] = clientv3.OpGet(q.key, opts...)
		}
		if t.ctx.Err() != nil {
			return t.ctx.Err()
		}
		resp, err := t.kv.Txn(t.ctx).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("%w: etcd prefetch: %w", keystore.ErrUnavailable, err)
		}
		if len(resp.Responses) != len(chunk) {
			return fmt.Errorf("%w: etcd prefetch: %d answers to %d reads", keystore.ErrUnavailable, len(resp.Responses), len(chunk))
		}
		if t.rev == 0 {
			// A transaction that only reads reads at the revision its
			// header carries.
			t.rev = resp.Header.Revision
		}
		for i, q := range chunk {
			rr := resp.Responses[i].GetResponseRange()
			if rr == nil {
				return fmt.Errorf("%w: etcd prefetch: answer %d is not a range", keystore.ErrUnavailable, i)
			}
			if q.end == "" {
				seen := seenOf(rr.Kvs)
				t.seen[q.key] = seen
				if q.then != nil && seen.v != nil {
					if next, ok := q.then(seen.v); ok {
						follow = append(follow, next)
					}
				}
				continue
			}
			if rr.More {
				continue // longer than one page: Scan reads it itself
			}
			t.scanned[[2]string{q.key, q.end}] = rr.Kvs
			if q.follow == "" {
				continue
			}
			for _, kv := range rr.Kvs {
				if id, ok := decodeKey(q.bucket, string(kv.Key[len(q.base):])); ok {
					follow = append(follow, keystore.BucketKey{Bucket: q.follow, Key: id, Then: q.then})
				}
			}
		}
	}
	if len(follow) > 0 {
		return t.Prefetch(follow)
	}
	return nil
}

func (t *tx) buffer(k string, v *string) error {
	if t.ctx.Err() != nil {
		return t.ctx.Err()
	}
	if _, ok := t.writes[k]; !ok {
		t.order = append(t.order, k)
	}
	t.writes[k] = v
	return nil
}

func (t *tx) Put(bucket string, key, value []byte) error {
	v := string(value)
	return t.buffer(t.key(bucket, key), &v)
}

func (t *tx) Delete(bucket string, key []byte) error { return t.buffer(t.key(bucket, key), nil) }

func (t *tx) Scan(bucket string, prefix, start []byte, fn func(k, v []byte) (bool, error)) error {
	base := t.key(bucket, nil)
	from, end := t.key(bucket, prefix), clientv3.GetPrefixRangeEnd(t.key(bucket, prefix))
	if s := t.key(bucket, start); start != nil && s > from {
		from = s
	}
	if t.track {
		// Any put in the range after the snapshot fails the commit. A
		// delete cannot be seen this way; no caller's decision is made
		// unsafe by a key vanishing from a range it scanned (it only
		// counts or follows entries).
		t.ranges = append(t.ranges, [2]string{from, end})
	}
	var buffered []string
	for k := range t.writes {
		if k >= from && k < end {
			buffered = append(buffered, k)
		}
	}
	sort.Strings(buffered)
	emitBuffered := func(k string) (bool, error) {
		w := t.writes[k]
		if w == nil {
			return true, nil
		}
		kb, _ := decodeKey(bucket, k[len(base):])
		return fn(kb, []byte(*w))
	}
	cursor := from
	cached, isCached := t.scanned[[2]string{from, end}]
	for {
		kvs, more := cached, false
		if !isCached {
			resp, err := t.get(cursor, clientv3.WithRange(end), clientv3.WithLimit(scanPage))
			if err != nil {
				return fmt.Errorf("%w: etcd range: %w", keystore.ErrUnavailable, err)
			}
			kvs, more = resp.Kvs, resp.More
		}
		isCached = false // a prefetched range is whole: one page
		for _, kv := range kvs {
			k := string(kv.Key)
			shadowed := false // the transaction wrote this key itself
			for len(buffered) > 0 && buffered[0] <= k {
				shadowed = shadowed || buffered[0] == k
				more, err := emitBuffered(buffered[0])
				buffered = buffered[1:]
				if err != nil || !more {
					return err
				}
			}
			if shadowed {
				continue
			}
			kb, ok := decodeKey(bucket, string(kv.Key[len(base):]))
			if !ok {
				return fmt.Errorf("etcd key %q in %s is not hex", kv.Key[len(base):], bucket)
			}
			if more, err := fn(kb, kv.Value); err != nil || !more {
				return err
			}
		}
		if !more || len(kvs) == 0 {
			break
		}
		cursor = string(kvs[len(kvs)-1].Key) + "\x00"
	}
	for _, k := range buffered {
		if more, err := emitBuffered(k); err != nil || !more {
			return err
		}
	}
	return nil
}

func (t *tx) compares() []clientv3.Cmp {
	cmps := make([]clientv3.Cmp, 0, len(t.reads)+len(t.ranges))
	for k, rev := range t.reads {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", rev))
	}
	for _, r := range t.ranges {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r[0]).WithRange(r[1]), "<", t.rev+1))
	}
	return cmps
}

func (t *tx) ops() []clientv3.Op {
	ops := make([]clientv3.Op, 0, len(t.order))
	for _, k := range t.order {
		if w := t.writes[k]; w == nil {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, *w))
		}
	}
	return ops
}

// retryable reports whether a failed attempt may succeed if run again from
// a fresh snapshot.
func retryable(err error) bool {
	return errors.Is(err, rpctypes.ErrCompacted)
}
