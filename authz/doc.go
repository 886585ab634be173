// Package authz is Keygate's decision core: a plain Request in, a plain
// Decision out. It owns the order of checks of DESIGN.md (credential
// extraction, key format, lookup, status and expiry), the identity headers
// set on allowed requests and the headers stripped from them, and the exact
// status, strings and bodies of every denial.
//
// It knows nothing of Envoy, gRPC, HTTP servers or the store's engine: the
// adapters in envoy/ translate to and from it, and the store is reached
// through the one-method Lookup interface declared here. A refused key is a
// Decision, never an error; an error means the system failed, and the
// Decision that comes with it is the fail-closed 503.
//
// Decisions share their slices with the Engine (denials are precomputed so
// that rejecting garbage allocates nothing): callers treat them as
// read-only.
package authz
