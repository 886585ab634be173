package envoygateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/keystore/apikey"
)

// keygate is what the checks need to know of the Keygate the example puts
// behind Envoy Gateway: the one of examples/kubernetes/keygate.yaml, its
// config loaded with Keygate's own loader and its decisions made by
// Keygate's own engine.
type keygate struct {
	deployment *appsv1.Deployment
	container  *corev1.Container
	grpcPort   int32 // the port of its gRPC (ext_authz) listener

	reads    []string          // request headers a decision reads
	why      map[string]string // each, the setting that makes Keygate read it
	identity []string          // the identity headers it sets on an allow
	strip    []string          // what a route Keygate never sees must remove
	engine   *authz.Engine
}

const (
	keygateDeployment = "keygate"
	keygateContainer  = "keygate"
)

// loadKeygate finds Keygate's Deployment in m and loads the config its
// ConfigMap holds, as serve would (KEYGATE_GRPC_LISTEN over listen.grpc).
func loadKeygate(t *testing.T, m *manifests) *keygate {
	t.Helper()
	d, ok := m.deploys[keygateDeployment]
	if !ok {
		t.Fatalf("%s: no Deployment %q", keygateManifest, keygateDeployment)
	}
	kg := &keygate{deployment: d, why: map[string]string{}}
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == keygateContainer {
			kg.container = c
		}
	}
	if kg.container == nil {
		t.Fatalf("Deployment %s: no container %q", d.Name, keygateContainer)
	}
	env := map[string]string{}
	for _, e := range kg.container.Env {
		env[e.Name] = e.Value
	}
	cfgPath := env["KEYGATE_CONFIG"]
	var raw string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.ConfigMap == nil {
			continue
		}
		for _, mnt := range kg.container.VolumeMounts {
			if mnt.Name == v.Name && mnt.MountPath == path.Dir(cfgPath) {
				if cm, ok := m.configs[v.ConfigMap.Name]; ok {
					raw = cm.Data[path.Base(cfgPath)]
				}
			}
		}
	}
	if raw == "" {
		t.Fatalf("Deployment %s: KEYGATE_CONFIG=%q is not a file of a ConfigMap in %s", d.Name, cfgPath, keygateManifest)
	}
	// The admin listener's certificate comes from a Secret; the loader
	// reads it, so a test certificate stands in for it.
	var files struct {
		Admin struct {
			Cert string `json:"tls_cert_file"`
			Key  string `json:"tls_key_file"`
		} `json:"admin"`
	}
	if err := yaml.Unmarshal([]byte(raw), &files); err != nil {
		t.Fatalf("Keygate's config in %s: %v", keygateManifest, err)
	}
	cert, key := testCert(t)
	for _, f := range []struct{ in, out string }{{files.Admin.Cert, cert}, {files.Admin.Key, key}} {
		if f.in != "" {
			raw = strings.ReplaceAll(raw, f.in, f.out)
		}
	}
	cfg, err := config.Parse(cfgPath, []byte(raw))
	if err != nil {
		t.Fatalf("Keygate's config in %s: %v", keygateManifest, err)
	}
	listen := cfg.Listen.GRPC
	if v := env["KEYGATE_GRPC_LISTEN"]; v != "" {
		listen = v
	}
	if kg.grpcPort, err = portOf(listen); err != nil {
		t.Fatalf("Keygate's gRPC listener: %v", err)
	}

	format, err := cfg.Format()
	if err != nil {
		t.Fatal(err)
	}
	acfg := cfg.AuthzConfig(format)
	if acfg.Policy, err = cfg.AuthzPolicy(); err != nil {
		t.Fatal(err)
	}
	sources := acfg.Sources
	if sources == nil {
		sources = authz.DefaultSources
	}
	for _, s := range sources {
		kg.need(s, "keys.sources")
	}
	kg.need(acfg.ClientIP.Header, "client_ip.header")
	kg.need(acfg.Policy.OrgHeader, "policy.org_header")

	h, dh := acfg.Headers, authz.DefaultIdentityHeaders
	for _, p := range [][2]string{
		{h.Tenant, dh.Tenant}, {h.Org, dh.Org}, {h.User, dh.User}, {h.KeyID, dh.KeyID},
		{h.KeyName, dh.KeyName}, {h.Environment, dh.Environment}, {h.Tier, dh.Tier}, {h.Scopes, dh.Scopes},
	} {
		kg.identity = append(kg.identity, strings.ToLower(firstOf(p[0], p[1])))
	}
	sig := firstOf(acfg.Signing.Header, authz.DefaultSignatureHeader)
	kg.strip = append(append(append([]string{}, kg.identity...), strings.ToLower(sig)), sources...)

	if kg.engine, err = authz.New(acfg, noKeys{}); err != nil {
		t.Fatalf("Keygate's engine: %v", err)
	}
	return kg
}

func (kg *keygate) need(header, why string) {
	header = strings.ToLower(header)
	if header == "" {
		return
	}
	if _, ok := kg.why[header]; !ok {
		kg.reads = append(kg.reads, header)
		kg.why[header] = why
	}
}

// decide asks Keygate's engine about a GET of path without a key, with
// settings as Envoy's context_extensions.
func (kg *keygate) decide(path string, settings map[string]string) (authz.Decision, error) {
	if !strings.HasPrefix(path, "/") {
		return authz.Decision{}, errNotPath
	}
	req := &authz.Request{
		Method: "GET", Path: path, Host: "gateway.example.com",
		Headers: map[string]string{}, Peer: "192.0.2.1", Settings: settings,
	}
	return kg.engine.Decide(context.Background(), req)
}

var errNotPath = errors.New("not a request path")

// noKeys is a store without keys; the checks send none.
type noKeys struct{}

func (noKeys) LookupKey(context.Context, apikey.Hash) (*authz.Credential, bool, error) {
	return nil, false, nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// testCert writes a self-signed certificate and its key into a temporary
// directory.
func testCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "keygate"},
		DNSNames:     []string{"keygate"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
