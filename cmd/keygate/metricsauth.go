package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"

	"github.com/keygate/keygate/internal/metrics"
	"github.com/keygate/keygate/internal/secret"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

// metricsTokens accepts, on the metrics listener with
// metrics.require_token, the bootstrap admin token and admin tokens
// holding metrics:read. Admin tokens are looked up on every scrape, as the
// admin API does, so that a revoke holds on the next one; scrapes are few.
func metricsTokens(store *keystore.Store, bootstrap func() (secret.Value, error)) metrics.TokenCheck {
	return func(ctx context.Context, token string) (bool, error) {
		if strings.HasPrefix(token, keystore.AdminTokenFormat.Prefix()+"_") {
			// The checksum refuses a mistyped token before any lookup.
			if _, err := keystore.AdminTokenFormat.Parse(token); err != nil {
				return false, nil
			}
			t, err := store.AdminTokenByHash(ctx, apikey.HashOf(token))
			switch {
			case errors.Is(err, keystore.ErrNotFound):
				return false, nil
			case err != nil:
				return false, err
			}
			return t.HasScope(keystore.ScopeMetricsRead), nil
		}
		boot, err := bootstrap()
		if err != nil || boot.IsZero() {
			// Unreadable, the bootstrap token is refused, as on the admin
			// listener; admin tokens still work.
			return false, nil
		}
		// Digests compared in constant time: neither the token's bytes nor
		// its length leak through timing.
		want, got := sha256.Sum256([]byte(boot.Reveal())), sha256.Sum256([]byte(token))
		return subtle.ConstantTimeCompare(got[:], want[:]) == 1, nil
	}
}
