package admin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
	"github.com/keygate/keygate/keystore/apikey"
)

// TestBackupUnderLoad takes a copy through the API while keys are created,
// spent and used, and serves a new store on it: every key that existed
// before the copy began is there, in the state it had or (for a key spent
// meanwhile) a state it went through.
func TestBackupUnderLoad(t *testing.T) {
	s, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{LastUsedFlush: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureOn(t, s, admin.Options{Audit: true})
	ctx := t.Context()
	tn, o, _ := f.seed()

	const before = 60
	const balance = 1_000_000
	var (
		keys    []keystore.Key // fixed during the load
		metered []keystore.CreatedKey
	)
	for i := range before {
		spec := keystore.KeySpec{TenantID: tn.ID, Name: fmt.Sprintf("k%d", i), Scopes: []string{"s" + strconv.Itoa(i)}}
		if i%3 == 0 {
			spec.CreditsRemaining = new(int64(balance))
		}
		ck, err := s.CreateKey(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			metered = append(metered, ck)
			continue
		}
		k := ck.Key
		if i%5 == 0 {
			if k, err = s.RevokeKey(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
		keys = append(keys, k)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var spent, created atomic.Int64
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ck := metered[(g+i)%len(metered)]
				c, found, err := s.LookupKey(ctx, apikey.HashOf(ck.Secret.Reveal()))
				if err != nil || !found {
					t.Errorf("lookup %s: %v %v", ck.ID, found, err)
					return
				}
				if _, ok, err := s.Spend(ctx, c, 1); err != nil || !ok {
					t.Errorf("spend %s: %v %v", ck.ID, ok, err)
					return
				}
				spent.Add(1)
				s.KeyDecided(c, time.Now(), authz.Use{})
			}
		})
	}
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.CreateKey(ctx, keystore.KeySpec{TenantID: tn.ID, OrgID: o.ID, Name: "during", Slot: "busy"}); err != nil {
				t.Errorf("create during the backup: %v", err)
				return
			}
			created.Add(1)
		}
	})
	// Let the load get going before the copy starts.
	for spent.Load() < 100 || created.Load() < 5 {
		if t.Failed() {
			break
		}
		time.Sleep(time.Millisecond)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+"/v1/store/backup", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	out, err := os.OpenFile(copyPath, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(out, resp.Body)
	resp.Body.Close()
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, `attachment; filename="keygate-`) || !strings.HasSuffix(cd, `.db"`) {
		t.Errorf("Content-Disposition %q", cd)
	}
	if resp.ContentLength != n || n == 0 {
		t.Errorf("Content-Length %d, read %d", resp.ContentLength, n)
	}
	t.Logf("copied %d bytes while %d spends and %d creates ran", n, spent.Load(), created.Load())

	if err := keystore.VerifyBackup(ctx, copyPath); err != nil {
		t.Fatal(err)
	}
	restored, err := keystore.Open(copyPath, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	for _, want := range keys {
		got, err := restored.Key(ctx, want.ID)
		if err != nil {
			t.Fatalf("key %s in the copy: %v", want.ID, err)
		}
		if got.Status != want.Status || got.Name != want.Name || !slices.Equal(got.Scopes, want.Scopes) || (got.RevokedAt == nil) != (want.RevokedAt == nil) {
			t.Errorf("key %s in the copy: %+v, want %+v", want.ID, got, want)
		}
	}
	for _, ck := range metered {
		got, err := restored.Key(ctx, ck.ID)
		if err != nil {
			t.Fatalf("metered key %s in the copy: %v", ck.ID, err)
		}
		if got.Status != ck.Status || got.CreditsRemaining == nil || *got.CreditsRemaining < 0 || *got.CreditsRemaining > balance {
			t.Errorf("metered key %s in the copy: status %s credits %v", ck.ID, got.Status, got.CreditsRemaining)
		}
		// The copy decides: a key in it is found by its secret, and spends
		// from the balance the copy holds.
		c, found, err := restored.LookupKey(ctx, apikey.HashOf(ck.Secret.Reveal()))
		if err != nil || !found {
			t.Fatalf("lookup %s in the copy: %v %v", ck.ID, found, err)
		}
		if _, ok, err := restored.Spend(ctx, c, 1); err != nil || !ok {
			t.Errorf("spend %s in the copy: %v %v", ck.ID, ok, err)
		}
	}
}

// TestBackupBootstrapOnly: a copy holds every tenant's records and every
// admin token's hash, so no scope reaches it; the attempt is audited.
func TestBackupBootstrapOnly(t *testing.T) {
	f := newFixture(t, admin.Options{Audit: true})
	tok := f.mint(keystore.AdminTokenSpec{Scopes: keystore.AdminScopes})
	r := f.as(tok, http.MethodGet, "/v1/store/backup", "")
	wantStatus(t, "backup with a scoped token", r, http.StatusForbidden, "insufficient_scope")
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("refusal's Content-Type %q", ct)
	}
	r = f.do(http.MethodGet, "/v1/store/backup?x=1", "")
	wantStatus(t, "backup with an unknown parameter", r, http.StatusBadRequest, "invalid_request")
	if r := f.do(http.MethodGet, "/v1/store/backup", ""); r.status != http.StatusOK {
		t.Fatalf("backup: %d %s", r.status, r.body)
	}
	// The audit entry is written as the request ends, maybe after its
	// answer was read.
	var actions []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		page, err := f.store.ListAudit(context.Background(), keystore.AuditFilter{Action: "store"}, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		actions = actions[:0]
		for _, e := range page.Entries {
			actions = append(actions, fmt.Sprintf("%s %d", e.Action, e.Status))
		}
		if len(actions) >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{"store.backup 403", "store.backup 200"} {
		if !slices.Contains(actions, want) {
			t.Errorf("audit log %q lacks %q", actions, want)
		}
	}
}

// TestBackupClosedStore: a failure before the first byte is a JSON error.
func TestBackupClosedStore(t *testing.T) {
	f := newFixture(t, admin.Options{})
	f.store.Close()
	r := f.do(http.MethodGet, "/v1/store/backup", "")
	wantStatus(t, "backup of a closed store", r, http.StatusServiceUnavailable, "unavailable")
}
