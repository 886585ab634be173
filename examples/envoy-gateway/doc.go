// Package envoygateway holds no code: its tests decode the Envoy Gateway
// manifests beside it strictly into Envoy Gateway's, Gateway API's and
// Kubernetes' own Go types, and check them against what Keygate needs
// (its key headers, its identity headers, its gRPC listener, its route
// policy). It is a module of its own so that those types stay out of
// Keygate's go.mod.
package envoygateway
