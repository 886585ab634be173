// Package admin owns Keygate's admin HTTP API: the JSON routes through which
// operators (and the keygate CLI and console) manage tenants, orgs, keys,
// credit accounts and admin tokens in a keystore.Store, plus the
// unauthenticated /healthz and /readyz probes, its OpenAPI document
// (openapi.json) and the key console's page and assets (package ui).
//
// It owns the API's wire contract, not the key lifecycle: every rule about
// what may change lives in keystore, and this package only translates
// requests into store calls and store errors into HTTP statuses.
//
// Contracts:
//   - Every route except the probes, /v1/openapi.json and the console's
//     page and assets (which hold nothing) requires a bearer token, checked before
//     routing so that an unauthenticated caller learns nothing about which
//     paths exist: the bootstrap token (every right) or an admin token
//     record, read from the store on every request so a revoke holds on the
//     next one everywhere. A record holds scopes, one per route (scopeFor;
//     a route under no known prefix is the bootstrap token's only), and may
//     be bound to a tenant or an org: reachPath bounds every route by the
//     ids in its path, and handlers bound their bodies and listings
//     (reachTenant, reachOrg, reachKey, reachNewKey, reachListing).
//   - Raw keys travel only in the bodies of create, rotate and import, and
//     bodies are never logged; neither is the token. Responses carry
//     Cache-Control: no-store because a created key is shown exactly once.
//   - A body is one JSON object whose field names are exactly the
//     documented ones, each at most once in any object (see decode): a body
//     means the same to Keygate as to any proxy or audit tool that reads it.
//   - Errors are `{"error": "...", "code": "..."}`. The client sees only a
//     message written for it: this package's own, or the one a store
//     refusal (invalid, not found, conflict, org key limit, not metered)
//     marks as visible (internal/vizerror), without the operation names and
//     sentinel texts its error wraps; a refusal that marks none gets a
//     generic message for its status. The whole error is logged (debug for
//     refusals); anything unexpected is answered with a generic 500.
//   - The token (secret.Value) and a new key (apikey.Secret) print and log
//     redacted; the create and rotate answers reveal the key on purpose.
package admin
