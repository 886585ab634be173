package envoy_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
)

// TestChangesUnderLoad: while many goroutines send Checks for a key through
// the real gRPC server, the key is revoked (or loses a scope, is
// deactivated, or expires); once the change has returned, not one Check
// that starts afterwards is allowed.
func TestChangesUnderLoad(t *testing.T) {
	type change struct {
		name  string
		spec  keystore.KeySpec
		apply func(t *testing.T, h *harness, id string, clock *atomic.Int64)
	}
	changes := []change{
		{"revoke", keystore.KeySpec{}, func(t *testing.T, h *harness, id string, _ *atomic.Int64) {
			if _, err := h.store.RevokeKey(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}},
		{"scope removed", keystore.KeySpec{Scopes: []string{"vault:read", "vault:write"}}, func(t *testing.T, h *harness, id string, _ *atomic.Int64) {
			if _, err := h.store.UpdateKey(t.Context(), id, keystore.KeyUpdate{Scopes: &[]string{"vault:read"}}); err != nil {
				t.Fatal(err)
			}
		}},
		{"inactive", keystore.KeySpec{}, func(t *testing.T, h *harness, id string, _ *atomic.Int64) {
			if _, err := h.store.UpdateKey(t.Context(), id, keystore.KeyUpdate{Status: new(authz.StatusInactive)}); err != nil {
				t.Fatal(err)
			}
		}},
		{"expiry passes", keystore.KeySpec{ExpiresAt: new(time.Unix(2_000_000_000, 0))}, func(t *testing.T, h *harness, id string, clock *atomic.Int64) {
			clock.Store(2_000_000_000) // the moment of expiry
		}},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			var clock atomic.Int64
			clock.Store(1_900_000_000)
			h := start(t, authz.Config{
				Now: func() time.Time { return time.Unix(clock.Load(), 0) },
				Policy: authz.Policy{Rules: []authz.Rule{
					{Name: "write", PathPrefix: "/", Scopes: c.spec.Scopes},
				}},
				RateLimits: authz.RateLimits{Tiers: map[string]authz.LimitSet{"standard": authz.One("standard", ratelimit.Limit{Requests: 1 << 20, Window: time.Second})}},
			})
			k := h.key(t, c.spec)
			req := checkRequest(map[string]string{"x-api-key": k.Secret.Reveal()})
			var (
				changed  atomic.Bool
				badAfter atomic.Int64
				okBefore atomic.Int64
				warm     sync.WaitGroup
				done     sync.WaitGroup
			)
			const workers, after = 16, 150
			warm.Add(workers)
			done.Add(workers)
			for w := 0; w < workers; w++ {
				go func() {
					defer done.Done()
					n, left := 0, after
					for left > 0 {
						startedAfter := changed.Load()
						resp, err := h.client.Check(context.Background(), req)
						if err != nil {
							t.Error(err)
							return
						}
						allowed := resp.GetOkResponse() != nil
						switch {
						case startedAfter && allowed:
							badAfter.Add(1)
						case !startedAfter && allowed:
							okBefore.Add(1)
						}
						if n++; n == 20 {
							warm.Done()
						}
						if startedAfter {
							left--
						}
					}
				}()
			}
			warm.Wait()
			c.apply(t, h, k.ID, &clock)
			changed.Store(true)
			done.Wait()
			if okBefore.Load() == 0 {
				t.Fatal("no Check was allowed before the change: the test proves nothing")
			}
			if n := badAfter.Load(); n > 0 {
				t.Fatalf("%d Checks that started after the change returned were allowed", n)
			}
		})
	}
}
