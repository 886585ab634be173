package envoygateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kinds maps apiVersion and kind to the Go type a document decodes into.
// A document of any other kind fails: a kind this table does not know is
// a kind whose fields nothing checks.
var kinds = map[string]func() any{
	"gateway.networking.k8s.io/v1 GatewayClass":          func() any { return new(gwapiv1.GatewayClass) },
	"gateway.networking.k8s.io/v1 Gateway":               func() any { return new(gwapiv1.Gateway) },
	"gateway.networking.k8s.io/v1 HTTPRoute":             func() any { return new(gwapiv1.HTTPRoute) },
	"gateway.envoyproxy.io/v1alpha1 SecurityPolicy":      func() any { return new(egv1a1.SecurityPolicy) },
	"gateway.envoyproxy.io/v1alpha1 ClientTrafficPolicy": func() any { return new(egv1a1.ClientTrafficPolicy) },
	"gateway.envoyproxy.io/v1alpha1 Backend":             func() any { return new(egv1a1.Backend) },
	"v1 Service":                                         func() any { return new(corev1.Service) },
	"v1 ConfigMap":                                       func() any { return new(corev1.ConfigMap) },
	"apps/v1 Deployment":                                 func() any { return new(appsv1.Deployment) },
	"policy/v1 PodDisruptionBudget":                      func() any { return new(policyv1.PodDisruptionBudget) },
	"networking.k8s.io/v1 NetworkPolicy":                 func() any { return new(networkingv1.NetworkPolicy) },
}

// doc is one decoded document and where it came from.
type doc struct {
	where string // file:index
	obj   any    // a pointer to one of the kinds' types
}

// decodeFile splits a multi-document YAML file and decodes each document
// strictly.
func decodeFile(path string) ([]doc, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeAll(filepath.Base(path), raw)
}

func decodeAll(name string, raw []byte) ([]doc, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out []doc
	var errs []error
	for i := 0; ; i++ {
		part, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		where := fmt.Sprintf("%s#%d", name, i)
		obj, err := decodeStrict(part)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		case obj != nil:
			out = append(out, doc{where: where, obj: obj})
		}
	}
	return out, errors.Join(errs...)
}

// decodeStrict decodes one YAML document into the type of its apiVersion
// and kind the way the API server reads it (case-sensitive field names),
// and fails on an unknown field, a field given twice or an unknown kind.
// A document of comments only is nil.
func decodeStrict(y []byte) (any, error) {
	j, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(j); bytes.Equal(t, []byte("null")) || len(t) == 0 {
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
		return nil, err
	}
	newObj, ok := kinds[tm.APIVersion+" "+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("apiVersion %q kind %q: not a kind these checks know (%s)", tm.APIVersion, tm.Kind, knownKinds())
	}
	obj := newObj()
	strict, err := kjson.UnmarshalStrict(j, obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	return obj, nil
}

func knownKinds() string {
	var ks []string
	for k := range kinds {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// TestDecodeStrict shows that the decoder refuses what the API server
// would (or what it would silently drop): without it a misspelt field of
// the manifests would pass every check below by being absent.
func TestDecodeStrict(t *testing.T) {
	const policy = `apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {name: p}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
  extAuth:
`
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"ok", policy + "    grpc: {backendRefs: [{name: keygate, port: 9001}]}\n", ""},
		{"unknown field", policy + "    grpc: {backendRefs: [{name: keygate, port: 9001}]}\n    failClosed: true\n", `unknown field "spec.extAuth.failClosed"`},
		// The field exists only under extAuth.http: in gRPC mode Envoy
		// applies the headers Keygate sets without a list.
		{"headersToBackend under grpc", policy + "    grpc: {backendRefs: [{name: keygate, port: 9001}], headersToBackend: [x-tenant-id]}\n", `unknown field "spec.extAuth.grpc.headersToBackend"`},
		{"wrong case", policy + "    grpc: {backendRefs: [{name: keygate, port: 9001}]}\n    FailOpen: false\n", `unknown field "spec.extAuth.FailOpen"`},
		{"duplicate key", policy + "    grpc: {backendRefs: [{name: keygate, port: 9001}]}\n    failOpen: false\n    failOpen: true\n", `already set in map`},
		{"wrong type", policy + "    grpc: {backendRefs: [{name: keygate, port: \"9001\"}]}\n", `cannot unmarshal string`},
		{"unknown kind", "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicies\nmetadata: {name: p}\n", `not a kind these checks know`},
		{"unknown version", "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata: {name: p}\n", `not a kind these checks know`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStrict([]byte(tc.doc))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("decode: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("decoded; want an error containing %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q; want it to contain %q", err, tc.want)
			}
		})
	}
}
