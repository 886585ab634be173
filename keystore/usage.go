package keystore

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/keygate/keygate/authz"
)

// usage batches last-used times (and the ledger's credit balances) in memory
// and writes them in one bbolt transaction per interval, so an allowed Check
// never waits on a disk write. A crash loses at most one interval of them.
type usage struct {
	s *Store

	mu      sync.Mutex
	pending map[string]time.Time // key id -> latest use

	done    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

func startUsage(s *Store, every time.Duration) *usage {
	u := &usage{s: s, pending: map[string]time.Time{}, done: make(chan struct{}), stopped: make(chan struct{})}
	go u.loop(every)
	return u
}

// KeyUsed implements authz.Recorder.
func (s *Store) KeyUsed(c *authz.Credential, at time.Time) {
	u := s.usage
	u.mu.Lock()
	if prev, ok := u.pending[c.ID]; !ok || at.After(prev) {
		u.pending[c.ID] = at
	}
	u.mu.Unlock()
}

func (u *usage) loop(every time.Duration) {
	defer close(u.stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-u.done:
			return
		case <-t.C:
			// A failed flush keeps its times pending for the next tick; the
			// error surfaces on the final flush at Close.
			_ = u.flush()
		}
	}
}

// flush writes pending times. A key deleted meanwhile is skipped; a time
// never moves backwards.
func (u *usage) flush() error {
	u.mu.Lock()
	batch := u.pending
	u.pending = make(map[string]time.Time, len(batch))
	u.mu.Unlock()
	credits := u.s.ledger.dirty()
	if len(batch) == 0 && len(credits) == 0 {
		return nil
	}
	err := u.s.db.Update(func(tx *bolt.Tx) error {
		if err := u.s.ledger.writeBalances(tx, credits); err != nil {
			return err
		}
		b := tx.Bucket(bucketKeys)
		for id, at := range batch {
			var k storedKey
			found, err := getJSON(b, id, &k)
			if err != nil {
				return err
			}
			if !found || k.LastUsedAt != nil && !at.After(*k.LastUsedAt) {
				continue
			}
			at := at.UTC()
			k.LastUsedAt = &at
			if err := putJSON(b, id, &k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		u.mu.Lock()
		for id, at := range batch {
			if prev, ok := u.pending[id]; !ok || at.After(prev) {
				u.pending[id] = at
			}
		}
		u.mu.Unlock()
		return fmt.Errorf("flush last-used times and credits: %w", err)
	}
	u.s.ledger.written(credits)
	return nil
}

// stop ends the loop and writes what is pending.
func (u *usage) stop() error {
	var err error
	u.once.Do(func() {
		close(u.done)
		<-u.stopped
		err = u.flush()
	})
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return nil
	}
	return err
}
