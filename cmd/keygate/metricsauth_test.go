package main

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/secret"
	"github.com/keygate/keygate/keystore"
)

// TestMetricsTokens: a scrape token is the bootstrap token or a live admin
// token holding metrics:read, nothing else.
func TestMetricsTokens(t *testing.T) {
	ctx := context.Background()
	store, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	create := func(scopes []string, expires *time.Time) keystore.CreatedAdminToken {
		tok, err := store.CreateAdminToken(ctx, keystore.AdminTokenSpec{Name: "prometheus", Scopes: scopes, ExpiresAt: expires, CreatedBy: keystore.CreatedByBootstrap})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	reader := create([]string{keystore.ScopeMetricsRead}, nil)
	keys := create([]string{keystore.ScopeKeysRead, keystore.ScopeKeysWrite}, nil)
	deleted := create([]string{keystore.ScopeMetricsRead}, nil)
	if err := store.DeleteAdminToken(ctx, deleted.ID); err != nil {
		t.Fatal(err)
	}
	soon := time.Now().Add(50 * time.Millisecond)
	expiring := create([]string{keystore.ScopeMetricsRead}, &soon)
	time.Sleep(time.Until(soon) + 10*time.Millisecond)

	const boot = "bootstrap-token-0123456789"
	allow := metricsTokens(store, func() (secret.Value, error) { return secret.New(boot), nil })
	for _, c := range []struct {
		name, token string
		want        bool
	}{
		{"bootstrap", boot, true},
		{"metrics:read", reader.Secret.Reveal(), true},
		{"keys scopes only", keys.Secret.Reveal(), false},
		{"deleted", deleted.Secret.Reveal(), false},
		{"expired", expiring.Secret.Reveal(), false},
		{"mistyped admin token", reader.Secret.Reveal() + "x", false},
		{"bootstrap prefix", boot[:10], false},
		{"other", "nope", false},
	} {
		got, err := allow(ctx, c.token)
		if err != nil || got != c.want {
			t.Errorf("%s: %v, %v; want %v", c.name, got, err, c.want)
		}
	}

	// A bootstrap token that cannot be read refuses, without an error the
	// scraper would take for an outage; admin tokens still pass.
	broken := metricsTokens(store, func() (secret.Value, error) { return secret.Value{}, errors.New("unreadable") })
	if ok, err := broken(ctx, boot); ok || err != nil {
		t.Errorf("bootstrap token with its source unreadable: %v, %v", ok, err)
	}
	if ok, err := broken(ctx, reader.Secret.Reveal()); !ok || err != nil {
		t.Errorf("admin token with the bootstrap source unreadable: %v, %v", ok, err)
	}

	// A store that cannot answer is an error (503), not a refusal.
	store.Close()
	if _, err := allow(ctx, reader.Secret.Reveal()); err == nil {
		t.Error("a closed store answered the admin token lookup")
	}
}
