package admin_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/secret"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// TestReadyChecks: /readyz is unready when a dependency that Checks need
// fails, only degraded when an optional one does, and names which.
func TestReadyChecks(t *testing.T) {
	dialErr := errors.New("dial tcp 10.9.8.7:6379: connect: connection refused (user ops)")
	var storeErr, redisErr atomic.Pointer[error]
	check := func(p *atomic.Pointer[error]) func(context.Context) error {
		return func(context.Context) error {
			if e := p.Load(); e != nil {
				return *e
			}
			return nil
		}
	}
	for _, tc := range []struct {
		name          string
		optionalRedis bool
		store, redis  error
		wantStatus    int
		wantBody      string
	}{
		{"all up", false, nil, nil, 200, `{"status":"ready","checks":{"redis":"ok","store":"ok"}}`},
		{"store down", false, dialErr, nil, 503, `{"status":"unavailable","checks":{"redis":"ok","store":"failed"}}`},
		{"redis down, fail closed", false, nil, dialErr, 503, `{"status":"unavailable","checks":{"redis":"failed","store":"ok"}}`},
		{"redis down, fail open", true, nil, dialErr, 200, `{"status":"degraded","checks":{"redis":"failed","store":"ok"}}`},
		{"both down, fail open", true, dialErr, dialErr, 503, `{"status":"unavailable","checks":{"redis":"failed","store":"failed"}}`},
		{"redis out of time", false, nil, context.DeadlineExceeded, 503, `{"status":"unavailable","checks":{"redis":"timeout","store":"ok"}}`},
		{"redis socket deadline", false, nil, fmt.Errorf("read tcp: %w", os.ErrDeadlineExceeded), 503, `{"status":"unavailable","checks":{"redis":"timeout","store":"ok"}}`},
		// etcd out of reach while the replica still trusts its cache.
		{"store degraded", false, keystore.Degraded(dialErr), nil, 200, `{"status":"degraded","checks":{"redis":"ok","store":"degraded"}}`},
		{"store degraded, its timeout", false, keystore.Degraded(context.DeadlineExceeded), nil, 200, `{"status":"degraded","checks":{"redis":"ok","store":"degraded"}}`},
		{"store degraded, redis down", false, keystore.Degraded(dialErr), dialErr, 503, `{"status":"unavailable","checks":{"redis":"failed","store":"degraded"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, admin.Options{Ready: []admin.ReadyCheck{
				{Name: "store", Check: check(&storeErr)},
				{Name: "redis", Check: check(&redisErr), Optional: tc.optionalRedis},
			}})
			storeErr.Store(&tc.store)
			redisErr.Store(&tc.redis)
			r := f.doAuth("GET", "/readyz", "", "")
			if r.status != tc.wantStatus || strings.TrimSpace(string(r.body)) != tc.wantBody {
				t.Fatalf("GET /readyz = %d %s, want %d %s", r.status, r.body, tc.wantStatus, tc.wantBody)
			}
			if strings.Contains(string(r.body), "10.9.8.7") {
				t.Error("the body shows the dependency's error")
			}
			if (tc.store != nil || tc.redis != nil) && !strings.Contains(f.logs.String(), `"msg":"ready check failed"`) {
				t.Errorf("a failed check is not logged:\n%s", f.logs.String())
			}
		})
	}
}

// TestReadyHangingDependency: a dependency that never answers, even one
// whose check ignores its context, makes /readyz answer "timeout" within
// the probe timeout; checks run concurrently, and concurrent /readyz
// requests share the one probe in flight instead of starting more.
func TestReadyHangingDependency(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var calls atomic.Int32
	hang := func(context.Context) error {
		calls.Add(1)
		<-release // ignores its context: a blackholed dependency at worst
		return nil
	}
	const timeout = 300 * time.Millisecond
	f := newFixture(t, admin.Options{ReadyTimeout: timeout, Ready: []admin.ReadyCheck{
		{Name: "store", Check: hang},
		{Name: "redis", Check: hang},
	}})
	want := `{"status":"unavailable","checks":{"redis":"timeout","store":"timeout"}}`
	get := func() {
		r := f.doAuth("GET", "/readyz", "", "")
		if r.status != 503 || strings.TrimSpace(string(r.body)) != want {
			t.Errorf("GET /readyz = %d %s, want 503 %s", r.status, r.body, want)
		}
	}
	start := time.Now()
	get()
	// One after the other, the two checks would take two timeouts.
	if took := time.Since(start); took < timeout || took >= 2*timeout {
		t.Errorf("a probe of two hanging checks took %v; want one timeout (%v)", took, timeout)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(get)
	}
	wg.Wait()
	if n := calls.Load(); n != 2 {
		t.Errorf("%d checks started for 20 requests, want one per dependency", n)
	}
}

func TestReadyOptionsChecked(t *testing.T) {
	ok := func(context.Context) error { return nil }
	for name, opts := range map[string]admin.Options{
		"no name":          {Ready: []admin.ReadyCheck{{Check: ok}}},
		"no check":         {Ready: []admin.ReadyCheck{{Name: "store"}}},
		"same name twice":  {Ready: []admin.ReadyCheck{{Name: "store", Check: ok}, {Name: "store", Check: ok}}},
		"negative timeout": {ReadyTimeout: -time.Second},
	} {
		s := newFixture(t, admin.Options{}).store
		opts.Token = secret.New(token)
		if _, err := admin.New(s, opts); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}
