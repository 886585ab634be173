package helm

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/keygate/keygate/internal/testredis"
)

// TestProbesAgainstServe runs the real keygate serve with each mode's
// rendered pod (its config file, Secrets, environment), then does what the
// kubelet, Prometheus and an operator would: both probes as rendered, a
// scrape where the annotations point, and NOTES' CLI command with the
// pod's environment. Only addresses change: every listener moves to a free
// loopback port, the container ports mapped to them, and the etcd modes
// get an etcd and a Redis of the test's own in place of the cluster's.
func TestProbesAgainstServe(t *testing.T) {
	bin := keygateBinary(t)
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			out, stderr, err := runHelm(t, append([]string{"template", release, chartDir, "--namespace", namespace}, m.args...)...)
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, stderr)
			}
			r, err := decodeManifests(out)
			if err != nil {
				t.Fatal(err)
			}
			c := newChecker(t, m, r)
			var backends []string
			if len(m.etcd) > 0 {
				backends = append(backends, "KEYGATE_ETCD_ENDPOINTS="+startEtcd(t))
				redis := testredis.Start(t)
				// No flag or variable names Redis: the config file's
				// address is the cluster's, replaced by this one.
				c.replaceInConfig("addr: "+m.redis+"\n", "addr: "+redis.Addr+"\n")
			}
			p := startPod(t, bin, c, backends)
			for _, probe := range []struct {
				name string
				pr   *corev1.Probe
			}{{"readiness", c.c.ReadinessProbe}, {"liveness", c.c.LivenessProbe}} {
				if err := p.probe(probe.pr); err != nil {
					t.Errorf("%s probe: %v", probe.name, err)
				}
			}
			p.scrape(c.pod.Annotations)
			p.cli("tenants", "list")
		})
	}
}

// replaceInConfig replaces old, which must be there, in the stand-in
// config file under root.
func (c *checker) replaceInConfig(old, new string) {
	path := c.inRoot(c.env["KEYGATE_CONFIG"])
	raw, err := os.ReadFile(path)
	if err != nil {
		c.t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(old)) {
		c.t.Fatalf("the config has no %q:\n%s", old, raw)
	}
	if err := os.WriteFile(path, bytes.Replace(raw, []byte(old), []byte(new), 1), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// startEtcd runs a single-member etcd of the test's own on loopback and
// returns its client URL. A missing etcd fails the test: make test's deps
// target installs it. serve waits for it as in a cluster (not ready until
// etcd answers).
func startEtcd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd is not on PATH: `make deps` installs it (Debian's etcd-server): %v", err)
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "--name", "helm-test", "--data-dir", t.TempDir(),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "helm-test="+peer)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("etcd's log:\n%.4000s", logs.String())
		}
	})
	return client
}

var (
	keygateOnce sync.Once
	keygatePath string
	keygateErr  error
)

// TestMain removes the keygate binary the tests built, which outlives
// any one test (it is built once for all).
func TestMain(m *testing.M) {
	code := m.Run()
	if keygatePath != "" {
		_ = os.RemoveAll(filepath.Dir(keygatePath))
	}
	os.Exit(code)
}

// keygateBinary builds cmd/keygate from the repository, as the image does.
func keygateBinary(t *testing.T) string {
	t.Helper()
	keygateOnce.Do(func() {
		dir, err := os.MkdirTemp("", "keygate-helm-")
		if err != nil {
			keygateErr = err
			return
		}
		keygatePath = filepath.Join(dir, "keygate")
		cmd := exec.Command("go", "build", "-o", keygatePath, "./cmd/keygate")
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			keygateErr = fmt.Errorf("go build ./cmd/keygate: %v\n%s", err, out)
		}
	})
	if keygateErr != nil {
		t.Fatal(keygateErr)
	}
	return keygatePath
}

// pod is keygate serve run as the rendered pod would run it.
type pod struct {
	t     *testing.T
	c     *checker
	bin   string
	env   []string
	ports map[int32]int32 // container port: the loopback port standing in for it
}

// podEnv is the container's environment with its paths mapped under the
// checker's root and its listeners moved to the loopback ports.
func (c *checker) podEnv(ports map[int32]int32) []string {
	env := []string{"HOME=" + c.root, "PATH=" + os.Getenv("PATH")}
	moved := map[string]string{
		"KEYGATE_GRPC_LISTEN": c.cfg.Listen.GRPC, "KEYGATE_HTTP_LISTEN": c.cfg.Listen.HTTP,
		"KEYGATE_ADMIN_LISTEN": c.cfg.Listen.Admin, "KEYGATE_METRICS_LISTEN": c.cfg.Listen.Metrics,
	}
	for name, listen := range moved {
		env = append(env, name+"=127.0.0.1:"+strconv.Itoa(int(ports[portOf(c.t, listen)])))
	}
	for _, e := range c.c.Env {
		if e.ValueFrom == nil {
			continue
		}
		if f := e.ValueFrom.FieldRef; f != nil && f.FieldPath == "metadata.name" {
			env = append(env, e.Name+"="+fullname+"-6d4cf56db6-x7k2p")
		} else {
			c.t.Errorf("env %s: valueFrom %+v is not one this test can stand in for", e.Name, e.ValueFrom)
		}
	}
	for name, v := range c.env {
		switch {
		case moved[name] != "":
		case name == "KEYGATE_ADMIN_URL":
			u := v
			for from, to := range ports {
				u = strings.Replace(u, ":"+strconv.Itoa(int(from)), ":"+strconv.Itoa(int(to)), 1)
			}
			env = append(env, name+"="+u)
		case strings.HasPrefix(v, "/"):
			env = append(env, name+"="+c.inRoot(v))
		default:
			env = append(env, name+"="+v)
		}
	}
	return env
}

// startPod starts serve with the pod's environment and extra variables
// over it, and waits until the readiness probe passes.
func startPod(t *testing.T, bin string, c *checker, extra []string) *pod {
	t.Helper()
	ports := map[int32]int32{}
	for _, l := range []string{c.cfg.Listen.GRPC, c.cfg.Listen.HTTP, c.cfg.Listen.Admin, c.cfg.Listen.Metrics} {
		ports[portOf(t, l)] = freePort(t)
	}
	p := &pod{t: t, c: c, bin: bin, ports: ports, env: append(c.podEnv(ports), extra...)}
	cmd := exec.Command(bin, c.c.Args...)
	cmd.Env = p.env
	cmd.Dir = c.root
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// done closes when serve has exited, exit then holding why.
	done := make(chan struct{})
	var exit error
	go func() { exit = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("keygate serve's log:\n%s", logs.String())
		}
	})
	// As the kubelet: the readiness probe, until it succeeds or the
	// deadline passes.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.probe(c.c.ReadinessProbe)
		if err == nil {
			return p
		}
		select {
		case <-done:
			t.Fatalf("keygate serve exited (%v) before it was ready", exit)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 30s: %v", err)
		}
	}
}

func freePort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// probe does what the kubelet does with pr: an HTTP(S) GET without
// verifying the certificate, 200-399 passing; or a gRPC health check of
// the empty service name, SERVING passing.
func (p *pod) probe(pr *corev1.Probe) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	switch {
	case pr.HTTPGet != nil:
		port := p.ports[p.c.containerPort(pr.HTTPGet.Port)]
		u := fmt.Sprintf("%s://127.0.0.1:%d%s", strings.ToLower(string(pr.HTTPGet.Scheme)), port, pr.HTTPGet.Path)
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the kubelet does not verify
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("GET %s: %s %s", u, resp.Status, body)
		}
		return nil
	case pr.GRPC != nil:
		port := p.ports[p.c.containerPort(intstr.FromInt32(pr.GRPC.Port))]
		conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		service := ""
		if pr.GRPC.Service != nil {
			service = *pr.GRPC.Service
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("gRPC health %s", resp.GetStatus())
		}
		return nil
	}
	return fmt.Errorf("probe %+v: neither httpGet nor grpc", pr.ProbeHandler)
}

// scrape fetches what the prometheus.io annotations point at.
func (p *pod) scrape(a map[string]string) {
	t := p.t
	port, err := strconv.Atoi(a["prometheus.io/port"])
	if err != nil {
		t.Fatalf("prometheus.io/port %q: %v", a["prometheus.io/port"], err)
	}
	u := fmt.Sprintf("http://127.0.0.1:%d%s", p.ports[int32(port)], a["prometheus.io/path"])
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("keygate_build_info")) {
		t.Errorf("scrape %s: %s, want 200 with keygate_build_info:\n%.500s", u, resp.Status, body)
	}
}

// cli runs keygate with the pod's environment, as kubectl exec would.
func (p *pod) cli(args ...string) {
	t := p.t
	cmd := exec.Command(p.bin, args...)
	cmd.Env = p.env
	cmd.Dir = p.c.root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("keygate %s with the pod's environment: %v\n%s", strings.Join(args, " "), err, out)
	}
}
