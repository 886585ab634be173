package envoygateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// TestTranslate runs Envoy Gateway's own translator (egctl x translate, no
// cluster needed) over each set of manifests: every object must be
// accepted with its references resolved, and the xDS it makes must carry
// what Keygate needs. egctl takes about half an hour to build on two
// cores, so this test runs only when EGCTL names one:
//
//	GOBIN=/tmp/eg go install github.com/envoyproxy/gateway/cmd/egctl@v1.9.1
//	EGCTL=/tmp/eg/egctl go test -run TestTranslate -v ./...
func TestTranslate(t *testing.T) {
	egctl := os.Getenv("EGCTL")
	if egctl == "" {
		t.Skip("EGCTL unset: Envoy Gateway's translator not run (see the comment of TestTranslate)")
	}
	kg := loadKeygate(t, mainSet(t))
	for name, set := range map[string]func(*testing.T) *manifests{"main": mainSet, "backend": backendSet} {
		t.Run(name, func(t *testing.T) {
			in := translateInput(t, set(t))
			cmd := exec.Command(egctl, "x", "translate", "--from", "gateway-api", "--to", "gateway-api,xds",
				"-t", "all", "-o", "yaml", "-f", "-")
			cmd.Stdin = bytes.NewReader(in)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("egctl x translate: %v\n%s", err, stderr.String())
			}
			var res map[string]any
			if err := yaml.Unmarshal(out, &res); err != nil {
				t.Fatalf("egctl's output: %v", err)
			}
			for _, p := range translated(res, kg) {
				t.Error(p)
			}
		})
	}
}

// translateInput is the set's files and Keygate's manifest as one YAML
// stream, as written, except that each Service gets a cluster IP, which
// the API server would assign: without one (and with no EndpointSlices)
// the translator has no address to route to.
func translateInput(t *testing.T, m *manifests) []byte {
	t.Helper()
	var buf bytes.Buffer
	n := 0
	for _, f := range append(slices.Clone(m.files), keygateManifest) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
		for {
			part, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			obj, err := decodeStrict(part)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if s, ok := obj.(*corev1.Service); ok && s.Spec.ClusterIP == "" {
				n++
				s.Spec.ClusterIP = fmt.Sprintf("10.96.0.%d", 10+n)
				if part, err = yaml.Marshal(s); err != nil {
					t.Fatal(err)
				}
			}
			if obj != nil {
				buf.WriteString("---\n")
				buf.Write(part)
			}
		}
	}
	return buf.Bytes()
}

// translated checks egctl's result: conditions of every object, then the
// ext_authz filters and routes of the xDS.
func translated(res map[string]any, kg *keygate) []string {
	var problems []string
	objects := 0
	for key, v := range res {
		if key == "xds" {
			continue
		}
		list, ok := v.([]any)
		if !ok {
			list = []any{v}
		}
		for _, o := range list {
			obj, _ := o.(map[string]any)
			meta, _ := obj["metadata"].(map[string]any)
			where := fmt.Sprintf("%v %v", obj["kind"], meta["name"])
			objects++
			conds := conditions(obj["status"])
			if len(conds) == 0 {
				problems = append(problems, where+": no status conditions")
			}
			for _, c := range conds {
				if c["status"] != "True" {
					problems = append(problems, fmt.Sprintf("%s: %v %v: %v", where, c["type"], c["status"], c["message"]))
				}
			}
		}
	}
	if objects == 0 {
		problems = append(problems, "egctl translated no objects")
	}

	filters, routes := 0, map[string]map[string]any{}
	walk(res["xds"], func(m map[string]any) {
		if m["@type"] == "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz" {
			filters++
			problems = append(problems, extAuthz(m, kg)...)
		}
		// The routes made of the HTTPRoutes (not Envoy Gateway's own,
		// such as its stats listener's).
		if name, _ := m["name"].(string); strings.HasPrefix(name, "httproute/") && m["match"] != nil {
			routes[fmt.Sprint(m["match"])] = m
		}
	})
	if filters == 0 || len(routes) == 0 {
		problems = append(problems, fmt.Sprintf("xDS: %d ext_authz filters, %d routes of HTTPRoutes", filters, len(routes)))
	}
	for match, r := range routes {
		perFilter, _ := r["typedPerFilterConfig"].(map[string]any)
		authz := false
		for name := range perFilter {
			authz = authz || strings.HasPrefix(name, "envoy.filters.http.ext_authz")
		}
		public := strings.Contains(match, "/healthz")
		if authz == public {
			problems = append(problems, fmt.Sprintf("xDS route %s: ext_authz enabled %v", match, authz))
		}
	}
	return problems
}

// extAuthz checks one ext_authz filter config as Envoy will run it.
func extAuthz(m map[string]any, kg *keygate) []string {
	var problems []string
	if m["failureModeAllow"] == true {
		problems = append(problems, "xDS ext_authz: failureModeAllow")
	}
	if s, _ := m["statusOnError"].(map[string]any); s["code"] != "ServiceUnavailable" {
		problems = append(problems, fmt.Sprintf("xDS ext_authz: statusOnError %v", m["statusOnError"]))
	}
	g, _ := m["grpcService"].(map[string]any)
	if g["envoyGrpc"] == nil || g["timeout"] != "0.250s" {
		problems = append(problems, fmt.Sprintf("xDS ext_authz: grpcService %v, want envoyGrpc with timeout 0.250s", g))
	}
	var allowed []string
	walk(m["allowedHeaders"], func(p map[string]any) {
		if e, ok := p["exact"].(string); ok {
			allowed = append(allowed, e)
		}
	})
	for _, h := range kg.reads {
		if !containsFold(allowed, h) {
			problems = append(problems, fmt.Sprintf("xDS ext_authz: allowedHeaders %v lacks %s", allowed, h))
		}
	}
	return problems
}

func conditions(status any) []map[string]any {
	var out []map[string]any
	walk(status, func(m map[string]any) {
		if _, ok := m["type"]; ok {
			if _, ok := m["status"]; ok {
				out = append(out, m)
			}
		}
	})
	return out
}

// walk calls f on every map in v, depth first.
func walk(v any, f func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		f(x)
		for _, e := range x {
			walk(e, f)
		}
	case []any:
		for _, e := range x {
			walk(e, f)
		}
	}
}
