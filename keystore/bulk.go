package keystore

import (
	"context"
	"errors"
	"fmt"
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

// ImportKeys stores many existing keys, each validated exactly as ImportKey
// validates one, in batches of one transaction each. An import that is
// refused (a malformed key, a hash already stored or earlier in ims, an
// unknown tenant, a full org...) is reported in its result and writes
// nothing; the other imports of its batch still commit. The org key limit
// and slots apply as they would to the same imports made one by one in
// order. The results are in the order of ims. The error is a failure of the
// store itself; the results returned with it are those of the batches that
// committed before it, a prefix of ims (the failed batch may or may not
// have committed, as with any write the store could not confirm).
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
	for next := 0; next < len(ims); {
		if out[next].Err != nil {
			next++
			continue
		}
		end, err := s.importBatch(ctx, keys, out, next, now, shared)
		if err != nil {
			return out[:next], fmt.Errorf("import keys: %w", err)
		}
		next = end
	}
	return out, nil
}

// importBatch stores keys from start on in one transaction, as many as
// one transaction may carry, and returns where the next batch starts.
func (s *Store) importBatch(ctx context.Context, keys []*storedKey, out []ImportResult, start int, now time.Time, shared bool) (int, error) {
	end := start
	err := s.update(ctx, func(tx Tx, touch func(apikey.Hash)) error {
		ct := &countingTx{Tx: tx, read: map[string]bool{}, written: map[string]bool{}}
		end = start
		for i := start; i < len(keys); i++ {
			if shared && i > start && (len(ct.written)+maxKeyWrites > sharedTxnBudget || ct.compares+maxKeyCompares > sharedTxnBudget) {
				break
			}
			if !shared && i-start == boltImportBatch {
				break
			}
			end = i + 1
			if keys[i] == nil {
				continue // refused before the batch
			}
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
		return start, err
	}
	return end, nil
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
