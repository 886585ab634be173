package admin

import (
	"testing"

	"github.com/keygate/keygate/keystore"
)

// TestScopeFor covers the routes other handlers add (audit, usage) as well
// as today's: their scope comes from the path's shape.
func TestScopeFor(t *testing.T) {
	for pattern, want := range map[string]string{
		"GET /v1/tenants":                         keystore.ScopeTenantsRead,
		"GET /v1/tenants/{id}":                    keystore.ScopeTenantsRead,
		"POST /v1/tenants":                        keystore.ScopeTenantsWrite,
		"GET /v1/orgs":                            keystore.ScopeTenantsRead,
		"POST /v1/orgs":                           keystore.ScopeTenantsWrite,
		"GET /v1/tenants/{tenant}/users":          keystore.ScopeKeysRead,
		"GET /v1/tenants/{tenant}/users/{user}":   keystore.ScopeKeysRead,
		"PUT /v1/tenants/{tenant}/users/{user}":   keystore.ScopeKeysWrite,
		"DELETE /v1/tenants/{tenant}/users/{usr}": keystore.ScopeKeysWrite,
		"GET /v1/keys":                            keystore.ScopeKeysRead,
		"GET /v1/keys/{id}":                       keystore.ScopeKeysRead,
		"POST /v1/keys":                           keystore.ScopeKeysWrite,
		"POST /v1/keys/import":                    keystore.ScopeKeysWrite,
		"PATCH /v1/keys/{id}":                     keystore.ScopeKeysWrite,
		"POST /v1/keys/{id}/revoke":               keystore.ScopeKeysWrite,
		"POST /v1/keys/{id}/rotate":               keystore.ScopeKeysWrite,
		"POST /v1/keys/{id}/credits":              keystore.ScopeKeysWrite,
		"DELETE /v1/keys/{id}":                    keystore.ScopeKeysWrite,
		"GET /v1/keys/{id}/usage":                 keystore.ScopeUsageRead,
		"GET /v1/usage":                           keystore.ScopeUsageRead,
		"GET /v1/audit":                           keystore.ScopeAuditRead,
		"GET /metrics":                            keystore.ScopeMetricsRead,
		"GET /v1/admin-tokens":                    keystore.ScopeAdminTokensRead,
		"POST /v1/admin-tokens":                   keystore.ScopeAdminTokensWrite,
		"DELETE /v1/admin-tokens/{token}":         keystore.ScopeAdminTokensWrite,
		// Writes to read-only resources and unknown prefixes: bootstrap only.
		"POST /v1/audit":    "",
		"DELETE /v1/usage":  "",
		"GET /v1/somewhere": "",
		"GET /v1/tenantsx":  "",
	} {
		if got := scopeFor(pattern); got != want {
			t.Errorf("%s: %q, want %q", pattern, got, want)
		}
	}
}
