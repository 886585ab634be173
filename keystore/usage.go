package keystore

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/authz"
)

// usage batches last-used times in memory and writes them in a few
// transactions per interval, so an allowed Check never waits on a disk
// write. A crash loses at most one interval of them. Its loop also keeps
// the credit ledger's clock: spending rates and idle slices going back.
type usage struct {
	s *Store

	// pending holds the latest use of each key id since the last flush, in
	// shards: every allowed Check records here, and one lock for all of
	// them was the process's most contended.
	seed    maphash.Seed
	pending [usageShards]usageShard
	// writer names this store's usage rows (see usagecount.go); late
	// numbers the rows of counts that came after their hour was dropped.
	writer string
	late   atomic.Uint64
	// flushing serializes flushes: two writing snapshots of the same
	// key-hour out of order would leave the older total in the row.
	flushing sync.Mutex
	// nextPrune is when the loop next prunes usage rows.
	nextPrune time.Time

	done    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

const usageShards = 32

type usageShard struct {
	mu sync.Mutex
	// keys holds each key's pending use and counted hours (usagecount.go)
	// in one entry, so that a Check hashes and finds its key once; dropped
	// is the latest hour of any dropped from here after it was written.
	keys    map[string]*keyCounts
	dropped int64
}

func (u *usage) shard(id string) *usageShard {
	return &u.pending[maphash.String(u.seed, id)%usageShards]
}

func startUsage(s *Store, every time.Duration) *usage {
	u := &usage{s: s, seed: maphash.MakeSeed(), writer: newWriterID(), done: make(chan struct{}), stopped: make(chan struct{})}
	for i := range u.pending {
		u.pending[i].keys = map[string]*keyCounts{}
		u.pending[i].dropped = noHour
	}
	go u.loop(every)
	return u
}

// record keeps the later of at and what is pending for id.
func (u *usage) record(id string, at time.Time) {
	sh := u.shard(id)
	sh.mu.Lock()
	sh.key(id).use(at)
	sh.mu.Unlock()
}

// take empties the pending uses and returns them.
func (u *usage) take() map[string]time.Time {
	batch := map[string]time.Time{}
	for i := range u.pending {
		sh := &u.pending[i]
		sh.mu.Lock()
		for id, kc := range sh.keys {
			if !kc.used.IsZero() {
				batch[id] = kc.used
				kc.used = time.Time{}
				if len(kc.hours) == 0 {
					delete(sh.keys, id)
				}
			}
		}
		sh.mu.Unlock()
	}
	return batch
}

// KeyUsed implements authz.Recorder.
func (s *Store) KeyUsed(c *authz.Credential, at time.Time) {
	s.usage.record(c.ID, at)
}

func (u *usage) loop(every time.Duration) {
	defer close(u.stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	ct := time.NewTicker(creditTick)
	defer ct.Stop()
	for {
		select {
		case <-u.done:
			return
		case <-t.C:
			// A failed flush keeps its times and counts pending for the
			// next tick; the error surfaces on the final flush at Close.
			_ = u.flush()
			u.prune()
		case <-ct.C:
			// A slice that failed to go back is stranded, and shown as
			// such in the record; there is nothing to retry.
			_ = u.s.tickCredits()
		}
	}
}

// flushChunk bounds how many records one flush transaction writes: etcd
// refuses transactions of more than 128 operations by default.
const flushChunk = 64

// flush writes pending times and usage counts.
func (u *usage) flush() error {
	u.flushing.Lock()
	defer u.flushing.Unlock()
	return errors.Join(u.flushTimes(), u.flushCounts())
}

// prune deletes expired usage rows about hourly, and sooner while a run
// stops at its bound. A failed run is retried the next hour: expired rows
// only take room.
func (u *usage) prune() {
	now := u.s.now()
	if now.Before(u.nextPrune) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	u.nextPrune = now.Add(pruneEvery)
	if _, more, err := u.s.PruneUsage(ctx); err == nil && more {
		u.nextPrune = now
	}
}

// flushTimes writes pending times, in transactions of at most flushChunk
// records. A key deleted meanwhile is skipped; a time never moves
// backwards.
func (u *usage) flushTimes() error {
	batch := u.take()
	if len(batch) == 0 {
		return nil
	}
	ids := make([]string, 0, len(batch))
	for id := range batch {
		ids = append(ids, id)
	}
	var errs []error
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), flushChunk)]
		ids = ids[len(chunk):]
		if err := u.write(batch, chunk); err != nil {
			for _, id := range chunk {
				u.record(id, batch[id])
			}
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("flush last-used times: %w", err)
	}
	return nil
}

func (u *usage) write(batch map[string]time.Time, ids []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return u.s.b.Batch(ctx, func(tx Tx) error {
		for _, id := range ids {
			at := batch[id]
			var k storedKey
			found, err := getKeyRecord(tx, id, &k)
			if err != nil {
				return err
			}
			if !found || k.LastUsedAt != nil && !at.After(*k.LastUsedAt) {
				continue
			}
			at = at.UTC()
			k.LastUsedAt = &at
			if err := putKeyRecord(tx, id, &k); err != nil {
				return err
			}
		}
		return nil
	})
}

// stop ends the loop, writes what is pending and gives unspent credit
// slices back.
func (u *usage) stop() error {
	var err error
	u.once.Do(func() {
		close(u.done)
		<-u.stopped
		err = errors.Join(u.flush(), u.s.returnAll(true))
	})
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}
