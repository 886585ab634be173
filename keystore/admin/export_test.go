package admin

import "net/http"

// Patterns returns the mux patterns h serves, h being what New returned.
func Patterns(h http.Handler) []string { return append([]string(nil), h.(*api).patterns...) }

// ScopeFor is the scope a route pattern needs ("" for the bootstrap
// token's only routes).
var ScopeFor = scopeFor

// OpenAPIDocument is the embedded document, as served.
func OpenAPIDocument() []byte { return openapiDocument }
