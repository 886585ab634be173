package keystore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/vizerror"
	"github.com/keygate/keygate/keystore/apikey"
)

var _ authz.Credits = (*Store)(nil)

// ErrNotMetered: the key has no credit balance to add to.
var ErrNotMetered = errors.New("key has no credit balance")

// Credits are spent from leased slices, so that the total allowed never
// exceeds the balance, with any number of processes sharing the backend and
// across crashes.
//
// A record's credits_remaining is the balance not handed out. A process
// spends by reserving a slice in one write transaction (record -= take,
// credits_reserved[holder] = what it now holds), spending it in memory, and
// reserving again when what it holds cannot cover a request (the leftover,
// less than that cost, stays and the new take adds to it). An unspent slice
// goes back (record += left, the holder's entry removed) once the key has
// been idle for about a second, on Flush and on Close. Credits are only ever
// spent after the write that took them from the record committed, so a
// write that fails or a process that dies can strand credits but never
// spend one twice.
//
// The bound: a crash (kill -9, a lost machine) strands at most the unspent
// part of one slice per metered key per process, which the record's
// credits_reserved entry for that process shows (the slice as reserved, an
// upper bound of its unspent part). A slice is at most
// max(cost, min(sliceCap, ceil(remaining/4))) + cost - 1, where cost is the
// request that reserved it and remaining the record's balance then. A
// reservation whose write fails (the store unreachable mid-commit) may
// have landed, so the slice it took is stranded too (its entry shows it
// until the holder's next reservation); a return that fails strands the
// slice it carried. Stranded credits are not returned automatically, since
// nobody knows how much of the slice was spent: SetCredits or AddCredits
// settles them by hand.
//
// SetCredits bumps the record's credits_epoch and clears credits_reserved;
// a slice belongs to the epoch it was reserved in and is dropped, not
// returned, by a process that sees a newer one (its own write, or the
// follower's delivery of another replica's, which Update waits for).
// AddCredits leaves slices valid.
//
// A refill schedule (Key.Refill) sets the balance to its amount once per
// period, as SetCredits would (epoch bumped, credits_reserved cleared, so
// slices reserved in the old period are void everywhere). It is applied
// inside the transaction that reads the record for a reservation, an
// AddCredits or a SetCredits (or an UpdateKey), and records its period's
// start in last_refill_at, so with any number of replicas racing it is
// applied once: the second transaction finds last_refill_at already at the
// boundary. The fast path knows the next boundary (balance.next) and leaves
// the decision to the record from then on, so no process spends an old
// period's slice, or refuses from an old period's exhaustion, after it.
// The crash bound above is unchanged: a refill voids stranded slices, as
// SetCredits does. Key and ListKeys show a refill that is due but not yet
// applied (nobody spent since the boundary) as applied, without writing it.
//
// Lock order: the ledger lock is never held while waiting for the backend.
type ledger struct {
	holder string // this Store's name in credits_reserved

	mu     sync.Mutex
	bal    map[string]*balance // balance record id -> this process's slice
	closed bool                // Close has begun: no new reservations
}

type balance struct {
	slice  int64  // reserved from the record, not yet spent
	epoch  uint64 // the record's credits_epoch the slice belongs to
	record int64  // the record's credits_remaining as last seen, for display
	// next is the record's next refill boundary (Unix ns) as last seen, 0
	// without a schedule: from then on only the record decides.
	next int64

	used int64 // spent in the current tick
	last int64 // spent in the tick before
	idle int   // ticks in a row with no spending

	// busy, while not nil, is closed when the reservation or return in
	// flight for this balance ends: one at a time, others wait.
	busy chan struct{}
	// stale: writes to the record may have been missed, so the slice's
	// epoch is checked against the record before it is spent again.
	stale bool
	// dropped: the balance left the ledger while a write was in flight;
	// that write's outcome is not applied.
	dropped bool
	// entry: the record's credits_reserved has an entry for this process,
	// to be removed when the slice goes back, even spent to 0.
	entry bool
	// exhausted: a reservation found the record short of a spend this
	// tick, so spends the record and slice as last seen cannot cover are
	// refused without reading it again. A write seen to the record, or the
	// next tick, clears it.
	exhausted bool
}

// Slice sizing, per balance and process.
const (
	// sliceCap bounds one slice, and so what a crash can strand per key.
	sliceCap = 1000
	// creditTick is how often the ledger measures spending rates and looks
	// for idle slices; a slice is returned after idleTicks ticks without
	// spending.
	creditTick = 500 * time.Millisecond
	idleTicks  = 2
)

// sliceSize is what to reserve for a spend of cost from a record holding
// rem (the caller makes sure the record covers the spend): about what this process spent in the last second, so a
// hot key writes about once a second and a slow one once a request; no more
// than a quarter of rem, so that near the end replicas do not strand
// credits in slices while others are refused; and never more than
// sliceCap.
func sliceSize(cost, recent, rem int64) int64 {
	n := min(max(recent, cost), max(cost, (rem+3)/4), max(cost, sliceCap))
	return min(n, rem)
}

func newLedger() *ledger {
	return &ledger{holder: rand.Text()[:16], bal: map[string]*balance{}}
}

// Spend implements authz.Credits: it takes cost from the key's balance if
// the balance covers it. The remaining balance it returns is the record's
// as last seen plus this process's unspent slice: exact for one process,
// approximate across replicas (their slices are not counted).
//
// A key under accounts (Credential.Accounts) spends cost from each balance
// that applies, its own first: a balance that cannot cover it refuses the
// request, and what the others gave is put back into this process's
// slices, so a refused request spends nothing. The remaining balance
// returned is the one that limits the key: the smallest, or the one that
// refused. A Flush or Close between a spend and its refund, which can
// only happen while the process stops, strands the refund (at most cost
// per balance, within the crash bound).
func (s *Store) Spend(ctx context.Context, c *authz.Credential, cost int) (int64, bool, error) {
	if cost < 1 {
		return 0, false, fmt.Errorf("spend credits: cost %d", cost)
	}
	if len(c.Accounts) == 0 {
		id := c.BalanceID
		if id == "" {
			id = c.ID
		}
		sp, err := s.spendOne(ctx, id, int64(cost))
		return sp.left, sp.ok, err
	}
	var (
		done  [4]spent // own, user, org, tenant
		n     int
		least int64 = -1
	)
	undo := func() {
		for _, d := range done[:n] {
			s.ledger.refund(d.id, d.epoch, int64(cost))
		}
	}
	spendFrom := func(id string) (bool, error) {
		sp, err := s.spendOne(ctx, id, int64(cost))
		switch {
		case isAccountID(id) && errors.Is(err, ErrNotFound):
			// Closed since the credential was read: it no longer applies.
			return true, nil
		case err != nil:
			undo()
			return false, err
		case !sp.ok:
			undo()
			least = sp.left
			return false, nil
		}
		if n < len(done) {
			done[n] = sp
			n++
		}
		if least < 0 || sp.left < least {
			least = sp.left
		}
		return true, nil
	}
	if c.BalanceID != "" {
		if ok, err := spendFrom(c.BalanceID); !ok || err != nil {
			return max(least, 0), false, err
		}
	}
	for _, id := range c.Accounts {
		if ok, err := spendFrom(id); !ok || err != nil {
			return max(least, 0), false, err
		}
	}
	return max(least, 0), true, nil
}

// spent is one balance's answer to a spend.
type spent struct {
	id    string
	epoch uint64 // the balance's epoch the spend came out of
	left  int64
	ok    bool
}

// refund puts n back into id's slice after a spend of epoch that another
// balance refused. A slice voided meanwhile (a SetCredits, a refill) takes
// nothing back: the balance was set anew.
func (l *ledger) refund(id string, epoch uint64, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.bal[id]; ok && !b.dropped && b.epoch == epoch {
		b.slice += n
		b.used -= n
	}
}

// spendOne spends cost from the balance id (a key's or an account's).
func (s *Store) spendOne(ctx context.Context, id string, cost int64) (spent, error) {
	l := s.ledger
	fresh := s.fresh == nil || s.fresh()
	l.mu.Lock()
	if b := l.bal[id]; b != nil && fresh {
		// Keys without a refill schedule do not read the clock.
		var now int64
		if b.next != 0 {
			now = s.opts.Now().UnixNano()
		}
		if left, ok, decided := b.local(cost, now); decided {
			sp := spent{id: id, epoch: b.epoch, left: left, ok: ok}
			l.mu.Unlock()
			return sp, nil
		}
	}
	l.mu.Unlock()
	sp, err := s.spendSlow(ctx, id, cost, !fresh)
	if err != nil {
		return spent{}, fmt.Errorf("spend credits: %w", err)
	}
	return sp, nil
}

// local decides a spend of cost from what this process holds, with no
// I/O: from the slice, or a refusal while the record was found short this
// tick. decided is false when only the backend can tell: also once now
// (Unix ns) reaches the next refill boundary, since the slice held and the
// record as last seen belong to the period that ended. l.mu is held.
func (b *balance) local(cost, now int64) (left int64, ok, decided bool) {
	switch {
	case b.stale, b.next != 0 && now >= b.next:
		return 0, false, false
	case b.slice >= cost:
		b.slice -= cost
		b.used += cost
		return b.record + b.slice, true, true
	case b.exhausted && b.record+b.slice < cost:
		return b.record + b.slice, false, true
	}
	return 0, false, false
}

// spendSlow reserves a new slice for id's balance (or, with verify, checks
// the one held against the record) and spends cost from it. Only one
// goroutine per balance writes; the others wait for it and try again.
func (s *Store) spendSlow(ctx context.Context, id string, cost int64, verify bool) (spent, error) {
	l := s.ledger
	for {
		if err := ctx.Err(); err != nil {
			return spent{}, err
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return spent{}, ErrClosed
		}
		b := l.bal[id]
		if b != nil && b.busy != nil {
			ch := b.busy
			l.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return spent{}, ctx.Err()
			}
		}
		if b != nil && !verify {
			var now int64
			if b.next != 0 {
				now = s.opts.Now().UnixNano()
			}
			if left, ok, decided := b.local(cost, now); decided {
				sp := spent{id: id, epoch: b.epoch, left: left, ok: ok}
				l.mu.Unlock()
				return sp, nil
			}
		}
		if b == nil {
			b = &balance{}
			l.bal[id] = b
		}
		// The slice held stays spendable meanwhile: the write adds to it.
		r := reservation{id: id, holder: l.holder, cost: cost, recent: b.used + b.last, left: b.slice, epoch: b.epoch}
		done := make(chan struct{})
		b.busy = done
		l.mu.Unlock()

		out, err := s.reserve(ctx, &r)

		l.mu.Lock()
		b.busy = nil
		close(done)
		switch {
		case err != nil:
			// The write may have landed or not: the slice it took is
			// stranded (its entry shows it) rather than risked twice.
			l.mu.Unlock()
			return spent{}, err
		case out.owner != id:
			// The key was rotated (the follower may not have said so yet):
			// nothing was written, and the slice held is its successor's.
			if !b.dropped {
				l.move(id, out.owner)
			}
			l.mu.Unlock()
			id = out.owner
			continue
		case out.gone:
			if l.bal[id] == b {
				delete(l.bal, id)
			}
			b.dropped = true
			l.mu.Unlock()
			if out.unmetered {
				return spent{}, vizerror.WrapWithMessage(fmt.Errorf("key %s: %w", id, ErrNotMetered), "key "+id+" has no credit balance")
			}
			if isAccountID(id) {
				return spent{}, notFound("account", id)
			}
			return spent{}, notFound("key", id)
		case b.dropped || out.epoch < b.epoch:
			// Deleted, or a SetCredits seen meanwhile outdated the slice.
			l.mu.Unlock()
			continue
		}
		if out.void {
			b.slice = 0
		}
		b.epoch, b.record, b.stale, b.next = out.epoch, out.record, false, out.next
		b.slice += out.take
		b.entry = b.entry || out.take > 0
		ok := b.slice >= cost
		if !ok && !out.short {
			// The slice and the record had room, but spends from the slice
			// while this write was in flight (a verify that took nothing,
			// racing Checks that still trusted the slice) used what it
			// counted on: reserve again rather than refuse a balance that
			// is not empty.
			l.mu.Unlock()
			continue
		}
		b.exhausted = !ok
		if ok {
			b.slice -= cost
			b.used += cost
		}
		sp := spent{id: id, epoch: b.epoch, left: b.record + b.slice, ok: ok}
		l.mu.Unlock()
		return sp, nil
	}
}

// reservation is one slice's write: what the ledger held when it began
// (left, of epoch) and what it needs.
type reservation struct {
	id, holder string
	cost       int64
	recent     int64  // spent here in the last second or so
	left       int64  // the slice held
	epoch      uint64 // the epoch left belongs to
}

// reserved is a reservation's outcome.
type reserved struct {
	owner     string // the record holding the balance (id, or a successor)
	gone      bool   // no such key, or no balance
	unmetered bool
	take      int64  // reserved now, to add to the slice held (0: none)
	void      bool   // the slice held is of an older epoch
	epoch     uint64 // the record's epoch
	record    int64  // the record's credits_remaining after the write
	next      int64  // the record's next refill boundary (see balance.next)
	// short: the slice held and the record together could not cover the
	// cost. Only then may the spend be refused.
	short bool
}

// reserve runs r in one transaction: enough for r.cost, with the slice
// held (unless an older epoch's), comes out of the record. When the slice
// held still covers cost (verify after missed writes), or the record
// cannot, the record is only read, unless a refill fell due.
func (s *Store) reserve(ctx context.Context, r *reservation) (reserved, error) {
	ctx, cancel := s.checkBound(ctx)
	defer cancel()
	var out reserved
	err := s.b.Batch(ctx, func(tx Tx) error {
		out = reserved{}
		rec, found, err := loadMeter(tx, r.id)
		if err != nil {
			return err
		}
		out.owner = rec.owner
		k := rec.m
		switch {
		case rec.owner != r.id:
			return nil
		case !found:
			out.gone = true
			return nil
		case k.CreditsRemaining == nil:
			out.gone, out.unmetered = true, true
			return nil
		}
		refilled := applyRefill(k, s.now())
		out.epoch, out.record, out.next = k.CreditsEpoch, *k.CreditsRemaining, refillNext(k)
		left := r.left
		if r.epoch != k.CreditsEpoch {
			left, out.void = 0, true // set or refilled since
		}
		rem := *k.CreditsRemaining
		out.short = left+rem < r.cost
		if left >= r.cost || out.short {
			if refilled {
				return rec.put(tx)
			}
			return nil
		}
		out.take = max(sliceSize(r.cost, r.recent, rem), r.cost-left)
		out.record = rem - out.take
		k.CreditsRemaining = &out.record
		if k.CreditsReserved == nil {
			k.CreditsReserved = map[string]int64{}
		}
		// An upper bound of what this process may still spend: spends of
		// left while this write is in flight are not subtracted.
		k.CreditsReserved[r.holder] = left + out.take
		return rec.put(tx)
	})
	if err != nil {
		return reserved{}, fmt.Errorf("reserve credits of %s: %w", balanceName(r.id), err)
	}
	return out, nil
}

// giveBack is one unspent slice on its way back to its record.
type giveBack struct {
	id    string
	b     *balance
	left  int64
	epoch uint64
	done  chan struct{}
}

// tickCredits measures spending rates and returns the slices of balances
// idle for idleTicks; balances idle with nothing held leave the ledger.
func (s *Store) tickCredits() error {
	l := s.ledger
	l.mu.Lock()
	var todo []giveBack
	for id, b := range l.bal {
		if b.busy != nil {
			continue
		}
		if b.used == 0 {
			b.idle++
		} else {
			b.idle = 0
		}
		b.last, b.used, b.exhausted = b.used, 0, false
		if b.idle < idleTicks {
			continue
		}
		if b.slice == 0 && !b.entry {
			delete(l.bal, id)
			b.dropped = true
			continue
		}
		todo = append(todo, l.takeBack(id, b))
	}
	l.mu.Unlock()
	return s.giveBack(todo)
}

// takeBack marks b's slice as on its way back. l.mu is held.
func (l *ledger) takeBack(id string, b *balance) giveBack {
	g := giveBack{id: id, b: b, left: b.slice, epoch: b.epoch, done: make(chan struct{})}
	b.slice, b.busy = 0, g.done
	return g
}

// returnAll gives every slice back (Flush, Close) once the reservations
// in flight have ended; with closing, no reservation starts after it.
func (s *Store) returnAll(closing bool) error {
	l := s.ledger
	l.mu.Lock()
	l.closed = l.closed || closing
	for {
		var wait chan struct{}
		for _, b := range l.bal {
			if b.busy != nil {
				wait = b.busy
				break
			}
		}
		if wait == nil {
			break
		}
		l.mu.Unlock()
		<-wait
		l.mu.Lock()
	}
	var todo []giveBack
	for id, b := range l.bal {
		if b.slice > 0 || b.entry {
			todo = append(todo, l.takeBack(id, b))
		}
	}
	l.mu.Unlock()
	return s.giveBack(todo)
}

// giveBack writes slices back to their records, flushChunk to a
// transaction. A failed write strands what it carried (it may have
// landed): the holder's credits_reserved entries still show it.
func (s *Store) giveBack(todo []giveBack) error {
	var errs []error
	for len(todo) > 0 {
		chunk := todo[:min(len(todo), flushChunk)]
		todo = todo[len(chunk):]
		now := make([]int64, len(chunk))
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		err := s.b.Batch(ctx, func(tx Tx) error {
			for i, g := range chunk {
				rec, found, err := loadMeter(tx, g.id)
				if err != nil {
					return err
				}
				k := rec.m
				now[i] = -1
				if !found || k.CreditsRemaining == nil || k.CreditsEpoch != g.epoch {
					continue // deleted, or set since: the slice is void
				}
				if _, ok := k.CreditsReserved[s.ledger.holder]; !ok && g.left == 0 {
					continue
				}
				n := *k.CreditsRemaining + g.left
				now[i] = n
				k.CreditsRemaining = &n
				delete(k.CreditsReserved, s.ledger.holder)
				if err := rec.put(tx); err != nil {
					return err
				}
			}
			return nil
		})
		cancel()
		l := s.ledger
		l.mu.Lock()
		for i, g := range chunk {
			if err == nil {
				g.b.entry = false
				if now[i] >= 0 && !g.b.dropped && g.b.epoch == g.epoch {
					g.b.record = now[i]
				}
			}
			g.b.busy = nil
			close(g.done)
		}
		l.mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("return unspent credits: %w", err)
	}
	return nil
}

// balanceRecord follows id's credits_owner chain (at most 8 hops) to the
// record holding the balance id spends: id's own, or a successor's.
func balanceRecord(tx Tx, id string) (k storedKey, owner string, found bool, err error) {
	for hops := 0; ; hops++ {
		k = storedKey{}
		if found, err = getKeyRecord(tx, id, &k); err != nil || !found || k.CreditsOwner == "" || hops == 8 {
			return k, id, found, err
		}
		id = k.CreditsOwner
	}
}

// meterRecord is a record holding a balance as the ledger reads and
// writes it: a key's or an account's.
type meterRecord struct {
	m     *Meter
	owner string // the ledger id of the record holding the balance
	put   func(Tx) error
}

// loadMeter reads the balance id spends: an account's, or a key's (its
// own, or its successor's; see balanceRecord). m is never nil.
func loadMeter(tx Tx, id string) (meterRecord, bool, error) {
	if isAccountID(id) {
		a := new(Account)
		found, err := getJSON(tx, bucketAccounts, id, a)
		return meterRecord{m: &a.Meter, owner: id, put: func(tx Tx) error { return putJSON(tx, bucketAccounts, id, a) }}, found, err
	}
	k, owner, found, err := balanceRecord(tx, id)
	kp := &k
	return meterRecord{m: &kp.Meter, owner: owner, put: func(tx Tx) error { return putKeyRecord(tx, owner, kp) }}, found, err
}

// balanceName names a ledger id in errors and logs.
func balanceName(id string) string {
	if isAccountID(id) {
		return "account " + id
	}
	return "key " + id
}

// held returns this process's unspent slice of id's balance, if it belongs
// to epoch.
func (l *ledger) held(id string, epoch uint64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.bal[id]; ok && b.epoch == epoch {
		return b.slice
	}
	return 0
}

// live returns the balance as this process last saw it: the record's
// remaining plus its unspent slice.
func (l *ledger) live(id string) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.bal[id]; ok {
		return b.record + b.slice, true
	}
	return 0, false
}

// rebase takes a balance another writer stored (a replica's reservation,
// a refill or a rotation through another replica's admin API) in the
// record id: k is its balance (nil: deleted), successor the key whose
// balance it spends now (a key rotated away from).
func (l *ledger) rebase(id string, k *Meter, successor string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.bal[id]
	switch {
	case !ok:
	case k == nil || successor == "" && k.CreditsRemaining == nil:
		delete(l.bal, id)
		b.dropped = true
	case successor != "":
		l.move(id, successor)
	case k.CreditsEpoch > b.epoch:
		b.slice, b.epoch, b.record, b.exhausted, b.entry = 0, k.CreditsEpoch, *k.CreditsRemaining, false, false
		b.next = refillNext(k)
	case k.CreditsEpoch == b.epoch:
		if b.record != *k.CreditsRemaining {
			b.record, b.exhausted = *k.CreditsRemaining, false
		}
		// A schedule set, changed or removed keeps the epoch.
		b.next = refillNext(k)
	}
}

// move hands the slice held for from to its successor to, whose record
// took over from's (balance, epoch and credits_reserved). l.mu is held.
func (l *ledger) move(from, to string) {
	b, ok := l.bal[from]
	if !ok {
		return
	}
	delete(l.bal, from)
	if o, ok := l.bal[to]; ok {
		// Only a successor that already spent here: its own slice stands,
		// and from's, whose write may be in flight, is dropped.
		b.dropped = true
		if b.busy == nil && o.epoch == b.epoch {
			o.slice += b.slice
		}
		return
	}
	l.bal[to] = b
}

// forget marks every slice as needing a check of its epoch before it is
// spent again, after writes may have been missed (a SetCredits among them).
func (l *ledger) forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.bal {
		b.stale = true
	}
}

// creditMove is a rotation's hand-over of a balance, for the ledger.
type creditMove struct{ from, to string }

// moved applies a committed rotation: the old key's slice is its
// successor's.
func (l *ledger) moved(m creditMove) {
	if m.from == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.move(m.from, m.to)
}

// AddCredits adds n (which may be negative, down to zero) to a metered
// key's balance; SetCredits sets the balance, making an unmetered key
// metered. Both are written before they return (on every live replica of a
// shared backend), and the returned Key shows the balance as Key does.
// Slices reserved before an AddCredits stay valid; SetCredits voids them
// everywhere, spent or not, so the balance afterwards is exactly n. A
// refill that fell due is applied first, so AddCredits adds to it.
func (s *Store) AddCredits(ctx context.Context, id string, n int64) (Key, error) {
	return s.changeCredits(ctx, id, false, func(cur *int64) (int64, error) {
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
	return s.changeCredits(ctx, id, true, func(*int64) (int64, error) { return n, nil })
}

func (s *Store) changeCredits(ctx context.Context, id string, set bool, next func(cur *int64) (int64, error)) (Key, error) {
	var out storedKey
	err := s.update(ctx, func(tx Tx, touch func(apikey.Hash)) error {
		k, err := getKey(tx, id)
		if err != nil {
			return err
		}
		applyRefill(&k.Meter, s.now())
		n, err := next(k.CreditsRemaining)
		if err != nil {
			return err
		}
		if k.CreditsRemaining == nil {
			// Becoming metered changes what the Check path must do.
			touch(apikey.Hash(k.Hash))
		}
		k.CreditsRemaining = &n
		if set {
			k.CreditsEpoch++
			k.CreditsReserved = nil
		}
		out = k
		return putKey(tx, &k, false)
	})
	if err != nil {
		return Key{}, fmt.Errorf("change credits: %w", err)
	}
	// The follower does the same for other replicas (and for this one on a
	// shared backend); bbolt has only this.
	s.ledger.rebase(id, &out.Meter, out.CreditsOwner)
	s.overlayCredits(&out.Key)
	return out.Key, nil
}
