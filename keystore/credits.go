package keystore

import (
	"context"
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore/apikey"
)

var _ authz.Credits = (*Store)(nil)

// ErrNotMetered: the key has no credit balance to add to.
var ErrNotMetered = errors.New("key has no credit balance")

// ledger keeps the live credit balances of metered keys in memory, so a
// Check spends without a disk write; balances are written with the
// last-used batch. A crash forgets at most the spending since the last
// flush (Options.LastUsedFlush, 10 s by default): those credits were used
// but come back. Refills and sets are written at once and never lost.
//
// Lock order: a bbolt write transaction may take the ledger lock; the
// ledger lock is never held while waiting for bbolt.
type ledger struct {
	mu  sync.Mutex
	bal map[string]*balance // key id -> live balance, loaded on first spend
}

type balance struct {
	left    int64
	version uint64 // bumped on every change
	flushed uint64 // version known to be on disk
}

func newLedger() *ledger { return &ledger{bal: map[string]*balance{}} }

// Spend implements authz.Credits: it takes cost from the key's balance if
// the balance covers it.
func (s *Store) Spend(ctx context.Context, c *authz.Credential, cost int) (int64, bool, error) {
	if cost < 1 {
		return 0, false, fmt.Errorf("spend credits: cost %d", cost)
	}
	id := c.BalanceID
	if id == "" {
		id = c.ID
	}
	l := s.ledger
	l.mu.Lock()
	b, ok := l.bal[id]
	l.mu.Unlock()
	if !ok {
		if err := ctx.Err(); err != nil {
			return 0, false, fmt.Errorf("spend credits: %w", err)
		}
		var err error
		if id, b, err = s.loadBalance(id); err != nil {
			return 0, false, fmt.Errorf("spend credits: %w", err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if b.left < int64(cost) {
		return b.left, false, nil
	}
	b.left -= int64(cost)
	b.version++
	return b.left, true, nil
}

// loadBalance brings a key's balance into the ledger. A key rotated away
// from (a Check that read it just before the rotation) spends its
// successor's balance.
func (s *Store) loadBalance(id string) (string, *balance, error) {
	for hops := 0; ; hops++ {
		k, err := s.Key(id)
		if err != nil {
			return "", nil, err
		}
		if k.CreditsOwner != "" && hops < 8 {
			id = k.CreditsOwner
			continue
		}
		if k.CreditsRemaining == nil {
			return "", nil, fmt.Errorf("key %s: %w", id, ErrNotMetered)
		}
		l := s.ledger
		l.mu.Lock()
		defer l.mu.Unlock()
		b, ok := l.bal[id]
		if !ok {
			b = &balance{left: *k.CreditsRemaining}
			l.bal[id] = b
		}
		return id, b, nil
	}
}

// live returns the in-memory balance of a key, if loaded.
func (l *ledger) live(id string) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.bal[id]; ok {
		return b.left, true
	}
	return 0, false
}

type dirtyBalance struct {
	id      string
	left    int64
	version uint64
}

// dirty snapshots the balances changed since they were last written.
func (l *ledger) dirty() []dirtyBalance {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []dirtyBalance
	for id, b := range l.bal {
		if b.version != b.flushed {
			out = append(out, dirtyBalance{id, b.left, b.version})
		}
	}
	return out
}

// written records that these versions are on disk; a balance spent from
// since the snapshot stays dirty.
func (l *ledger) written(done []dirtyBalance) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range done {
		if b, ok := l.bal[d.id]; ok && b.flushed < d.version {
			b.flushed = d.version
		}
	}
}

// writeBalances puts snapshot balances into their records; keys deleted
// meanwhile are dropped from the ledger.
func (l *ledger) writeBalances(tx *bolt.Tx, todo []dirtyBalance) error {
	bk := tx.Bucket(bucketKeys)
	for _, d := range todo {
		var k storedKey
		found, err := getJSON(bk, d.id, &k)
		if err != nil {
			return err
		}
		if !found {
			l.mu.Lock()
			delete(l.bal, d.id)
			l.mu.Unlock()
			continue
		}
		left := d.left
		k.CreditsRemaining = &left
		if err := putJSON(bk, d.id, &k); err != nil {
			return err
		}
	}
	return nil
}

// AddCredits adds n (which may be negative, down to zero) to a metered
// key's balance; SetCredits sets the balance, making an unmetered key
// metered. Both are written before they return, and the returned Key shows
// the live balance.
func (s *Store) AddCredits(id string, n int64) (Key, error) {
	return s.changeCredits(id, func(cur *int64) (int64, error) {
		if cur == nil {
			return 0, fmt.Errorf("%w: key %s (set a balance first)", ErrNotMetered, id)
		}
		return max(*cur+n, 0), nil
	})
}

// SetCredits sets a key's balance to n.
func (s *Store) SetCredits(id string, n int64) (Key, error) {
	if n < 0 {
		return Key{}, fmt.Errorf("set credits: %w: balance %d is negative", ErrInvalid, n)
	}
	return s.changeCredits(id, func(*int64) (int64, error) { return n, nil })
}

func (s *Store) changeCredits(id string, next func(cur *int64) (int64, error)) (Key, error) {
	l := s.ledger
	var (
		out   Key
		delta int64 // what the change adds to the live balance
	)
	err := s.update(func(tx *bolt.Tx, touch func(apikey.Hash)) error {
		k, err := getKey(tx, id)
		if err != nil {
			return err
		}
		cur := k.CreditsRemaining
		if left, ok := l.live(id); ok {
			cur = &left
		}
		n, err := next(cur)
		if err != nil {
			return err
		}
		delta = n
		if cur != nil {
			delta = n - *cur
		}
		if k.CreditsRemaining == nil {
			// Becoming metered changes what the Check path must do.
			touch(apikey.Hash(k.Hash))
		}
		k.CreditsRemaining = &n
		out = k.Key
		return putKey(tx, &k, false)
	})
	if err != nil {
		return Key{}, fmt.Errorf("change credits: %w", err)
	}
	// Only a committed change reaches the live balance, as a delta, so
	// that spending between the read above and now is kept.
	l.mu.Lock()
	if b, ok := l.bal[id]; ok {
		b.left = max(b.left+delta, 0)
		b.version++
		left := b.left
		out.CreditsRemaining = &left
	}
	l.mu.Unlock()
	return out, nil
}
