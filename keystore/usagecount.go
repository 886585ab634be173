package keystore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/authz"
)

// Per-key usage: every decision about a known key is counted in memory, in
// the shard of its key id (the same as its last-used time), per hour. A
// flush writes this process's absolute totals of each key-hour under its
// own writer id, so that a write retried after an unknown outcome writes
// the same value again, and replicas never write the same row: a read sums
// every writer's row of an hour and counts each decision once.

// UsageCounts is what a key did in a period.
type UsageCounts struct {
	// Allowed counts requests let through (shadow allows included) and
	// introspection replies.
	Allowed int64 `json:"allowed"`
	// Denied401, Denied403, Denied429 count refusals of the key by status:
	// its state (revoked, expired, inactive), what it may reach (address,
	// environment, org, scopes), its budgets (rate limits, credits).
	Denied401 int64 `json:"denied_401"`
	Denied403 int64 `json:"denied_403"`
	Denied429 int64 `json:"denied_429"`
	// Credits is what allowed requests took from the key's balance.
	Credits int64 `json:"credits"`
}

func (c *UsageCounts) add(o UsageCounts) {
	c.Allowed += o.Allowed
	c.Denied401 += o.Denied401
	c.Denied403 += o.Denied403
	c.Denied429 += o.Denied429
	c.Credits += o.Credits
}

// UsageBucket is one hour or day of a key's usage.
type UsageBucket struct {
	Start time.Time `json:"start"`
	UsageCounts
}

// Granularity is the length of a UsageBucket.
type Granularity string

// The granularities KeyUsage reports in.
const (
	Hourly Granularity = "hour"
	Daily  Granularity = "day"
)

// DefaultUsageRetention is Options.UsageRetention's default: 90 days.
const DefaultUsageRetention = 90 * 24 * time.Hour

// maxUsageBuckets bounds one KeyUsage answer: a year and a bit of hours.
const maxUsageBuckets = 24 * 400

// hourWidth is the digits of an hour's unix seconds in a usage row's key:
// fixed, so that a key's rows sort in time order.
const hourWidth = 12

// hourCount is one key-hour of this process's counts: live, and as last
// written. writer is empty for the store's own writer id, else the row it
// goes to (see usageShard.dropped).
type hourCount struct {
	hour          int64
	writer        string
	live, flushed UsageCounts
}

// keyCounts is a key's pending use and counted hours: almost always one
// hour, two at the turn of an hour.
type keyCounts struct {
	// used is the latest use not yet written (zero: none).
	used  time.Time
	hours []hourCount
}

// use keeps the later of at and the pending use.
func (kc *keyCounts) use(at time.Time) {
	if kc.used.IsZero() || at.After(kc.used) {
		kc.used = at
	}
}

// key returns id's entry, made if new. Called with sh.mu held.
func (sh *usageShard) key(id string) *keyCounts {
	kc := sh.keys[id]
	if kc == nil {
		kc = &keyCounts{}
		sh.keys[id] = kc
	}
	return kc
}

// hourOf is the start of t's hour in unix seconds; false before 1970 or
// past what the row key's width holds, which no real clock shows.
func hourOf(t time.Time) (int64, bool) {
	s := t.Unix()
	if s < 0 || s >= 1e12 {
		return 0, false
	}
	return s - s%3600, true
}

// newWriterID names this store's rows for its lifetime. A restarted
// process writes new rows beside its old ones: its counts start at zero.
func newWriterID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on the systems Go supports; a time
		// still keeps two processes apart.
		return strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return hex.EncodeToString(b[:])
}

// KeyDecided implements authz.UsageRecorder.
func (s *Store) KeyDecided(c *authz.Credential, at time.Time, u authz.Use) {
	s.usage.decided(c.ID, at, u)
}

var _ authz.UsageRecorder = (*Store)(nil)

func (u *usage) decided(id string, at time.Time, use authz.Use) {
	var d UsageCounts
	switch use.Status {
	case 200:
		d.Allowed, d.Credits = 1, use.Credits
	case 401:
		d.Denied401 = 1
	case 403:
		d.Denied403 = 1
	case 429:
		d.Denied429 = 1
	}
	hour, ok := hourOf(at)
	counted := d != (UsageCounts{}) && ok
	if !counted && !use.Admitted {
		return
	}
	sh := u.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	kc := sh.key(id)
	if use.Admitted {
		kc.use(at)
	}
	if !counted {
		return
	}
	for i := range kc.hours {
		if h := &kc.hours[i]; h.hour == hour {
			h.live.add(d)
			return
		}
	}
	h := hourCount{hour: hour, live: d}
	if hour <= sh.dropped {
		// This hour's row may hold counts this process dropped from memory
		// after writing them; an absolute total starting again at zero
		// would overwrite them, so the late counts get a row of their own.
		h.writer = u.writer + "." + strconv.FormatUint(u.late.Add(1), 10)
	}
	kc.hours = append(kc.hours, h)
}

// usageRow is one row a flush writes.
type usageRow struct {
	id     string
	hour   int64
	writer string
	counts UsageCounts
}

func usageKey(id string, hour int64, writer string) []byte {
	b := make([]byte, 0, len(id)+hourWidth+len(writer)+2)
	b = append(b, id...)
	b = append(b, '/')
	b = appendHour(b, hour)
	b = append(b, '/')
	return append(b, writer...)
}

func appendHour(b []byte, hour int64) []byte {
	s := strconv.FormatInt(hour, 10)
	for range hourWidth - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}

// splitUsageKey reads a row key; ok is false for one this build did not
// write.
func splitUsageKey(k []byte) (id string, hour int64, writer string, ok bool) {
	s := string(k)
	w := strings.LastIndexByte(s, '/')
	if w < 0 {
		return "", 0, "", false
	}
	h := strings.LastIndexByte(s[:w], '/')
	if h < 0 || w-h-1 != hourWidth {
		return "", 0, "", false
	}
	hour, err := strconv.ParseInt(s[h+1:w], 10, 64)
	if err != nil {
		return "", 0, "", false
	}
	return s[:h], hour, s[w+1:], true
}

// flushCounts writes the totals of every key-hour counted since it was
// last written. A chunk that fails stays unwritten in memory and goes
// again next time, as the then current absolute totals: a chunk that
// failed but committed is overwritten with the same or larger values,
// never added to. Hours before the current one that are written and
// counted no further are dropped from memory.
func (u *usage) flushCounts() error {
	now, _ := hourOf(u.s.now())
	var rows []usageRow
	for i := range u.pending {
		sh := &u.pending[i]
		sh.mu.Lock()
		for id, kc := range sh.keys {
			for _, h := range kc.hours {
				if h.live != h.flushed {
					w := h.writer
					if w == "" {
						w = u.writer
					}
					rows = append(rows, usageRow{id, h.hour, w, h.live})
				}
			}
			sh.dropFlushed(id, kc, now)
		}
		sh.mu.Unlock()
	}
	var errs []error
	for len(rows) > 0 {
		chunk := rows[:min(len(rows), flushChunk)]
		rows = rows[len(chunk):]
		if err := u.writeCounts(chunk); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range chunk {
			sh := u.shard(r.id)
			sh.mu.Lock()
			if kc := sh.keys[r.id]; kc != nil {
				for i := range kc.hours {
					if h := &kc.hours[i]; h.hour == r.hour && (h.writer == r.writer || h.writer == "" && r.writer == u.writer) {
						h.flushed = r.counts
					}
				}
				sh.dropFlushed(r.id, kc, now)
			}
			sh.mu.Unlock()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("flush usage counts: %w", err)
	}
	return nil
}

// dropFlushed forgets the hours of id before now that are written as
// counted, and the key once nothing of it is pending, keeping memory to
// the keys used lately. Called with sh.mu held.
func (sh *usageShard) dropFlushed(id string, kc *keyCounts, now int64) {
	kept := kc.hours[:0]
	for _, h := range kc.hours {
		if h.hour < now && h.live == h.flushed {
			sh.dropped = max(sh.dropped, h.hour)
			continue
		}
		kept = append(kept, h)
	}
	clear(kc.hours[len(kept):])
	kc.hours = kept
	if len(kc.hours) == 0 && kc.used.IsZero() {
		delete(sh.keys, id)
	}
}

func (u *usage) writeCounts(rows []usageRow) error {
	vals := make([][]byte, len(rows))
	for i, r := range rows {
		v, err := json.Marshal(r.counts)
		if err != nil {
			return err
		}
		vals[i] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return u.s.b.Batch(ctx, func(tx Tx) error {
		for i, r := range rows {
			if err := tx.Put(bucketUsage, usageKey(r.id, r.hour, r.writer), vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// unflushed calls fn with each of id's hours in [from, to) counted in
// memory, with the row it goes to: its live totals supersede that row.
func (u *usage) unflushed(id string, from, to int64, fn func(hour int64, writer string, c UsageCounts)) {
	sh := u.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if kc := sh.keys[id]; kc != nil {
		for _, h := range kc.hours {
			if h.hour >= from && h.hour < to {
				w := h.writer
				if w == "" {
					w = u.writer
				}
				fn(h.hour, w, h.live)
			}
		}
	}
}

// hourRows reads id's usage in hours [from, to), summed over writers, with
// this process's unflushed counts in place of its rows.
func (s *Store) hourRows(tx Tx, id string, from, to int64) (map[int64]UsageCounts, bool, error) {
	type hw struct {
		hour   int64
		writer string
	}
	rows := map[hw]UsageCounts{}
	prefix := []byte(id + "/")
	start := appendHour(append([]byte(nil), prefix...), from)
	found := false
	err := tx.Scan(bucketUsage, prefix, start, func(k, v []byte) (bool, error) {
		kid, hour, writer, ok := splitUsageKey(k)
		if !ok || kid != id {
			return true, nil
		}
		if hour >= to {
			return false, nil
		}
		var c UsageCounts
		if err := json.Unmarshal(v, &c); err != nil {
			return false, fmt.Errorf("usage row %s: %w", k, err)
		}
		found = true
		rows[hw{hour, writer}] = c
		return true, nil
	})
	if err != nil {
		return nil, false, err
	}
	s.usage.unflushed(id, from, to, func(hour int64, writer string, c UsageCounts) {
		found = true
		rows[hw{hour, writer}] = c
	})
	out := make(map[int64]UsageCounts, len(rows))
	for k, c := range rows {
		sum := out[k.hour]
		sum.add(c)
		out[k.hour] = sum
	}
	return out, found, nil
}

// usageRange checks a requested period and returns it in hours, from
// inclusive, to exclusive, aligned to g in UTC.
func usageRange(from, to time.Time, g Granularity) (time.Time, int64, int64, error) {
	step := time.Hour
	switch g {
	case Hourly:
	case Daily:
		step = 24 * time.Hour
	default:
		return time.Time{}, 0, 0, refuse(ErrInvalid, "granularity %q: want hour or day", g)
	}
	// Truncate works from the zero time, which is midnight UTC: days are
	// UTC days.
	from, to = from.UTC().Truncate(step), to.UTC()
	if t := to.Truncate(step); !t.Equal(to) {
		to = t.Add(step)
	}
	if !to.After(from) {
		return time.Time{}, 0, 0, refuse(ErrInvalid, "from must be before to")
	}
	if to.Sub(from)/step > maxUsageBuckets {
		return time.Time{}, 0, 0, refuse(ErrInvalid, "at most %d buckets: use a shorter period or days", maxUsageBuckets)
	}
	fh, fok := hourOf(from)
	th, tok := hourOf(to)
	if !fok || !tok {
		return time.Time{}, 0, 0, refuse(ErrInvalid, "period outside 1970 to 33658")
	}
	return from, fh, th, nil
}

// KeyUsage reports key id's usage from from to to (rounded out to whole
// hours or UTC days), one bucket per hour or day, empty ones included. It
// sums every replica's written counts with this process's unflushed ones,
// so on one process it is exact right after the Checks; other replicas'
// counts show once they flush. A deleted key's usage stays readable until
// it expires.
func (s *Store) KeyUsage(ctx context.Context, id string, from, to time.Time, g Granularity) ([]UsageBucket, error) {
	start, fh, th, err := usageRange(from, to, g)
	if err != nil {
		return nil, fmt.Errorf("usage of key %q: %w", id, err)
	}
	var hours map[int64]UsageCounts
	err = s.view(ctx, func(tx Tx) error {
		var found bool
		var err error
		hours, found, err = s.hourRows(tx, id, fh, th)
		if err != nil || found {
			return err
		}
		if v, err := getByID(tx, id); err != nil || v != nil {
			return err
		}
		return notFound("key", id)
	})
	if err != nil {
		return nil, fmt.Errorf("usage of key %q: %w", id, err)
	}
	return usageBuckets(hours, start, fh, th, g), nil
}

// usageBuckets folds hourly counts into one bucket per hour or day from
// fh to th (Unix s), empty ones included; start is fh as a time.
func usageBuckets(hours map[int64]UsageCounts, start time.Time, fh, th int64, g Granularity) []UsageBucket {
	step := int64(3600)
	if g == Daily {
		step = 86400
	}
	out := make([]UsageBucket, 0, (th-fh)/step)
	for b := fh; b < th; b += step {
		ub := UsageBucket{Start: start.Add(time.Duration(b-fh) * time.Second)}
		for h := b; h < b+step; h += 3600 {
			ub.add(hours[h])
		}
		out = append(out, ub)
	}
	return out
}

// KeyUsageTotal is one key's share of UsageTotals.
type KeyUsageTotal struct {
	KeyID string `json:"key_id"`
	UsageCounts
}

// UsageReport is the usage of a tenant's or an org's keys over a period.
type UsageReport struct {
	TenantID string    `json:"tenant_id,omitempty"`
	OrgID    string    `json:"org_id,omitempty"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	// Totals sums Keys.
	Totals UsageCounts `json:"totals"`
	// Keys are the keys with any usage in the period, by id.
	Keys []KeyUsageTotal `json:"keys"`
}

// UsageTotals sums the usage, from from to to (rounded out to whole hours),
// of the keys the tenant or org holds now (an org's only, when both are
// given; the org must then belong to the tenant). Deleted keys are not in
// the tenant's or org's index any more, and so not in its totals.
func (s *Store) UsageTotals(ctx context.Context, tenantID, orgID string, from, to time.Time) (UsageReport, error) {
	start, fh, th, err := usageRange(from, to, Hourly)
	if err != nil {
		return UsageReport{}, fmt.Errorf("usage totals: %w", err)
	}
	rep := UsageReport{TenantID: tenantID, OrgID: orgID, From: start, To: time.Unix(th, 0).UTC(), Keys: []KeyUsageTotal{}}
	bucket, parent := bucketKeysByTenant, tenantID
	switch {
	case orgID != "":
		o, err := s.Org(ctx, orgID)
		if err != nil {
			return UsageReport{}, fmt.Errorf("usage totals: %w", err)
		}
		if tenantID != "" && o.TenantID != tenantID {
			return UsageReport{}, fmt.Errorf("usage totals: %w", refuse(ErrInvalid, "org %q is not in tenant %q", orgID, tenantID))
		}
		bucket, parent = bucketKeysByOrg, orgID
	case tenantID != "":
		if _, err := s.Tenant(ctx, tenantID); err != nil {
			return UsageReport{}, fmt.Errorf("usage totals: %w", err)
		}
	default:
		return UsageReport{}, fmt.Errorf("usage totals: %w", refuse(ErrInvalid, "give tenant_id or org_id"))
	}
	err = s.view(ctx, func(tx Tx) error {
		rep.Totals, rep.Keys = UsageCounts{}, rep.Keys[:0]
		return s.scanIDs(tx, bucket, parent, func(id string) error {
			hours, found, err := s.hourRows(tx, id, fh, th)
			if err != nil || !found {
				return err
			}
			kt := KeyUsageTotal{KeyID: id}
			for _, c := range hours {
				kt.add(c)
			}
			if kt.UsageCounts != (UsageCounts{}) {
				rep.Keys = append(rep.Keys, kt)
				rep.Totals.add(kt.UsageCounts)
			}
			return nil
		})
	})
	if err != nil {
		return UsageReport{}, fmt.Errorf("usage totals: %w", err)
	}
	return rep, nil
}

// pruneBatch bounds the rows one pruning transaction deletes (etcd's
// default limit is 128 operations), and pruneRun the rows one run deletes,
// so that a backlog is worked off over several flush ticks rather than in
// one long burst.
const (
	pruneBatch = flushChunk
	pruneRun   = 64 * pruneBatch
)

// PruneUsage deletes usage rows of hours that ended before the retention
// period (Options.UsageRetention) began, at most a few thousand per call.
// It reports how many it deleted and whether rows may remain. The store
// calls it by itself about hourly; every replica does, harmlessly.
func (s *Store) PruneUsage(ctx context.Context) (deleted int, more bool, err error) {
	if s.opts.UsageRetention < 0 || s.opts.ReadOnly {
		return 0, false, nil
	}
	cutoff, ok := hourOf(s.now().Add(-s.opts.UsageRetention))
	if !ok {
		return 0, false, nil
	}
	var start []byte
	for deleted < pruneRun {
		var old [][]byte
		done := false
		err := s.view(ctx, func(tx Tx) error {
			old, done = old[:0], false
			next := start
			for len(old) < pruneBatch {
				var seek []byte
				err := tx.Scan(bucketUsage, nil, next, func(k, _ []byte) (bool, error) {
					id, hour, _, ok := splitUsageKey(k)
					switch {
					case !ok:
						return true, nil
					case hour < cutoff:
						old = append(old, append([]byte(nil), k...))
						if len(old) == pruneBatch {
							seek = append(append([]byte(nil), k...), 0)
							return false, nil
						}
						return true, nil
					}
					// A key's rows are in time order: the rest of this
					// key's are recent, so skip to the next key's.
					seek = []byte(id + "0") // '0' follows '/'
					return false, nil
				})
				if err != nil {
					return err
				}
				if seek == nil {
					done = true
					break
				}
				next = seek
			}
			start = next
			return nil
		})
		if err != nil {
			return deleted, true, fmt.Errorf("prune usage: %w", err)
		}
		if len(old) > 0 {
			cctx, cancel := context.WithTimeout(ctx, opTimeout)
			err = s.b.Batch(cctx, func(tx Tx) error {
				for _, k := range old {
					if err := tx.Delete(bucketUsage, k); err != nil {
						return err
					}
				}
				return nil
			})
			cancel()
			if err != nil {
				return deleted, true, fmt.Errorf("prune usage: %w", err)
			}
			deleted += len(old)
		}
		if done {
			return deleted, false, nil
		}
	}
	return deleted, true, nil
}

// pruneEvery is how often the store prunes usage rows when the last run
// finished; one that stopped at its bound goes on at the next flush tick.
const pruneEvery = time.Hour

// noHour is usageShard.dropped before anything was dropped.
const noHour = math.MinInt64
