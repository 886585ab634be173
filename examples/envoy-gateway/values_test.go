package envoygateway

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"github.com/envoyproxy/gateway/api/v1alpha1/validation"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

var valuesFile = filepath.Join("backend", "envoy-gateway-values.yaml")

// envoyGatewayConfig reads the config.envoyGateway of Helm values the way
// Envoy Gateway's chart and loader use it: over the defaults, strictly,
// then through Envoy Gateway's own validation.
func envoyGatewayConfig(raw []byte) (*egv1a1.EnvoyGateway, error) {
	j, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, err
	}
	var values struct {
		Config struct {
			EnvoyGateway json.RawMessage `json:"envoyGateway"`
		} `json:"config"`
	}
	// Only config.envoyGateway: other keys of the chart are not its
	// config, and this file sets none.
	if strict, err := kjson.UnmarshalStrict(j, &values, kjson.DisallowUnknownFields); err != nil || len(strict) > 0 {
		return nil, errors.Join(append(strict, err)...)
	}
	if values.Config.EnvoyGateway == nil {
		return nil, errors.New("no config.envoyGateway")
	}
	var spec struct {
		Config struct {
			EnvoyGateway *egv1a1.EnvoyGatewaySpec `json:"envoyGateway"`
		} `json:"config"`
	}
	eg := egv1a1.DefaultEnvoyGateway()
	spec.Config.EnvoyGateway = &eg.EnvoyGatewaySpec // decoded over the defaults
	if strict, err := kjson.UnmarshalStrict(j, &spec); err != nil || len(strict) > 0 {
		return nil, errors.Join(append(strict, err)...)
	}
	eg.SetEnvoyGatewayDefaults()
	if err := validation.ValidateEnvoyGateway(eg); err != nil {
		return nil, err
	}
	return eg, nil
}

// TestEnvoyGatewayValues: the Backend variant needs Envoy Gateway to
// reconcile Backends, and the values that say so are a valid Envoy
// Gateway configuration.
func TestEnvoyGatewayValues(t *testing.T) {
	raw, err := os.ReadFile(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	eg, err := envoyGatewayConfig(raw)
	if err != nil {
		t.Fatalf("%s: %v", valuesFile, err)
	}
	if m := backendSet(t); len(m.backends) > 0 && (eg.ExtensionAPIs == nil || !eg.ExtensionAPIs.EnableBackend) {
		t.Errorf("%s: backend/ uses a Backend, but extensionApis.enableBackend is not true", valuesFile)
	}

	// The same reading refuses what Envoy Gateway would.
	for _, tc := range []struct{ name, values, want string }{
		{"misspelt", "config:\n  envoyGateway:\n    extensionApis:\n      enableBackends: true\n", `unknown field "config.envoyGateway.extensionApis.enableBackends"`},
		{"invalid", "config:\n  envoyGateway:\n    extensionApis:\n      enableLua: true\n      disableLua: true\n", "disableLua and enableLua must not have the same value"},
		{"not the chart's config", "envoyGateway:\n  extensionApis:\n    enableBackend: true\n", `unknown field "envoyGateway"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := envoyGatewayConfig([]byte(tc.values))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}
