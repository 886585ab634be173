package helm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kinds are the objects the chart may render, each decoded into its API
// type. A kind missing here fails the test: a new template brings its type
// along, or it goes unchecked.
var kinds = map[string]func() any{
	"v1/ConfigMap":                       func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                          func() any { return new(corev1.Secret) },
	"v1/Service":                         func() any { return new(corev1.Service) },
	"apps/v1/StatefulSet":                func() any { return new(appsv1.StatefulSet) },
	"apps/v1/Deployment":                 func() any { return new(appsv1.Deployment) },
	"policy/v1/PodDisruptionBudget":      func() any { return new(policyv1.PodDisruptionBudget) },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return new(networkingv1.NetworkPolicy) },
}

// rendered is helm template's output, decoded.
type rendered struct {
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	services     map[string]*corev1.Service
	statefulSets map[string]*appsv1.StatefulSet
	deployments  map[string]*appsv1.Deployment
	pdbs         map[string]*policyv1.PodDisruptionBudget
	netpols      map[string]*networkingv1.NetworkPolicy
}

// decodeManifests splits a multi-document YAML stream and decodes every
// document strictly: an unknown or misspelt field (matched case-sensitively,
// as the API server does), a duplicate key, an unknown kind, a document
// without a name, or two objects of one kind and name are errors.
func decodeManifests(manifest string) (*rendered, error) {
	r := &rendered{
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		services: map[string]*corev1.Service{}, statefulSets: map[string]*appsv1.StatefulSet{},
		deployments: map[string]*appsv1.Deployment{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		netpols: map[string]*networkingv1.NetworkPolicy{},
	}
	reader := k8syaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	var errs []error
	for n := 1; ; n++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		if err := r.add(doc); err != nil {
			errs = append(errs, fmt.Errorf("document %d (%s): %w", n, source(doc), err))
		}
	}
	return r, errors.Join(errs...)
}

// source is helm's "# Source: keygate/templates/x.yaml" line of a document.
func source(doc []byte) string {
	for line := range strings.Lines(string(doc)) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "# Source: "); ok {
			return s
		}
	}
	return "no # Source line"
}

func (r *rendered) add(doc []byte) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil // a template that rendered nothing (comments only)
	}
	var tm metav1.TypeMeta
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return err
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return fmt.Errorf("kind %s/%s: no API type to check it against", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	strict, err := sigsjson.UnmarshalStrict(js, obj)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	name := obj.(metav1.Object).GetName()
	if name == "" {
		return fmt.Errorf("%s without metadata.name", tm.Kind)
	}
	dup := false
	switch o := obj.(type) {
	case *corev1.ConfigMap:
		dup = put(r.configMaps, name, o)
	case *corev1.Secret:
		dup = put(r.secrets, name, o)
	case *corev1.Service:
		dup = put(r.services, name, o)
	case *appsv1.StatefulSet:
		dup = put(r.statefulSets, name, o)
	case *appsv1.Deployment:
		dup = put(r.deployments, name, o)
	case *policyv1.PodDisruptionBudget:
		dup = put(r.pdbs, name, o)
	case *networkingv1.NetworkPolicy:
		dup = put(r.netpols, name, o)
	}
	if dup {
		return fmt.Errorf("a second %s %s", tm.Kind, name)
	}
	return nil
}

func put[T any](m map[string]T, name string, v T) (dup bool) {
	_, dup = m[name]
	m[name] = v
	return dup
}
