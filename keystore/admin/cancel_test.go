package admin_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// hangingBackend's writes, once hang is set, wait for their context to
// end, as a write to an etcd that stopped answering does, and report when
// they begin and end.
type hangingBackend struct {
	keystore.Backend
	hang  atomic.Bool
	began chan struct{}
	ended chan error
}

func (b *hangingBackend) Update(ctx context.Context, fn func(keystore.Tx) error) error {
	if !b.hang.Load() {
		return b.Backend.Update(ctx, fn)
	}
	b.began <- struct{}{}
	<-ctx.Done()
	b.ended <- ctx.Err()
	return ctx.Err()
}

// TestClientHangUpCancelsWrite: a client that hangs up cancels the store
// write its request started, which then returns at once instead of holding
// a goroutine until the store's own timeout; the request is logged as 499,
// not as a failure of the server.
func TestClientHangUpCancelsWrite(t *testing.T) {
	bolt, err := keystore.OpenBolt(filepath.Join(t.TempDir(), "k.db"), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := &hangingBackend{Backend: bolt, began: make(chan struct{}, 1), ended: make(chan error, 1)}
	s, err := keystore.New(b, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b.hang.Store(true)
	f := newFixtureOn(t, s, admin.Options{})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", f.srv.URL+"/v1/tenants", strings.NewReader(`{"name":"Acme"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	sent := make(chan error, 1)
	go func() {
		resp, err := f.srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		sent <- err
	}()
	<-b.began
	cancel()
	if err := <-sent; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v, want context.Canceled", err)
	}
	select {
	case err := <-b.ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("store write ended with %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the store write still runs 5s after its client hung up")
	}
	f.srv.Close() // waits for the handler to finish and log
	logs := f.logs.String()
	if !strings.Contains(logs, `"status":499`) || strings.Contains(logs, `"level":"ERROR"`) {
		t.Fatalf("request log:\n%s", logs)
	}
}
