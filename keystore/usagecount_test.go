package keystore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
)

// usagePolicy has a route the test keys lack the scope for (403) and a
// dearer one (cost 2), beside the default route (cost 1).
var usagePolicy = authz.Policy{Rules: []authz.Rule{
	{Name: "admin", PathPrefix: "/admin", Scopes: []string{"admin"}},
	{Name: "paid", PathPrefix: "/paid", Cost: 2},
}}

// usageLimits is a budget no test exhausts: its 429s come from credits.
var usageLimits = authz.RateLimits{PerKeyOff: true}

func usageEngine(t testing.TB, s *Store, now func() time.Time) *authz.Engine {
	t.Helper()
	e, err := authz.New(authz.Config{Recorder: s, Credits: s, Policy: usagePolicy, Now: now, RateLimits: usageLimits}, s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func check(t testing.TB, e *authz.Engine, raw, path string) authz.Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), &authz.Request{Method: "GET", Path: path, Peer: "10.0.0.1", Headers: map[string]string{"x-api-key": raw}})
	if err != nil {
		t.Fatalf("decide %s: %v", path, err)
	}
	return d
}

func (f *fixture) usage(t *testing.T, id string, from, to time.Time, g Granularity) []UsageBucket {
	t.Helper()
	bs, err := f.s.KeyUsage(t.Context(), id, from, to, g)
	if err != nil {
		t.Fatalf("KeyUsage: %v", err)
	}
	return bs
}

func total(bs []UsageBucket) UsageCounts {
	var c UsageCounts
	for _, b := range bs {
		c.add(b.UsageCounts)
	}
	return c
}

// TestUsageCountsEveryDecision: allows, each kind of refusal and credits
// spent, through a real engine, exact before and after a flush and after
// the process restarts (a new writer beside the old rows).
func TestUsageCountsEveryDecision(t *testing.T) {
	f := newFixture(t, Options{})
	k := f.create(t, KeySpec{Scopes: []string{"read"}, CreditsRemaining: new(int64(10))})
	raw := k.Secret.Reveal()
	e := usageEngine(t, f.s, f.clock.Now)
	want := map[string]int{"/v1/x": 200, "/admin": 403, "/paid": 200}
	for range 7 {
		if d := check(t, e, raw, "/v1/x"); d.Status != want["/v1/x"] {
			t.Fatalf("status %d", d.Status)
		}
	}
	for _, p := range []string{"/admin", "/admin", "/paid"} {
		if d := check(t, e, raw, p); d.Status != want[p] {
			t.Fatalf("%s: status %d (%s)", p, d.Status, d.Reason)
		}
	}
	// 1 credit left, 2 wanted.
	for range 2 {
		if d := check(t, e, raw, "/paid"); d.Status != 429 {
			t.Fatalf("/paid: status %d (%s), want 429", d.Status, d.Reason)
		}
	}
	if _, err := f.s.RevokeKey(t.Context(), k.ID); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if d := check(t, e, raw, "/v1/x"); d.Status != 401 {
			t.Fatalf("revoked: status %d", d.Status)
		}
	}
	exp := UsageCounts{Allowed: 8, Denied401: 3, Denied403: 2, Denied429: 2, Credits: 9}
	now := f.clock.Now()
	from, to := now.Add(-time.Hour), now.Add(time.Hour)
	bs := f.usage(t, k.ID, from, to, Hourly)
	if len(bs) != 2 || !bs[1].Start.Equal(now.Truncate(time.Hour)) {
		t.Fatalf("buckets %+v", bs)
	}
	if got := total(bs); got != exp || bs[1].UsageCounts != exp {
		t.Fatalf("unflushed: %+v, want %+v", got, exp)
	}
	for range 2 { // a second flush writes nothing new, nor twice
		if err := f.s.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := total(f.usage(t, k.ID, from, to, Hourly)); got != exp {
			t.Fatalf("flushed: %+v, want %+v", got, exp)
		}
	}
	day := f.usage(t, k.ID, now, now.Add(time.Second), Daily)
	if len(day) != 1 || day[0].UsageCounts != exp || !day[0].Start.Equal(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("day: %+v", day)
	}
	// A restart: the new process counts under a new writer; the old
	// rows still count.
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t, Options{})
	k2 := f.create(t, KeySpec{})
	e = usageEngine(t, f.s, f.clock.Now)
	check(t, e, k2.Secret.Reveal(), "/v1/x")
	if got := total(f.usage(t, k.ID, from, to, Hourly)); got != exp {
		t.Fatalf("after restart: %+v, want %+v", got, exp)
	}
	rep, err := f.s.UsageTotals(t.Context(), f.tenant.ID, "", from, to)
	if err != nil {
		t.Fatal(err)
	}
	exp.Allowed++
	if rep.Totals != exp || len(rep.Keys) != 2 {
		t.Fatalf("tenant totals %+v, want %+v over 2 keys", rep, exp)
	}
	if _, err := f.s.KeyUsage(t.Context(), "key_nope", from, to, Hourly); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := f.s.KeyUsage(t.Context(), k.ID, to, from, Hourly); !errors.Is(err, ErrInvalid) {
		t.Fatalf("reversed period: %v", err)
	}
	if _, err := f.s.KeyUsage(t.Context(), k.ID, from, to, "week"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("granularity: %v", err)
	}
}

// failAfterCommit commits a Batch and then reports failure, as a shared
// backend does when the answer is lost: the caller cannot tell.
type failAfterCommit struct {
	Backend
	mu    sync.Mutex
	fails int
}

var errLostAnswer = errors.New("answer lost")

func (b *failAfterCommit) Batch(ctx context.Context, fn func(Tx) error) error {
	if err := b.Backend.Batch(ctx, fn); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fails > 0 {
		b.fails--
		return errLostAnswer
	}
	return nil
}

// TestUsageFlushRetriedCountsOnce: flushes that committed but reported
// failure are retried with absolute totals, which overwrite rather than
// add.
func TestUsageFlushRetriedCountsOnce(t *testing.T) {
	var fb *failAfterCommit
	wrapBackend = func(b Backend) Backend { fb = &failAfterCommit{Backend: b}; return fb }
	t.Cleanup(func() { wrapBackend = nil })
	f := newFixture(t, Options{})
	k := f.create(t, KeySpec{})
	e := usageEngine(t, f.s, f.clock.Now)
	now := f.clock.Now()
	n := 0
	for round := range 4 {
		for range 5 {
			check(t, e, k.Secret.Reveal(), "/v1/x")
			n++
		}
		fb.mu.Lock()
		fb.fails = round % 2 * 10 // every other round, every write "fails"
		fb.mu.Unlock()
		err := f.s.Flush()
		if round%2 == 1 && !errors.Is(err, errLostAnswer) {
			t.Fatalf("round %d: flush: %v", round, err)
		}
	}
	fb.mu.Lock()
	fb.fails = 0
	fb.mu.Unlock()
	if err := f.s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Reopening reads the rows alone: nothing is unflushed in memory.
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t, Options{})
	if got := total(f.usage(t, k.ID, now, now.Add(time.Hour), Hourly)); got.Allowed != int64(n) {
		t.Fatalf("allowed %d, want %d", got.Allowed, n)
	}
}

// TestUsageLateCountAfterDrop: a count for an hour the process has
// written and dropped from memory goes to a row of its own, so the rows
// of that hour still add up.
func TestUsageLateCountAfterDrop(t *testing.T) {
	f := newFixture(t, Options{})
	k := f.create(t, KeySpec{})
	start := f.clock.Now()
	then := func() time.Time { return start } // the engine's clock stays in the first hour
	e := usageEngine(t, f.s, then)
	for range 3 {
		check(t, e, k.Secret.Reveal(), "/v1/x")
	}
	if err := f.s.Flush(); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(2 * time.Hour)
	if err := f.s.Flush(); err != nil { // the first hour is dropped
		t.Fatal(err)
	}
	sh := f.s.usage.shard(k.ID)
	sh.mu.Lock()
	n := len(sh.keys)
	sh.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d keys still counted in memory after their hour was written", n)
	}
	for range 2 {
		check(t, e, k.Secret.Reveal(), "/v1/x")
	}
	if err := f.s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := total(f.usage(t, k.ID, start, start.Add(time.Hour), Hourly)); got.Allowed != 5 {
		t.Fatalf("allowed %d, want 5", got.Allowed)
	}
}

// TestUsageRetention: rows of hours older than the retention period go,
// newer ones stay.
func TestUsageRetention(t *testing.T) {
	f := newFixture(t, Options{UsageRetention: 48 * time.Hour, LastUsedFlush: time.Hour})
	k := f.create(t, KeySpec{})
	e := usageEngine(t, f.s, f.clock.Now)
	old := f.clock.Now()
	for range 4 {
		check(t, e, k.Secret.Reveal(), "/v1/x")
	}
	f.clock.Add(24 * time.Hour)
	recent := f.clock.Now()
	check(t, e, k.Secret.Reveal(), "/v1/x")
	if err := f.s.Flush(); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(25 * time.Hour) // old is now 49 h back, recent 25 h
	deleted, more, err := f.s.PruneUsage(t.Context())
	if err != nil || more || deleted != 1 {
		t.Fatalf("prune: deleted %d, more %v, err %v; want 1 row", deleted, more, err)
	}
	got := f.usage(t, k.ID, old, recent.Add(time.Hour), Daily)
	if total(got).Allowed != 1 {
		t.Fatalf("after pruning: %+v, want the recent hour's 1", got)
	}
}

// TestUsagePruneBounded: a backlog larger than one run is worked off over
// several, across many keys.
func TestUsagePruneBounded(t *testing.T) {
	f := newFixture(t, Options{UsageRetention: time.Hour, MaxOrgKeys: -1, LastUsedFlush: time.Hour})
	var ks []CreatedKey
	for range 4 {
		ks = append(ks, f.create(t, KeySpec{}))
	}
	rows := 0
	err := f.s.b.Batch(t.Context(), func(tx Tx) error {
		rows = 0
		base, _ := hourOf(f.clock.Now().Add(-100 * 24 * time.Hour))
		for _, k := range ks {
			for h := range 24 * 50 {
				if err := tx.Put(bucketUsage, usageKey(k.ID, base+int64(h)*3600, "w"), []byte(`{"allowed":1}`)); err != nil {
					return err
				}
				rows++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e := usageEngine(t, f.s, f.clock.Now)
	check(t, e, ks[0].Secret.Reveal(), "/v1/x")
	if err := f.s.Flush(); err != nil {
		t.Fatal(err)
	}
	deleted, runs := 0, 0
	for more := true; more; runs++ {
		n, m, err := f.s.PruneUsage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		deleted, more = deleted+n, m
	}
	if deleted != rows || runs < 2 {
		t.Fatalf("deleted %d of %d rows in %d runs", deleted, rows, runs)
	}
	now := f.clock.Now()
	if got := total(f.usage(t, ks[0].ID, now, now.Add(time.Second), Hourly)); got.Allowed != 1 {
		t.Fatalf("the current hour: %+v", got)
	}
}

// TestUsageCachedAllowAllocs: counting costs the cached allow no
// allocation once its key-hour exists.
func TestUsageCachedAllowAllocs(t *testing.T) {
	f := newFixture(t, Options{})
	k := f.create(t, KeySpec{})
	e, err := authz.New(authz.Config{Recorder: f.s, Now: f.clock.Now, RateLimits: usageLimits}, f.s)
	if err != nil {
		t.Fatal(err)
	}
	req := &authz.Request{Method: "GET", Path: "/v1/x", Peer: "10.0.0.1", Headers: map[string]string{"x-api-key": k.Secret.Reveal()}}
	for range 100 {
		e.Decide(context.Background(), req)
	}
	f.s.cache.pos.Wait()
	allocs := testing.AllocsPerRun(1000, func() {
		if d, _ := e.Decide(context.Background(), req); d.Status != 200 {
			t.Fatalf("status %d", d.Status)
		}
	})
	if allocs > 2 {
		t.Fatalf("%.1f allocations per cached allow, want at most 2", allocs)
	}
}

// TestUsageConcurrentChecks: Checks from many goroutines, flushes between
// them, every one counted once.
func TestUsageConcurrentChecks(t *testing.T) {
	f := newFixture(t, Options{})
	k := f.create(t, KeySpec{})
	e := usageEngine(t, f.s, f.clock.Now)
	const workers, per = 8, 200
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range per {
				check(t, e, k.Secret.Reveal(), "/v1/x")
			}
		})
	}
	wg.Go(func() {
		for range 10 {
			if err := f.s.Flush(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	now := f.clock.Now()
	if got := total(f.usage(t, k.ID, now, now.Add(time.Second), Hourly)); got.Allowed != workers*per {
		t.Fatalf("allowed %d, want %d", got.Allowed, workers*per)
	}
}

// BenchmarkRecord is what the cached allow pays the recorder: the
// last-used time alone (KeyUsed, before per-key usage) against the time
// and the counts (KeyDecided), from every core at once.
func BenchmarkRecord(b *testing.B) {
	s, err := Open(b.TempDir()+"/k.db", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	creds := make([]*authz.Credential, 256)
	for i := range creds {
		creds[i] = &authz.Credential{ID: "key-" + string(rune('a'+i%26)) + string(rune('a'+i/26))}
	}
	now := time.Now()
	for _, c := range creds {
		s.KeyDecided(c, now, authz.Use{Status: 200, Admitted: true})
	}
	for _, bc := range []struct {
		name string
		fn   func(c *authz.Credential)
	}{
		{"KeyUsed", func(c *authz.Credential) { s.KeyUsed(c, now) }},
		{"KeyDecided", func(c *authz.Credential) { s.KeyDecided(c, now, authz.Use{Status: 200, Admitted: true}) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					bc.fn(creds[i%len(creds)])
					i++
				}
			})
		})
	}
}
