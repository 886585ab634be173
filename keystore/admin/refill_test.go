package admin_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// TestRefillThroughAPI: a schedule is set with POST /v1/keys, shown by GET
// (with a due refill shown applied, nothing spent since the boundary),
// changed and cleared with PATCH, and refused with 400 when invalid.
func TestRefillThroughAPI(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).UnixNano())
	s, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureOn(t, s, admin.Options{})
	tn, err := s.CreateTenant(t.Context(), "Acme")
	if err != nil {
		t.Fatal(err)
	}

	var created keystore.CreatedKey
	r := f.do("POST", "/v1/keys", `{"tenant_id": "`+tn.ID+`", "name": "metered", "refill": {"interval": "monthly", "day": 31, "amount": 1000}}`)
	r.decode(t, &created)
	if r.status != http.StatusCreated && r.status != http.StatusOK {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	oct31 := time.Date(2026, 10, 31, 0, 0, 0, 0, time.UTC)
	if created.Refill == nil || *created.Refill != (keystore.Refill{Interval: "monthly", Day: 31, Amount: 1000}) ||
		created.CreditsRemaining == nil || *created.CreditsRemaining != 1000 || created.LastRefillAt == nil || !created.LastRefillAt.Equal(oct31) {
		t.Fatalf("created: %s", r.body)
	}
	if _, err := s.SetCredits(t.Context(), created.ID, 3); err != nil {
		t.Fatal(err)
	}

	// November has no 31st: its last day is the boundary.
	now.Store(time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC).UnixNano())
	var got keystore.Key
	r = f.do("GET", "/v1/keys/"+created.ID, "")
	r.decode(t, &got)
	if r.status != http.StatusOK || got.Refill == nil || *got.CreditsRemaining != 1000 ||
		!got.LastRefillAt.Equal(time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("GET past the boundary: %d %s", r.status, r.body)
	}
	if !strings.Contains(string(r.body), `"refill":{"interval":"monthly","day":31,"amount":1000}`) || !strings.Contains(string(r.body), `"last_refill_at":"2026-11-30T00:00:00Z"`) {
		t.Fatalf("GET body: %s", r.body)
	}

	r = f.do("PATCH", "/v1/keys/"+created.ID, `{"refill": {"interval": "daily", "amount": 50}}`)
	r.decode(t, &got)
	if r.status != http.StatusOK || got.Refill == nil || got.Refill.Interval != "daily" || got.Refill.Amount != 50 {
		t.Fatalf("PATCH refill: %d %s", r.status, r.body)
	}
	r = f.do("PATCH", "/v1/keys/"+created.ID, `{"clear_refill": true}`)
	got = keystore.Key{}
	r.decode(t, &got)
	if r.status != http.StatusOK || got.Refill != nil || got.LastRefillAt != nil || got.CreditsRemaining == nil {
		t.Fatalf("PATCH clear_refill: %d %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), "refill") {
		t.Fatalf("cleared key still shows a refill: %s", r.body)
	}

	for _, bad := range []string{
		`{"refill": {"interval": "weekly", "amount": 1}}`,
		`{"refill": {"interval": "monthly", "day": 32, "amount": 1}}`,
		`{"refill": {"interval": "daily", "day": 2, "amount": 1}}`,
		`{"refill": {"interval": "daily", "amount": -1}}`,
		`{"refill": {"interval": "daily", "amount": 1}, "clear_refill": true}`,
	} {
		if r := f.do("PATCH", "/v1/keys/"+created.ID, bad); r.status != http.StatusBadRequest || r.errBody(t).Error == "" {
			t.Errorf("PATCH %s: %d %s, want 400", bad, r.status, r.body)
		}
		create := `{"tenant_id": "` + tn.ID + `", "name": "k", ` + strings.TrimPrefix(bad, "{")
		if r := f.do("POST", "/v1/keys", create); r.status != http.StatusBadRequest {
			t.Errorf("POST %s: %d %s, want 400", create, r.status, r.body)
		}
	}
}
