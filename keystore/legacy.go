package keystore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/keygate/keygate/keystore/apikey"
)

// legacyWrites follows key records that a process of a build before
// schema 3 writes by id into a shared store this build has upgraded (a
// replica not yet stopped, as the README asks). Such a write lands
// where this build no longer reads it on the Check path: the record
// under the key's hash would still say what it said before, and a key
// the old process revoked would work. So from the moment this store
// follows such a write, lookups of that hash read the record by id, as
// the old process wrote it, and the store moves the record under its
// hash (the upgrade's moveUnderHash, through a committed write that
// every replica follows); the move's write ends the detour.
type legacyWrites struct {
	// n counts the entries of ids, so that a lookup pays one atomic load
	// while there are none, which is always once old processes are gone.
	n   atomic.Int64
	ids sync.Map // apikey.Hash -> legacyWrite
	gen atomic.Uint64

	once sync.Once
	work chan legacyMove
	stop context.CancelFunc
}

// legacyWrite is one followed write by an older build; gen tells a later
// write of the same key from it.
type legacyWrite struct {
	id  string
	gen uint64
}

type legacyMove struct {
	h apikey.Hash
	w legacyWrite
}

var errLegacyStuck = errors.New("the record cannot be moved under its hash (unreadable, or its hash names another key)")

// id returns the id to read the key of hash h by, when an old process
// wrote it last.
func (l *legacyWrites) id(h apikey.Hash) (string, bool) {
	if l.n.Load() == 0 {
		return "", false
	}
	v, ok := l.ids.Load(h)
	if !ok {
		return "", false
	}
	return v.(legacyWrite).id, true
}

// wrote records that an old process wrote the record of key id, of hash
// h, by id, and asks s to move it.
func (l *legacyWrites) wrote(s *Store, h apikey.Hash, id string) {
	w := legacyWrite{id: id, gen: l.gen.Add(1)}
	if _, loaded := l.ids.Swap(h, w); !loaded {
		l.n.Add(1)
	}
	l.once.Do(func() {
		ctx, stop := context.WithCancel(context.Background())
		l.work, l.stop = make(chan legacyMove, 1024), stop
		go s.moveLegacy(ctx, l.work)
	})
	select {
	case l.work <- legacyMove{h, w}:
	default:
		// Full: the key stays read by id until a later write moves it.
		s.opts.Logger.Warn("key store: too many records of an older build to move at once", "key_id", id)
	}
}

// moved records that the record of hash h is under h again (or gone).
func (l *legacyWrites) moved(h apikey.Hash) {
	if l.n.Load() == 0 {
		return
	}
	if _, loaded := l.ids.LoadAndDelete(h); loaded {
		l.n.Add(-1)
	}
}

// done records that the write w of h needs no detour any more: unless a
// later write by an older build came meanwhile.
func (l *legacyWrites) done(h apikey.Hash, w legacyWrite) {
	if l.ids.CompareAndDelete(h, w) {
		l.n.Add(-1)
	}
}

func (l *legacyWrites) close() {
	l.once.Do(func() { l.stop = func() {} })
	l.stop()
}

// moveLegacy moves each record named on work under its hash, until ctx
// ends. Every replica following the old write does the same; the first
// move commits and the others find nothing left to move.
func (s *Store) moveLegacy(ctx context.Context, work <-chan legacyMove) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-work:
			id := m.w.id
			err := s.update(ctx, func(tx Tx, touch func(apikey.Hash)) error {
				v, err := tx.Get(bucketKeys, []byte(id))
				if err != nil || !isRecordByID(v) {
					return err
				}
				k, err := moveRecord(tx, []byte(id), v)
				if err != nil {
					return err
				}
				if k == nil {
					return errLegacyStuck
				}
				touch(apikey.Hash(k.Hash))
				// A key the older build created has its index entries in
				// their text form too.
				for _, ix := range [...]struct{ bucket, parent string }{{bucketKeysByTenant, k.TenantID}, {bucketKeysByOrg, k.OrgID}} {
					if ix.parent == "" {
						continue
					}
					old := []byte(ix.parent + "/" + id)
					if v, err := tx.Get(ix.bucket, old); err != nil {
						return err
					} else if v == nil {
						continue
					}
					if _, err := rewriteIndexEntry(ix.bucket)(tx, old, nil); err != nil {
						return err
					}
				}
				return nil
			})
			switch {
			case err == nil:
				// Moved, or already under its hash (moved by another
				// replica) or gone.
				s.legacy.done(m.h, m.w)
			case ctx.Err() == nil:
				s.opts.Logger.Error("key store: a record written by an older build stays read by id", "key_id", id, "err", err)
			}
		}
	}
}
