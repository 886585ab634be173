package keystore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// AuditEntry is one admin request in the audit log: who made it (a token's
// id and name, never the token), what it did to which records, and how it
// ended. Entries are only ever appended (and pruned by age).
type AuditEntry struct {
	// ID is the entry's key in the log; it sorts by Time.
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// TokenID and TokenName name the admin token; both empty when the
	// request did not authenticate. The bootstrap token has no id.
	TokenID   string `json:"token_id,omitempty"`
	TokenName string `json:"token_name,omitempty"`
	// Action names what was asked, e.g. "keys.revoke", "tenants.create",
	// "admin.unauthorized".
	Action string `json:"action"`
	// Targets are the ids the request named or created, by kind: key_id,
	// tenant_id, org_id, user_id, admin_token_id.
	Targets map[string]string `json:"targets,omitempty"`
	// TenantID and OrgID are the tenant and org the targets belong to, when
	// known, so a token bound to one sees only its own entries.
	TenantID string `json:"tenant_id,omitempty"`
	OrgID    string `json:"org_id,omitempty"`
	// Outcome is "ok" (2xx and 3xx), "refused" (4xx) or "failed" (5xx).
	Outcome    string `json:"outcome"`
	Status     int    `json:"status"`
	RequestID  string `json:"request_id,omitempty"`
	ClientAddr string `json:"client_addr,omitempty"`
	Method     string `json:"method,omitempty"`
	Route      string `json:"route,omitempty"`
}

// Outcomes of an AuditEntry.
const (
	AuditOK      = "ok"
	AuditRefused = "refused"
	AuditFailed  = "failed"
)

// AuditOutcome classifies an HTTP status.
func AuditOutcome(status int) string {
	switch {
	case status >= 500:
		return AuditFailed
	case status >= 400:
		return AuditRefused
	}
	return AuditOK
}

// AuditFilter selects audit entries. Zero fields select everything.
type AuditFilter struct {
	// Since (inclusive) and Until (exclusive) bound the entries' times.
	Since, Until time.Time
	// Target selects entries that name this id as any of their targets.
	Target string
	// Action selects entries of this action; a name without a dot ("keys")
	// selects every action on that kind of record ("keys.create", ...).
	Action string
	// TenantID and OrgID select entries about that tenant or org: the reach
	// of an admin token bound to one.
	TenantID, OrgID string
}

// AuditPage is one page of the audit log, oldest first.
type AuditPage struct {
	Entries    []AuditEntry `json:"data"`
	NextCursor string       `json:"next_cursor,omitempty"`
	HasMore    bool         `json:"has_more"`
}

// auditWriter makes this process's audit keys its own: a random id, so
// that replicas writing at the same nanosecond never collide, and a
// sequence shared by every Store in the process (tests run several), so
// that no entry ever overwrites another.
var auditWriter struct {
	once sync.Once
	id   string
	err  error
	seq  atomic.Uint64
}

func auditWriterID() (string, error) {
	w := &auditWriter
	w.once.Do(func() {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			w.err = fmt.Errorf("audit writer id: %w", err)
			return
		}
		w.id = hex.EncodeToString(b[:])
	})
	return w.id, w.err
}

// auditTimeDigits is the width of an entry key's time part: unix
// nanoseconds, zero-padded so that keys sort by time.
const auditTimeDigits = 20

func auditTimeKey(t time.Time) string {
	return fmt.Sprintf("%0*d", auditTimeDigits, t.UnixNano())
}

// maxAuditEntryBytes bounds one stored entry: what a client sent (ids in
// the path, a request id) is already bounded, but the log is written on
// every refused request and must not be a place to store large values.
const maxAuditEntryBytes = 8 << 10

// AppendAudit adds e to the audit log, stamped with the time now unless e
// has one, and returns it as stored. It is one write, under a key of this
// store's own, and never replaces an entry.
func (s *Store) AppendAudit(ctx context.Context, e AuditEntry) (AuditEntry, error) {
	writer, err := auditWriterID()
	if err != nil {
		return AuditEntry{}, fmt.Errorf("append audit: %w", err)
	}
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	e.Time = e.Time.UTC()
	if e.Time.UnixNano() < 0 {
		return AuditEntry{}, fmt.Errorf("append audit: %w", refuse(ErrInvalid, "time %s is before 1970", e.Time.Format(time.RFC3339)))
	}
	e.ID = auditTimeKey(e.Time) + "/" + writer + "/" + fmt.Sprintf("%012d", auditWriter.seq.Add(1))
	raw, err := json.Marshal(&e)
	if err != nil {
		return AuditEntry{}, fmt.Errorf("append audit: encode: %w", err)
	}
	if len(raw) > maxAuditEntryBytes {
		return AuditEntry{}, fmt.Errorf("append audit: %w", refuse(ErrInvalid, "entry of %d bytes, at most %d", len(raw), maxAuditEntryBytes))
	}
	// Batch: no cached credential depends on the log, so a shared backend
	// need not wait for every replica to apply the entry.
	err = s.batch(ctx, func(tx Tx) error {
		old, err := tx.Get(bucketAudit, []byte(e.ID))
		if err != nil {
			return err
		}
		if old != nil {
			return fmt.Errorf("entry %s: %w", e.ID, ErrConflict)
		}
		return tx.Put(bucketAudit, []byte(e.ID), raw)
	})
	if err != nil {
		return AuditEntry{}, fmt.Errorf("append audit: %w", err)
	}
	return e, nil
}

// batch is update for bookkeeping writes that touch no credential.
func (s *Store) batch(ctx context.Context, fn func(tx Tx) error) error {
	if s.cache.isClosed() {
		return ErrClosed
	}
	if err := s.notOpen(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	return s.b.Batch(ctx, fn)
}

// maxAuditScan bounds how many entries one page reads: a filter that
// matches little must not read the whole log in one transaction. A page
// that stops there has fewer entries than asked and a cursor to go on.
const maxAuditScan = 10_000

// ListAudit returns one page of the entries f selects, oldest first,
// after cursor (the NextCursor of the previous page; empty for the first).
// limit is the page size: zero 50, at most 1000.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter, cursor string, limit int) (AuditPage, error) {
	switch {
	case limit == 0:
		limit = defaultPageSize
	case limit < 0 || limit > maxPageSize:
		return AuditPage{}, fmt.Errorf("list audit: %w", refuse(ErrInvalid, "limit must be 1 to %d", maxPageSize))
	}
	if cursor != "" && !validAuditID(cursor) {
		return AuditPage{}, fmt.Errorf("list audit: %w", refuse(ErrInvalid, "cursor %q is not an audit entry id", cursor))
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return AuditPage{}, fmt.Errorf("list audit: %w", refuse(ErrInvalid, "until must be after since"))
	}
	var start []byte
	if !f.Since.IsZero() && f.Since.UnixNano() > 0 {
		start = []byte(auditTimeKey(f.Since))
	}
	if cursor != "" && bytes.Compare([]byte(cursor), start) > 0 {
		start = []byte(cursor)
	}
	var until []byte
	if !f.Until.IsZero() {
		if f.Until.UnixNano() <= 0 {
			return AuditPage{Entries: []AuditEntry{}}, nil
		}
		until = []byte(auditTimeKey(f.Until))
	}
	page := AuditPage{Entries: []AuditEntry{}}
	err := s.view(ctx, func(tx Tx) error {
		scanned := 0
		var lastScanned []byte
		return tx.Scan(bucketAudit, nil, start, func(k, v []byte) (bool, error) {
			if cursor != "" && string(k) == cursor {
				return true, nil
			}
			if until != nil && bytes.Compare(k, until) >= 0 {
				return false, nil
			}
			if scanned == maxAuditScan {
				page.HasMore, page.NextCursor = true, string(lastScanned)
				return false, nil
			}
			scanned++
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return false, fmt.Errorf("decode audit entry %s: %w", k, err)
			}
			e.ID = string(k) // the key is what a cursor continues from
			if !f.matches(&e) {
				lastScanned = append(lastScanned[:0], k...)
				return true, nil
			}
			if len(page.Entries) == limit {
				page.HasMore, page.NextCursor = true, page.Entries[len(page.Entries)-1].ID
				return false, nil
			}
			page.Entries = append(page.Entries, e)
			lastScanned = append(lastScanned[:0], k...)
			return true, nil
		})
	})
	if err != nil {
		return AuditPage{}, fmt.Errorf("list audit: %w", err)
	}
	return page, nil
}

func (f *AuditFilter) matches(e *AuditEntry) bool {
	switch {
	case f.TenantID != "" && e.TenantID != f.TenantID,
		f.OrgID != "" && e.OrgID != f.OrgID:
		return false
	case f.Action != "" && e.Action != f.Action &&
		(strings.Contains(f.Action, ".") || !strings.HasPrefix(e.Action, f.Action+".")):
		return false
	}
	if f.Target == "" {
		return true
	}
	for _, id := range e.Targets {
		if id == f.Target {
			return true
		}
	}
	return false
}

// validAuditID reports whether id has the shape of an entry's key, so a
// cursor from elsewhere is refused rather than silently start the scan at
// some other point.
func validAuditID(id string) bool {
	ts, rest, ok := strings.Cut(id, "/")
	if !ok || len(ts) != auditTimeDigits || len(id) > 100 {
		return false
	}
	if _, err := strconv.ParseUint(ts, 10, 64); err != nil {
		return false
	}
	writer, seq, ok := strings.Cut(rest, "/")
	return ok && writer != "" && seq != ""
}

// pruneChunk bounds how many entries one prune transaction deletes: etcd
// refuses transactions of more than 128 operations by default.
const pruneChunk = flushChunk

// PruneAudit deletes the entries older than before and returns how many it
// deleted. Replicas may prune at once: deleting an entry another already
// deleted is harmless.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int, error) {
	if before.UnixNano() <= 0 {
		return 0, nil
	}
	end := []byte(auditTimeKey(before))
	deleted := 0
	for {
		var keys [][]byte
		err := s.view(ctx, func(tx Tx) error {
			keys = keys[:0]
			return tx.Scan(bucketAudit, nil, nil, func(k, _ []byte) (bool, error) {
				if bytes.Compare(k, end) >= 0 || len(keys) == pruneChunk {
					return false, nil
				}
				keys = append(keys, bytes.Clone(k))
				return true, nil
			})
		})
		if err != nil {
			return deleted, fmt.Errorf("prune audit: %w", err)
		}
		if len(keys) == 0 {
			return deleted, nil
		}
		err = s.batch(ctx, func(tx Tx) error {
			for _, k := range keys {
				if err := tx.Delete(bucketAudit, k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return deleted, fmt.Errorf("prune audit: %w", err)
		}
		deleted += len(keys)
		if len(keys) < pruneChunk {
			return deleted, nil
		}
	}
}

// DefaultAuditRetention is how long audit entries are kept unless
// configured otherwise.
const DefaultAuditRetention = 90 * 24 * time.Hour

// auditPruneEvery is how often RetainAudit prunes: entries live at most
// this much longer than the retention.
const auditPruneEvery = time.Hour

// RetainAudit prunes entries older than keep now and then every hour,
// until ctx ends. keep <= 0 keeps every entry: it returns at once.
func (s *Store) RetainAudit(ctx context.Context, keep time.Duration, log *slog.Logger) {
	if keep <= 0 {
		return
	}
	if log == nil {
		log = s.opts.Logger
	}
	t := time.NewTicker(auditPruneEvery)
	defer t.Stop()
	for {
		n, err := s.PruneAudit(ctx, s.now().Add(-keep))
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("audit log: prune failed", "error", err.Error(), "pruned", n)
		case n > 0:
			log.Info("audit log: pruned", "entries", n, "retention", keep.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
