package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const publicTestToken = "public-admin-token-0123456789abcdef"

// TestAdminExposure: an admin listener off loopback needs a token and TLS,
// or an explicit insecure_public; with TLS it serves HTTPS only.
func TestAdminExposure(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	write := func(body string) {
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"KEYGATE_ADMIN_TOKEN": publicTestToken}
	serve := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return run(ctx, []string{"serve", "--config", cfg, "--store", filepath.Join(dir, "k.db"), "--grpc-listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"},
			io.Discard, io.Discard, func(k string) string { return env[k] })
	}
	write("{}\n")
	if err := serve(); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("public admin without TLS = %v, want a refusal naming TLS", err)
	}

	certFile, keyFile := selfSigned(t, dir)
	write("admin:\n  tls_cert_file: " + certFile + "\n")
	if err := serve(); err == nil || !strings.Contains(err.Error(), "tls_key_file") {
		t.Fatalf("half a TLS config = %v", err)
	}

	// With TLS, the real process serves HTTPS on a public address.
	write("admin:\n  tls_cert_file: " + certFile + "\n  tls_key_file: " + keyFile + "\n")
	s := startServerWith(t, dir, "KEYGATE_CONFIG="+cfg, "KEYGATE_ADMIN_LISTEN=0.0.0.0:0", "KEYGATE_ADMIN_TOKEN="+publicTestToken)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.admin, "http://"))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, _ := http.NewRequest("GET", "https://127.0.0.1:"+port+"/v1/tenants", nil)
	req.Header.Set("Authorization", "Bearer "+publicTestToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("HTTPS admin: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("HTTPS admin: %d tls=%v", resp.StatusCode, resp.TLS != nil)
	}
	if resp, err := http.Get("http://127.0.0.1:" + port + "/healthz"); err == nil && resp.StatusCode < 400 {
		resp.Body.Close()
		t.Fatal("the TLS admin listener answered plain HTTP")
	}
	// The CLI as the README shows it: an https --admin-url, the server's
	// certificate (or its CA) trusted through SSL_CERT_FILE.
	cli := func(extra ...string) ([]byte, error) {
		cmd := exec.Command(keygateBin, "tenants", "list", "--admin-url", "https://127.0.0.1:"+port, "-o", "json")
		cmd.Env = append(os.Environ(), append([]string{"KEYGATE_ADMIN_TOKEN=" + publicTestToken}, extra...)...)
		return cmd.CombinedOutput()
	}
	if out, err := cli("SSL_CERT_FILE=" + certFile); err != nil {
		t.Fatalf("keygate tenants list over HTTPS with SSL_CERT_FILE: %v\n%s", err, out)
	}
	if out, err := cli("SSL_CERT_FILE=/dev/null"); err == nil || !strings.Contains(string(out), "certificate") {
		t.Fatalf("keygate tenants list over HTTPS trusting nothing: %v\n%s", err, out)
	}
	s.stop(t)

	// insecure_public is the explicit way out (e.g. behind a mesh's mTLS).
	write("admin:\n  insecure_public: true\n")
	s = startServerWith(t, dir, "KEYGATE_CONFIG="+cfg, "KEYGATE_ADMIN_LISTEN=0.0.0.0:0", "KEYGATE_ADMIN_TOKEN="+publicTestToken)
	s.stop(t)
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "keygate-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}
