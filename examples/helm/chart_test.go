package helm

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	chartDir  = "keygate"
	release   = "edge"
	namespace = "auth"
	fullname  = "edge-keygate" // release-chart: the name every object shares
)

// mode is one way to install the chart, and what its objects must then say.
type mode struct {
	name string
	args []string // -f and --set

	replicas  int
	etcd      []string // the store's endpoints; none: bbolt on a volume
	redis     string
	tls       bool   // the admin listener on the pod's IP with TLS (HTTPS probes)
	grpcPort  int32  // the Service's grpc port (Istio's extensionProviders)
	tokenName string // the admin token's Secret
	tokenKey  string
	tlsName   string // the admin certificate's Secret; "" without TLS
	// external: Secrets the release references but does not create,
	// with the files an operator would put in them.
	external map[string]map[string][]byte
}

func modes(t *testing.T) []mode {
	pair := selfSigned(t)
	return []mode{
		{
			name:     "default: one replica on bbolt, generated token and certificate",
			replicas: 1, tls: true, grpcPort: 9001,
			tokenName: fullname + "-admin", tokenKey: "token", tlsName: fullname + "-admin-tls",
		},
		{
			name:     "etcd and Redis: values-etcd.yaml",
			args:     []string{"-f", filepath.Join(chartDir, "values-etcd.yaml")},
			replicas: 3, etcd: []string{"http://etcd-0.etcd:2379", "http://etcd-1.etcd:2379", "http://etcd-2.etcd:2379"},
			redis: "redis:6379", tls: true, grpcPort: 9001,
			tokenName: fullname + "-admin", tokenKey: "token", tlsName: fullname + "-admin-tls",
		},
		{
			name:     "etcd with referenced Secrets for the token and the certificate",
			args:     []string{"-f", filepath.Join(chartDir, "values-etcd.yaml"), "-f", filepath.Join("testdata", "etcd-existing.yaml")},
			replicas: 2, etcd: []string{"https://etcd.db:2379"},
			redis: "redis.cache:6379", tls: true, grpcPort: 50051,
			tokenName: "ops-keygate-token", tokenKey: "admin-token", tlsName: "ops-keygate-tls",
			external: map[string]map[string][]byte{
				"ops-keygate-token": {"admin-token": []byte("an-operator-made-token-of-32-chars!")},
				"ops-keygate-tls":   pair,
			},
		},
		{
			name:     "bbolt, referenced token, admin on loopback: gRPC probes",
			args:     []string{"-f", filepath.Join("testdata", "loopback.yaml")},
			replicas: 1, tls: false, grpcPort: 9001,
			tokenName: "keygate-token", tokenKey: "token",
			external: map[string]map[string][]byte{
				"keygate-token": {"token": []byte("0123456789abcdef0123456789abcdef")},
			},
		},
	}
}

func TestChart(t *testing.T) {
	dockerEnv := imageEnv(t)
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			if _, stderr, err := runHelm(t, append([]string{"lint", "--strict", chartDir}, m.args...)...); err != nil {
				t.Fatalf("helm lint: %v\n%s", err, stderr)
			}
			out, stderr, err := runHelm(t, append([]string{"template", release, chartDir, "--namespace", namespace}, m.args...)...)
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, stderr)
			}
			r, err := decodeManifests(out)
			if err != nil {
				t.Fatalf("strict decoding of the rendered objects:\n%v", err)
			}
			c := newChecker(t, m, r)
			c.secrets()
			c.workload()
			c.imageVars(dockerEnv)
			c.probes()
			c.ports()
			c.services()
			c.disruption()
			c.metrics()
			c.networkPolicy()
			c.security()
			c.notes(notes(t, m))
		})
	}
}

// TestChartRefuses: values that cannot work stop the install with a
// message, not with pods that fail later.
func TestChartRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"replicas on one bbolt file", []string{"--set", "replicaCount=2"}, "replicaCount > 1 needs store.etcd.endpoints"},
		// values.schema.json is closed: a typo is not silently a default.
		{"a misspelt value", []string{"--set", "replicaCont=3"}, "additional properties 'replicaCont' not allowed"},
		{"a misspelt nested value", []string{"--set", "admin.tls.enable=false"}, "additional properties 'enable' not allowed"},
		{"no replicas", []string{"--set", "replicaCount=0"}, "replicaCount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := runHelm(t, append([]string{"template", release, chartDir, "--namespace", namespace}, tc.args...)...)
			if err == nil {
				t.Fatalf("helm template %v rendered; want it refused with %q", tc.args, tc.want)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("helm template %v: stderr %q, want it to say %q", tc.args, stderr, tc.want)
			}
		})
	}
}

// notesCheck is a template the test adds to a copy of the chart: it puts
// what NOTES.txt renders (the helper keygate.notes, all NOTES.txt holds)
// into a ConfigMap, since helm template leaves NOTES.txt out and helm
// install --dry-run=client still asks a cluster.
const notesCheck = `apiVersion: v1
kind: ConfigMap
metadata:
  name: notes-check
data:
  NOTES.txt: {{ include "keygate.notes" . | quote }}
`

// notes renders NOTES.txt's text for mode m.
func notes(t *testing.T, m mode) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(raw)) != `{{ include "keygate.notes" . }}` {
		t.Fatalf("NOTES.txt is %q: want only the keygate.notes helper, which this test renders", raw)
	}
	dir := filepath.Join(t.TempDir(), chartDir)
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "templates", "notes-check.yaml"), []byte(notesCheck), 0o644); err != nil {
		t.Fatal(err)
	}
	// The -f files name the chart's directory: read them from the copy.
	args := []string{"template", release, dir, "--namespace", namespace, "--show-only", "templates/notes-check.yaml"}
	for _, a := range m.args {
		args = append(args, strings.Replace(a, chartDir+string(filepath.Separator), dir+string(filepath.Separator), 1))
	}
	out, stderr, err := runHelm(t, args...)
	if err != nil {
		t.Fatalf("helm template (NOTES): %v\n%s", err, stderr)
	}
	r, err := decodeManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	cm := r.configMaps["notes-check"]
	if cm == nil {
		t.Fatalf("no notes-check ConfigMap in:\n%s", out)
	}
	return cm.Data["NOTES.txt"]
}

// imageEnv is the Dockerfile's ENV: variables the image sets, which win
// over the config file unless the pod sets them too.
func imageEnv(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	joined := strings.ReplaceAll(string(raw), "\\\n", " ")
	for line := range strings.Lines(joined) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "ENV ")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(rest) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("Dockerfile: ENV %q is not KEY=VALUE", kv)
			}
			env[k] = v
		}
	}
	if len(env) == 0 {
		t.Fatal("Dockerfile: no ENV found")
	}
	return env
}

// portOf is the port of a listen address.
func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := net.LookupPort("tcp", p)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return int32(n)
}

// certFor checks that a PEM certificate is valid for host (the CLI in the
// pod dials the admin listener at KEYGATE_ADMIN_URL).
func certFor(pemBytes []byte, host string) error {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return errNoPEM
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	return cert.VerifyHostname(host)
}

// adminURLHost is KEYGATE_ADMIN_URL's scheme and host:port.
func adminURLHost(raw string) (scheme, host string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", err
	}
	return u.Scheme, u.Host, nil
}
