package envoygateway

import (
	"fmt"
	"path/filepath"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// egController is Envoy Gateway's GatewayClass controller name.
const egController = "gateway.envoyproxy.io/gatewayclass-controller"

// manifests is every object of one set of files, by kind and name. All of
// them live in one namespace (the examples set none), so a name is enough.
type manifests struct {
	classes  map[string]*gwapiv1.GatewayClass
	gateways map[string]*gwapiv1.Gateway
	routes   map[string]*gwapiv1.HTTPRoute
	policies map[string]*egv1a1.SecurityPolicy
	traffic  map[string]*egv1a1.ClientTrafficPolicy
	backends map[string]*egv1a1.Backend
	services map[string]*corev1.Service
	configs  map[string]*corev1.ConfigMap
	deploys  map[string]*appsv1.Deployment
	ownDocs  []doc    // the documents of examples/envoy-gateway
	files    []string // their files
	dupes    []string
}

func newManifests() *manifests {
	return &manifests{
		classes: map[string]*gwapiv1.GatewayClass{}, gateways: map[string]*gwapiv1.Gateway{},
		routes: map[string]*gwapiv1.HTTPRoute{}, policies: map[string]*egv1a1.SecurityPolicy{},
		traffic: map[string]*egv1a1.ClientTrafficPolicy{}, backends: map[string]*egv1a1.Backend{},
		services: map[string]*corev1.Service{}, configs: map[string]*corev1.ConfigMap{},
		deploys: map[string]*appsv1.Deployment{},
	}
}

// put files o under its name, once.
func put[T any](m *manifests, into map[string]*T, where, kind, name string, o *T) {
	if _, dup := into[name]; dup {
		m.dupes = append(m.dupes, fmt.Sprintf("%s: a second %s %q", where, kind, name))
	}
	into[name] = o
}

func (m *manifests) add(d doc) {
	switch o := d.obj.(type) {
	case *gwapiv1.GatewayClass:
		put(m, m.classes, d.where, "GatewayClass", o.Name, o)
	case *gwapiv1.Gateway:
		put(m, m.gateways, d.where, "Gateway", o.Name, o)
	case *gwapiv1.HTTPRoute:
		put(m, m.routes, d.where, "HTTPRoute", o.Name, o)
	case *egv1a1.SecurityPolicy:
		put(m, m.policies, d.where, "SecurityPolicy", o.Name, o)
	case *egv1a1.ClientTrafficPolicy:
		put(m, m.traffic, d.where, "ClientTrafficPolicy", o.Name, o)
	case *egv1a1.Backend:
		put(m, m.backends, d.where, "Backend", o.Name, o)
	case *corev1.Service:
		put(m, m.services, d.where, "Service", o.Name, o)
	case *corev1.ConfigMap:
		put(m, m.configs, d.where, "ConfigMap", o.Name, o)
	case *appsv1.Deployment:
		put(m, m.deploys, d.where, "Deployment", o.Name, o)
	}
}

// loadSet decodes files (globs under this directory) and Keygate's own
// Kubernetes manifests, which the SecurityPolicy's backendRefs point at.
func loadSet(t *testing.T, globs ...string) *manifests {
	t.Helper()
	m := newManifests()
	var files []string
	for _, g := range globs {
		fs, err := filepath.Glob(g)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, fs...)
	}
	if len(files) == 0 {
		t.Fatalf("no manifests match %q", globs)
	}
	m.files = files
	for _, f := range files {
		docs, err := decodeFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(docs) == 0 {
			t.Fatalf("%s: no documents", f)
		}
		for _, d := range docs {
			m.ownDocs = append(m.ownDocs, d)
			m.add(d)
		}
	}
	docs, err := decodeFile(keygateManifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		m.add(d)
	}
	return m
}

// keygateManifest is Keygate's Deployment and Services in Kubernetes.
var keygateManifest = filepath.Join("..", "kubernetes", "keygate.yaml")

// mainSet is the example as `kubectl apply -f examples/envoy-gateway/`
// applies it.
func mainSet(t *testing.T) *manifests { return loadSet(t, "*.yaml") }

// backendSet is the example with backend/ in place of security-policy.yaml.
func backendSet(t *testing.T) *manifests {
	return loadSet(t, "gateway.yaml", "routes.yaml", "echo.yaml", filepath.Join("backend", "security-policy.yaml"))
}

func TestManifests(t *testing.T) {
	kg := loadKeygate(t, mainSet(t))
	for name, set := range map[string]func(*testing.T) *manifests{"main": mainSet, "backend": backendSet} {
		t.Run(name, func(t *testing.T) {
			for _, p := range check(set(t), kg) {
				t.Error(p)
			}
		})
	}
}
