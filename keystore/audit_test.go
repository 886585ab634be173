package keystore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func appendAudit(t *testing.T, s *Store, e AuditEntry) AuditEntry {
	t.Helper()
	got, err := s.AppendAudit(t.Context(), e)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func actions(p AuditPage) []string {
	var out []string
	for _, e := range p.Entries {
		out = append(out, e.Action)
	}
	return out
}

func TestAuditOrderAndFilters(t *testing.T) {
	f := newFixture(t, Options{})
	base := f.clock.Now()
	// Appended out of time order: the log lists by time.
	appendAudit(t, f.s, AuditEntry{Time: base.Add(2 * time.Minute), Action: "keys.revoke", Targets: map[string]string{"key_id": "k1"}, TenantID: "t1", Outcome: AuditOK, Status: 200})
	appendAudit(t, f.s, AuditEntry{Time: base, Action: "tenants.create", Targets: map[string]string{"tenant_id": "t1"}, TenantID: "t1", Outcome: AuditOK, Status: 201})
	appendAudit(t, f.s, AuditEntry{Time: base.Add(time.Minute), Action: "keys.create", Targets: map[string]string{"key_id": "k1", "org_id": "o1"}, TenantID: "t1", OrgID: "o1", Outcome: AuditOK, Status: 201})
	appendAudit(t, f.s, AuditEntry{Time: base.Add(3 * time.Minute), Action: "admin.unauthorized", Outcome: AuditRefused, Status: 401})
	stamped := appendAudit(t, f.s, AuditEntry{Action: "tenants.create", Targets: map[string]string{"tenant_id": "t2"}, TenantID: "t2"})
	if !stamped.Time.Equal(base) || stamped.ID == "" {
		t.Fatalf("entry without a time is stamped now: %+v", stamped)
	}

	for _, tc := range []struct {
		name string
		f    AuditFilter
		want []string
	}{
		{"all", AuditFilter{}, []string{"tenants.create", "tenants.create", "keys.create", "keys.revoke", "admin.unauthorized"}},
		{"since", AuditFilter{Since: base.Add(time.Minute)}, []string{"keys.create", "keys.revoke", "admin.unauthorized"}},
		{"until", AuditFilter{Until: base.Add(2 * time.Minute)}, []string{"tenants.create", "tenants.create", "keys.create"}},
		{"window", AuditFilter{Since: base.Add(time.Minute), Until: base.Add(3 * time.Minute)}, []string{"keys.create", "keys.revoke"}},
		{"target", AuditFilter{Target: "k1"}, []string{"keys.create", "keys.revoke"}},
		{"target org", AuditFilter{Target: "o1"}, []string{"keys.create"}},
		{"action", AuditFilter{Action: "keys.revoke"}, []string{"keys.revoke"}},
		{"action kind", AuditFilter{Action: "keys"}, []string{"keys.create", "keys.revoke"}},
		{"action kind is not a prefix", AuditFilter{Action: "key"}, nil},
		{"tenant", AuditFilter{TenantID: "t2"}, []string{"tenants.create"}},
		{"org", AuditFilter{OrgID: "o1"}, []string{"keys.create"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := f.s.ListAudit(t.Context(), tc.f, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := actions(p); fmt.Sprint(got) != fmt.Sprint(tc.want) || p.HasMore {
				t.Fatalf("got %v (has_more %v), want %v", got, p.HasMore, tc.want)
			}
		})
	}
}

func TestAuditCursor(t *testing.T) {
	f := newFixture(t, Options{})
	base := f.clock.Now()
	var want []string
	for i := range 7 {
		// Several entries share a nanosecond: the writer and sequence keep
		// them apart and in order.
		e := appendAudit(t, f.s, AuditEntry{Time: base.Add(time.Duration(i/2) * time.Second), Action: fmt.Sprint("a.", i)})
		want = append(want, e.ID)
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		p, err := f.s.ListAudit(t.Context(), AuditFilter{}, cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Entries {
			got = append(got, e.ID)
		}
		if !p.HasMore {
			break
		}
		cursor = p.NextCursor
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("paged ids\n%v\nwant\n%v", got, want)
	}
	// A filtered listing pages too.
	p, err := f.s.ListAudit(t.Context(), AuditFilter{Action: "a.5"}, want[2], 1)
	if err != nil || len(p.Entries) != 1 || p.Entries[0].ID != want[5] || p.HasMore {
		t.Fatalf("filtered page after a cursor: %+v, %v", p, err)
	}
	for _, bad := range []string{"x", "123/a/b", want[0] + "\x00" + string(make([]byte, 100))} {
		if _, err := f.s.ListAudit(t.Context(), AuditFilter{}, bad, 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("cursor %q: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := f.s.ListAudit(t.Context(), AuditFilter{}, "", maxPageSize+1); !errors.Is(err, ErrInvalid) {
		t.Errorf("limit too large: %v", err)
	}
	if _, err := f.s.ListAudit(t.Context(), AuditFilter{Since: base, Until: base}, "", 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty window: %v", err)
	}
}

func TestAuditPrune(t *testing.T) {
	f := newFixture(t, Options{})
	base := f.clock.Now()
	n := pruneChunk*2 + 5 // more than one prune transaction
	for i := range n {
		appendAudit(t, f.s, AuditEntry{Time: base.Add(time.Duration(i) * time.Second), Action: "a.b"})
	}
	deleted, err := f.s.PruneAudit(t.Context(), base.Add(time.Duration(n-3)*time.Second))
	if err != nil || deleted != n-3 {
		t.Fatalf("PruneAudit = %d, %v; want %d", deleted, err, n-3)
	}
	p, err := f.s.ListAudit(t.Context(), AuditFilter{}, "", 0)
	if err != nil || len(p.Entries) != 3 || !p.Entries[0].Time.Equal(base.Add(time.Duration(n-3)*time.Second)) {
		t.Fatalf("after prune: %d entries, %v", len(p.Entries), err)
	}
	if deleted, err := f.s.PruneAudit(t.Context(), base); err != nil || deleted != 0 {
		t.Fatalf("nothing older: %d, %v", deleted, err)
	}
}

// TestAuditRetainKeepsForever: a retention of zero or less never prunes.
func TestAuditRetainKeepsForever(t *testing.T) {
	f := newFixture(t, Options{})
	appendAudit(t, f.s, AuditEntry{Time: f.clock.Now().Add(-365 * 24 * time.Hour), Action: "a.b"})
	done := make(chan struct{})
	go func() { f.s.RetainAudit(t.Context(), 0, nil); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RetainAudit(0) did not return")
	}
	if p, _ := f.s.ListAudit(t.Context(), AuditFilter{}, "", 0); len(p.Entries) != 1 {
		t.Fatalf("entries: %d", len(p.Entries))
	}
}

// TestAuditRetainPrunes: the retention loop's first pass prunes what is
// older than the retention.
func TestAuditRetainPrunes(t *testing.T) {
	f := newFixture(t, Options{})
	appendAudit(t, f.s, AuditEntry{Time: f.clock.Now().Add(-100 * 24 * time.Hour), Action: "a.old"})
	appendAudit(t, f.s, AuditEntry{Time: f.clock.Now().Add(-time.Hour), Action: "a.new"})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { f.s.RetainAudit(ctx, DefaultAuditRetention, nil); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := f.s.ListAudit(t.Context(), AuditFilter{}, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(actions(p)) == "[a.new]" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not pruned: %v", actions(p))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAuditConcurrentAppends: entries appended at once, by many writers
// at the same instant, all get keys of their own and none is lost.
func TestAuditConcurrentAppends(t *testing.T) {
	f := newFixture(t, Options{})
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// One instant for all: only the writer and sequence differ.
				_, err := f.s.AppendAudit(t.Context(), AuditEntry{Time: f.clock.Now(), Action: fmt.Sprintf("w%d.%d", w, i)})
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	p, err := f.s.ListAudit(t.Context(), AuditFilter{}, "", maxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range p.Entries {
		if seen[e.Action] {
			t.Fatalf("%s twice", e.Action)
		}
		seen[e.Action] = true
	}
	if len(seen) != workers*each {
		t.Fatalf("%d entries, want %d", len(seen), workers*each)
	}
}

func TestAuditRefusesOversizedEntry(t *testing.T) {
	f := newFixture(t, Options{})
	big := string(make([]byte, maxAuditEntryBytes))
	if _, err := f.s.AppendAudit(t.Context(), AuditEntry{Action: "a.b", RequestID: big}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized entry: %v", err)
	}
}

func TestAuditOutcome(t *testing.T) {
	for status, want := range map[int]string{200: AuditOK, 201: AuditOK, 204: AuditOK, 400: AuditRefused, 401: AuditRefused, 403: AuditRefused, 404: AuditRefused, 499: AuditRefused, 500: AuditFailed, 503: AuditFailed} {
		if got := AuditOutcome(status); got != want {
			t.Errorf("AuditOutcome(%d) = %q, want %q", status, got, want)
		}
	}
}
