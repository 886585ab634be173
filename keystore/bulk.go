package keystore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keygate/keygate/internal/vizerror"
	"github.com/keygate/keygate/keystore/apikey"
)

// ImportResult is the outcome of one Import of ImportKeys: the stored key,
// or Err, the refusal of that import alone (its message is fit for the
// client that sent it, like ImportKey's refusals).
type ImportResult struct {
	Key Key
	Err error
}

// Batch sizes of ImportKeys. One transaction per batch: on bbolt that is
// one fsync for up to boltImportBatch keys, and more than that: the hash
// index is written at random places, so a commit rewrites about one page
// of it per key until keys start sharing pages. 10,000 a batch imports a
// million keys in half the time 1,000 a batch takes. A shared backend (etcd) refuses
// transactions of more than 128 operations by default, in writes and in
// compares each; a key writes up to six records (key, hash, tenant and org
// index, slot, the slot's previous holder) and reads up to three that are
// compared at commit (hash, slot, the scan of its org), so a batch there
// ends when the next key could pass sharedTxnBudget.
const (
	boltImportBatch = 10000
	sharedTxnBudget = 120
	maxKeyWrites    = 6
	maxKeyCompares  = 8
)

// importLanes is how many batches ImportKeys keeps in flight on a shared
// backend. An etcd commit is round trips, a consensus round and an fsync
// that etcd shares among the proposals that arrive together: batches side
// by side overlap the waits. bbolt has one writer, so there batches go one
// at a time. More lanes than this gained nothing on etcd 3.4 (its CPU is
// the limit then).
const importLanes = 8

// ImportKeys stores many existing keys, each validated exactly as ImportKey
// validates one, in batches of one transaction each. An import that is
// refused (a malformed key, a hash already stored or earlier in ims, an
// unknown tenant, a full org...) is reported in its result and writes
// nothing; the other imports of its batch still commit. The org key limit
// and slots apply as they would to the same imports made one by one in
// order. The results are in the order of ims. The error is a failure of the
// store itself; the results returned with it are a prefix of ims whose
// batches all committed, none if the replicas did not confirm them
// (imports after it may or may not have been stored, as with any write
// the store could not confirm: importing them again reports those that
// were as already stored).
//
// On a shared backend several batches commit at once. Imports that could
// see each other's writes (the same hash, the same org, the same slot)
// stay in one lane, in the order of ims; lanes share nothing else an
// import reads, so the results are those of importing one by one. Each
// batch reads what it needs in one round trip (Prefetcher), and one that
// can (Syncer) commits without waiting for the other replicas: ImportKeys
// waits once, at the end, until every replica has applied them all.
func (s *Store) ImportKeys(ctx context.Context, ims []Import) ([]ImportResult, error) {
	out := make([]ImportResult, len(ims))
	now := s.now()
	// What can be checked without the store is checked once, outside the
	// transactions (which may run more than once).
	keys := make([]*storedKey, len(ims))
	for i, im := range ims {
		h, display, err := s.importHash(&im)
		if err == nil {
			var k storedKey
			if k, err = s.newKey(im.KeySpec, h, display, true, now); err == nil {
				keys[i] = &k
			}
		}
		if err != nil {
			out[i].Err = fmt.Errorf("import key: %w", err)
		}
	}
	_, shared := s.b.(Shared)
	n := 1
	if shared {
		n = importLanes
	}
	lanes := importLanesOf(keys, n)
	// committed[i]: line i's outcome is settled (refused before any
	// batch, or its batch committed).
	committed := make([]bool, len(ims))
	for i, k := range keys {
		committed[i] = k == nil
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for _, lane := range lanes {
		wg.Go(func() {
			for next := 0; next < len(lane); {
				end, err := s.importBatch(lctx, keys, out, lane, next, now, shared)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					cancel() // the other lanes stop at their next batch
					return
				}
				for _, i := range lane[next:end] {
					committed[i] = true
				}
				next = end
			}
		})
	}
	wg.Wait()
	if syncer, ok := s.b.(Syncer); ok {
		// The batches were committed with Batch: what they wrote reaches
		// every replica's next lookup once this returns (even after a
		// batch failed: those before it stand).
		sctx, cancel := context.WithTimeout(ctx, opTimeout)
		err := syncer.Sync(sctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("import keys: %w", errors.Join(firstErr, err))
		}
	}
	if firstErr != nil {
		prefix := 0
		for prefix < len(ims) && committed[prefix] {
			prefix++
		}
		return out[:prefix], fmt.Errorf("import keys: %w", firstErr)
	}
	return out, nil
}

// importUpdate is update for one batch of ImportKeys. A backend that
// confirms writes together (Syncer) commits it with Batch, and
// ImportKeys Syncs once at the end; on others it is update.
func (s *Store) importUpdate(ctx context.Context, fn func(tx Tx, touch func(apikey.Hash)) error) error {
	if _, ok := s.b.(Syncer); !ok {
		return s.update(ctx, fn)
	}
	return s.commit(ctx, s.b.Batch, fn)
}

// importLanesOf splits the lines of keys that are still to be stored into
// at most n lanes, each in the order of keys. Lines that share a hash, an
// org or a slot (a tenant-level one: an org's slots are the org's) go
// into one lane, as one of them may decide another's result; the groups
// so joined are dealt to the lane with the fewest lines so far.
func importLanesOf(keys []*storedKey, n int) [][]int {
	if n <= 1 {
		var lane []int
		for i, k := range keys {
			if k != nil {
				lane = append(lane, i)
			}
		}
		return [][]int{lane}
	}
	// Union-find over lines: parent[i] == i for a group's first line.
	parent := make([]int, len(keys))
	find := func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	first := map[string]int{} // what lines share → the first line with it
	join := func(i int, what string) {
		j, ok := first[what]
		if !ok {
			first[what] = i
			return
		}
		if a, b := find(i), find(j); a != b {
			// The earlier line stays the root: groups are dealt in the
			// order of their first lines.
			parent[max(a, b)] = min(a, b)
		}
	}
	for i, k := range keys {
		parent[i] = i
		if k == nil {
			continue
		}
		join(i, "h"+string(k.Hash))
		switch {
		case k.OrgID != "":
			join(i, "o"+k.OrgID)
		case k.Slot != "":
			join(i, "s"+string(slotKey(&k.Key)))
		}
	}
	size := make([]int, len(keys))
	for i, k := range keys {
		if k != nil {
			size[find(i)]++
		}
	}
	lanes := make([][]int, n)
	load := make([]int, n)
	laneOf := make([]int, len(keys))
	for i, k := range keys {
		if k == nil {
			continue
		}
		root := find(i)
		if root == i {
			l := 0
			for j := range load {
				if load[j] < load[l] {
					l = j
				}
			}
			laneOf[i] = l
			load[l] += size[i]
		}
		l := laneOf[root]
		lanes[l] = append(lanes[l], i)
	}
	var nonEmpty [][]int
	for _, lane := range lanes {
		if len(lane) > 0 {
			nonEmpty = append(nonEmpty, lane)
		}
	}
	return nonEmpty
}

// importBatch stores the lines lane[next:] in one transaction, as many as
// one transaction may carry, and returns where in lane the next batch
// starts.
func (s *Store) importBatch(ctx context.Context, keys []*storedKey, out []ImportResult, lane []int, next int, now time.Time, shared bool) (int, error) {
	end := next
	err := s.importUpdate(ctx, func(tx Tx, touch func(apikey.Hash)) error {
		if err := prefetch(tx, s.importReads(keys, lane[next:min(next+maxSharedBatch, len(lane))])); err != nil {
			return err
		}
		ct := &countingTx{Tx: tx, read: map[string]bool{}, written: map[string]bool{}}
		end = next
		for p := next; p < len(lane); p++ {
			if shared && p > next && (len(ct.written)+maxKeyWrites > sharedTxnBudget || ct.compares+maxKeyCompares > sharedTxnBudget) {
				break
			}
			if !shared && p-next == boltImportBatch {
				break
			}
			end = p + 1
			i := lane[p]
			err := s.insertTx(ct, touch, keys[i], now)
			if _, refused := vizerror.As(err); refused || errors.Is(err, ErrNotFound) {
				// insertTx checks before it writes: tx is as it was.
				out[i] = ImportResult{Err: fmt.Errorf("import key: %w", err)}
				continue
			}
			if err != nil {
				return err
			}
			out[i] = ImportResult{Key: keys[i].Key}
		}
		return nil
	})
	if err != nil {
		return next, err
	}
	return end, nil
}

// maxSharedBatch bounds how many imports one shared transaction can carry:
// each writes at least three records (key, hash, tenant index).
const maxSharedBatch = sharedTxnBudget/3 + 1

// importReads is what insertTx reads for each of lines (the tenant, the
// org, the hash index, the slot, and the keys of the org it counts
// against the org's limit), for a backend that reads them faster
// together.
func (s *Store) importReads(keys []*storedKey, lines []int) []BucketKey {
	reads := make([]BucketKey, 0, 3*len(lines))
	for _, i := range lines {
		k := keys[i]
		reads = append(reads, BucketKey{Bucket: bucketTenants, Key: []byte(k.TenantID)}, BucketKey{Bucket: bucketHashes, Key: k.Hash})
		if k.OrgID != "" {
			reads = append(reads, BucketKey{Bucket: bucketOrgs, Key: []byte(k.OrgID)})
			if s.opts.MaxOrgKeys >= 0 {
				// As orgFull scans them: the org's index, then each
				// key's id, then its record.
				reads = append(reads, BucketKey{Bucket: bucketKeysByOrg, Key: s.indexPrefix(k.OrgID), Prefix: true, Follow: bucketKeys, Then: recordOfRef})
			}
		}
		if k.Slot != "" {
			reads = append(reads, BucketKey{Bucket: bucketSlots, Key: slotKey(&k.Key), Then: slotHolderOf})
		}
	}
	return reads
}

// recordOfRef names the record a value of the keys bucket points to.
func recordOfRef(v []byte) (BucketKey, bool) {
	h, ref, err := decodeHashRef(v)
	if !ref || err != nil {
		return BucketKey{}, false
	}
	return BucketKey{Bucket: bucketHashes, Key: h[:]}, true
}

// slotHolderOf names the id of the key a slot holds, and through it its
// record (slotHolder reads both).
func slotHolderOf(v []byte) (BucketKey, bool) {
	return BucketKey{Bucket: bucketKeys, Key: idKey(string(v)), Then: recordOfRef}, len(v) > 0
}

// countingTx counts what a shared backend's transaction will send at
// commit: each record read before the transaction wrote it is one compare,
// each scan one more, each record written or deleted one operation.
type countingTx struct {
	Tx
	read, written map[string]bool
	compares      int
}

func (t *countingTx) Get(bucket string, key []byte) ([]byte, error) {
	k := bucket + "/" + string(key)
	if !t.read[k] && !t.written[k] {
		t.read[k] = true
		t.compares++
	}
	return t.Tx.Get(bucket, key)
}

func (t *countingTx) Put(bucket string, key, value []byte) error {
	t.written[bucket+"/"+string(key)] = true
	return t.Tx.Put(bucket, key, value)
}

func (t *countingTx) Delete(bucket string, key []byte) error {
	t.written[bucket+"/"+string(key)] = true
	return t.Tx.Delete(bucket, key)
}

func (t *countingTx) Scan(bucket string, prefix, start []byte, fn func(k, v []byte) (bool, error)) error {
	t.compares++
	return t.Tx.Scan(bucket, prefix, start, fn)
}
