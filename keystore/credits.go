package keystore

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/vizerror"
	"github.com/keygate/keygate/keystore/apikey"
)

var _ authz.Credits = (*Store)(nil)

// ErrNotMetered: the key has no credit balance to add to.
var ErrNotMetered = errors.New("key has no credit balance")

// ledger keeps the live credit balances of metered keys in memory, so a
// Check spends without a write; spending is written with the last-used
// batch. A crash forgets at most the spending since the last flush
// (Options.LastUsedFlush, 10 s by default): those credits were used but
// come back. Refills and sets are written at once and never lost.
//
// Spending is kept as an amount, not a balance, and written as a
// subtraction from the record, so that replicas sharing a backend each
// spend from one balance without overwriting each other's spending; each
// may overspend by what the others spent since its last flush.
//
// Lock order: the ledger lock is never held while waiting for the backend.
type ledger struct {
	mu  sync.Mutex
	bal map[string]*balance // key id -> live balance, loaded on first spend
}

type balance struct {
	base  int64 // the balance in the record, as last read or written
	spent int64 // spent here since, not yet written
}

func (b *balance) left() int64 { return max(b.base-b.spent, 0) }

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
		if b, err = s.loadBalance(ctx, id); err != nil {
			return 0, false, fmt.Errorf("spend credits: %w", err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if b.left() < int64(cost) {
		return b.left(), false, nil
	}
	b.spent += int64(cost)
	return b.left(), true, nil
}

// loadBalance brings a key's balance into the ledger. A key rotated away
// from (a Check that read it just before the rotation) spends its
// successor's balance.
func (s *Store) loadBalance(ctx context.Context, id string) (*balance, error) {
	var (
		k     storedKey
		found bool
	)
	err := s.checkView(ctx, func(tx Tx) error {
		var err error
		k, id, found, err = balanceRecord(tx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("key", id)
	}
	if k.CreditsRemaining == nil {
		return nil, vizerror.WrapWithMessage(fmt.Errorf("key %s: %w", id, ErrNotMetered), "key "+id+" has no credit balance")
	}
	l := s.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.bal[id]
	if !ok {
		b = &balance{base: *k.CreditsRemaining}
		l.bal[id] = b
	}
	return b, nil
}

// balanceRecord follows id's credits_owner chain (at most 8 hops) to the
// record holding the balance id spends: id's own, or a successor's.
func balanceRecord(tx Tx, id string) (k storedKey, owner string, found bool, err error) {
	for hops := 0; ; hops++ {
		k = storedKey{}
		if found, err = getJSON(tx, bucketKeys, id, &k); err != nil || !found || k.CreditsOwner == "" || hops == 8 {
			return k, id, found, err
		}
		id = k.CreditsOwner
	}
}

// live returns the in-memory balance of a key, if loaded.
func (l *ledger) live(id string) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.bal[id]; ok {
		return b.left(), true
	}
	return 0, false
}

// pending returns what was spent from id's balance and not yet written.
func (l *ledger) pending(id string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.bal[id]; ok {
		return b.spent
	}
	return 0
}

// rebase takes a balance another writer stored (a replica's flush, a
// refill through another replica's admin API); nil: the key no longer holds
// a balance of its own.
func (l *ledger) rebase(id string, stored *int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.bal[id]
	switch {
	case !ok:
	case stored != nil:
		b.base = *stored
	case b.spent == 0:
		// Spending waiting to be written is kept: the flush follows the
		// key's credits_owner to the balance it now spends.
		delete(l.bal, id)
	}
}

// forget drops every balance with nothing pending, after writes may have
// been missed; the next spend reads the record again.
func (l *ledger) forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, b := range l.bal {
		if b.spent == 0 {
			delete(l.bal, id)
		}
	}
}

// spending is one balance's unwritten spending, as snapshot for a flush.
type spending struct {
	id    string
	spent int64
}

// dirty snapshots the balances spent from since they were last written.
func (l *ledger) dirty() []spending {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []spending
	for id, b := range l.bal {
		if b.spent > 0 {
			out = append(out, spending{id, b.spent})
		}
	}
	return out
}

// written is the outcome of writing one spending: the record that took it
// (owner: the key itself or the end of its credits_owner chain) and the
// balance it holds now; gone when no record holds a balance for it.
type written struct {
	spending
	owner string
	now   int64
	gone  bool
}

// writeSpending subtracts each spending from the balance it belongs to. It
// changes only the transaction; apply the result with ledger.wrote.
func writeSpending(tx Tx, todo []spending) ([]written, error) {
	out := make([]written, 0, len(todo))
	for _, d := range todo {
		w := written{spending: d}
		k, owner, found, err := balanceRecord(tx, d.id)
		if err != nil {
			return nil, err
		}
		w.owner = owner
		if !found || k.CreditsRemaining == nil {
			w.gone = true
			out = append(out, w)
			continue
		}
		w.now = max(*k.CreditsRemaining-d.spent, 0)
		k.CreditsRemaining = &w.now
		if err := putJSON(tx, bucketKeys, w.owner, &k); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

// wrote applies committed spending: it is no longer pending, and the
// balances take what the records now hold.
func (l *ledger) wrote(done []written) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range done {
		b, ok := l.bal[w.id]
		if !ok {
			continue
		}
		b.spent = max(b.spent-w.spent, 0)
		if w.gone || w.owner != w.id && b.spent == 0 {
			delete(l.bal, w.id)
		}
		// The record written holds the balance: the key's own, or the
		// owner's its spending was redirected to.
		if o, ok := l.bal[w.owner]; ok && !w.gone {
			o.base = w.now
		}
	}
}

// creditMove is a rotation's hand-over of a balance, for the ledger.
type creditMove struct {
	from, to string
	spent    int64 // the old key's pending spending the move accounted for
	left     int64 // the successor's balance as written
}

// moved applies a committed rotation: spending on the old key since the
// move was computed becomes the successor's.
func (l *ledger) moved(m creditMove) {
	if m.from == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.bal[m.from]
	if !ok {
		return
	}
	delete(l.bal, m.from)
	if extra := b.spent - m.spent; extra > 0 {
		l.bal[m.to] = &balance{base: m.left, spent: extra}
	}
}

// AddCredits adds n (which may be negative, down to zero) to a metered
// key's balance; SetCredits sets the balance, making an unmetered key
// metered. Both are written before they return, and the returned Key shows
// the live balance.
func (s *Store) AddCredits(ctx context.Context, id string, n int64) (Key, error) {
	return s.changeCredits(ctx, id, func(cur *int64) (int64, error) {
		if cur == nil {
			return 0, vizerror.WrapWithMessage(fmt.Errorf("%w: key %s (set a balance first)", ErrNotMetered, id), "key "+id+" has no credit balance (set a balance first)")
		}
		return max(*cur+n, 0), nil
	})
}

// SetCredits sets a key's balance to n.
func (s *Store) SetCredits(ctx context.Context, id string, n int64) (Key, error) {
	if n < 0 {
		return Key{}, fmt.Errorf("set credits: %w", refuse(ErrInvalid, "balance %d is negative", n))
	}
	return s.changeCredits(ctx, id, func(*int64) (int64, error) { return n, nil })
}

func (s *Store) changeCredits(ctx context.Context, id string, next func(cur *int64) (int64, error)) (Key, error) {
	l := s.ledger
	var (
		out   Key
		spent int64 // pending spending the new balance accounts for
		n     int64
	)
	err := s.update(ctx, func(tx Tx, touch func(apikey.Hash)) error {
		k, err := getKey(tx, id)
		if err != nil {
			return err
		}
		spent = l.pending(id)
		cur := k.CreditsRemaining
		if cur != nil {
			left := max(*cur-spent, 0)
			cur = &left
		}
		if n, err = next(cur); err != nil {
			return err
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
	// Spending between the snapshot above and now stays pending, so it is
	// taken from the new balance too.
	l.mu.Lock()
	if b, ok := l.bal[id]; ok {
		b.spent = max(b.spent-spent, 0)
		b.base = n
		left := b.left()
		out.CreditsRemaining = &left
	}
	l.mu.Unlock()
	return out, nil
}
