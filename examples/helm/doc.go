// Package helm holds the checks of Keygate's Helm chart (keygate/): the
// real helm, built from its Go module, lints and renders the chart in each
// mode; every rendered object is decoded strictly into its Kubernetes API
// type; and the objects are cross-checked against each other and against
// the Keygate config they carry, loaded with Keygate's own loader. It is a
// module of its own so that Kubernetes' types stay out of Keygate's go.mod.
package helm
