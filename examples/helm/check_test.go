package helm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/keygate/keygate/internal/admintoken"
	"github.com/keygate/keygate/internal/config"
)

var errNoPEM = errors.New("no PEM block")

// checker cross-checks one mode's rendered objects: with each other, with
// the mode's expectations, and with the Keygate config as serve would see
// it (the ConfigMap's file, loaded by Keygate's loader, then the pod's
// environment over it, as serve's flags do).
type checker struct {
	t   *testing.T
	m   mode
	r   *rendered
	pod corev1.PodTemplateSpec
	c   corev1.Container
	// claims are the volumeClaimTemplates' names (a StatefulSet's).
	claims   []string
	selector *metav1.LabelSelector
	replicas int32
	kind     string

	// root stands in for the container's file system: every mounted
	// ConfigMap and Secret is written under it, at its mount path.
	root     string
	writable map[string]bool // mount paths the pod can write
	file     *config.Config  // the mounted config file, loaded from root
	cfg      *config.Config  // file with the pod's environment over it
	env      map[string]string
}

func newChecker(t *testing.T, m mode, r *rendered) *checker {
	t.Helper()
	c := &checker{t: t, m: m, r: r, root: t.TempDir(), writable: map[string]bool{}, env: map[string]string{}}
	switch {
	case len(r.statefulSets) == 1 && len(r.deployments) == 0:
		s := r.statefulSets[fullname]
		if s == nil {
			t.Fatalf("StatefulSet is not named %s", fullname)
		}
		c.kind, c.pod, c.selector, c.replicas = "StatefulSet", s.Spec.Template, s.Spec.Selector, ptrOr(s.Spec.Replicas, 1)
		for _, p := range s.Spec.VolumeClaimTemplates {
			c.claims = append(c.claims, p.Name)
		}
		if svc := r.services[s.Spec.ServiceName]; svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("StatefulSet serviceName %q: want a rendered headless Service", s.Spec.ServiceName)
		}
	case len(r.deployments) == 1 && len(r.statefulSets) == 0:
		d := r.deployments[fullname]
		if d == nil {
			t.Fatalf("Deployment is not named %s", fullname)
		}
		c.kind, c.pod, c.selector, c.replicas = "Deployment", d.Spec.Template, d.Spec.Selector, ptrOr(d.Spec.Replicas, 1)
		if s := d.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil || s.MaxUnavailable.IntValue() != 0 {
			t.Errorf("Deployment strategy %+v: want a rolling update with maxUnavailable 0 (a new replica ready before an old one goes)", d.Spec.Strategy)
		}
	default:
		t.Fatalf("want one StatefulSet or one Deployment, got %d and %d", len(r.statefulSets), len(r.deployments))
	}
	if len(c.pod.Spec.Containers) != 1 || c.pod.Spec.Containers[0].Name != "keygate" {
		t.Fatalf("pod containers %v: want one named keygate", c.pod.Spec.Containers)
	}
	c.c = c.pod.Spec.Containers[0]
	if !selects(t, c.selector, c.pod.Labels) {
		t.Errorf("%s selector %v does not match its pods' labels %v", c.kind, c.selector, c.pod.Labels)
	}
	if int(c.replicas) != m.replicas {
		t.Errorf("%s replicas %d, want %d", c.kind, c.replicas, m.replicas)
	}
	for _, e := range c.c.Env {
		if e.ValueFrom == nil {
			c.env[e.Name] = e.Value
		}
	}
	c.mount()
	c.loadConfig()
	return c
}

func ptrOr(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

func selects(t *testing.T, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return false // an empty selector selects every pod of the namespace
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("selector %v: %v", sel, err)
		return false
	}
	return s.Matches(labels.Set(podLabels))
}

// mount writes every ConfigMap and Secret the container mounts under root,
// and notes the writable volumes. A volume the release neither renders nor
// is expected to reference fails.
func (c *checker) mount() {
	t := c.t
	vols := map[string]corev1.Volume{}
	for _, v := range c.pod.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, vm := range c.c.VolumeMounts {
		v, ok := vols[vm.Name]
		if vm.SubPath != "" {
			t.Errorf("volumeMount %s uses subPath: its updates would never reach the pod", vm.Name)
		}
		dir := filepath.Join(c.root, vm.MountPath)
		var files map[string][]byte
		switch {
		case ok && v.ConfigMap != nil:
			cm := c.r.configMaps[v.ConfigMap.Name]
			if cm == nil {
				t.Errorf("volume %s: ConfigMap %s is not rendered", vm.Name, v.ConfigMap.Name)
				continue
			}
			files = map[string][]byte{}
			for k, s := range cm.Data {
				files[k] = []byte(s)
			}
		case ok && v.Secret != nil:
			if s := c.r.secrets[v.Secret.SecretName]; s != nil {
				files = s.Data
			} else if ext, ok := c.m.external[v.Secret.SecretName]; ok {
				files = ext
			} else {
				t.Errorf("volume %s: Secret %s is neither rendered nor one this mode references", vm.Name, v.Secret.SecretName)
				continue
			}
		case ok && v.EmptyDir != nil, !ok && slices.Contains(c.claims, vm.Name):
			if vm.ReadOnly {
				t.Errorf("volume %s is read-only", vm.Name)
			}
			c.writable[vm.MountPath] = true
		default:
			t.Errorf("volumeMount %s: no such volume or claim template", vm.Name)
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// inRoot maps a path in the container to its stand-in under root.
func (c *checker) inRoot(p string) string { return filepath.Join(c.root, p) }

// loadConfig loads the mounted config file with Keygate's loader, its
// container paths mapped under root (the loader reads the files the config
// names: TLS pairs, password files), and applies the environment serve
// reads over it.
func (c *checker) loadConfig() {
	t := c.t
	path, ok := c.env["KEYGATE_CONFIG"]
	if !ok {
		t.Fatal("KEYGATE_CONFIG is not set: serve would run on its embedded defaults")
	}
	raw, err := os.ReadFile(c.inRoot(path))
	if err != nil {
		t.Fatalf("KEYGATE_CONFIG %s is not in a mounted ConfigMap: %v", path, err)
	}
	text := string(raw)
	mounts := make([]string, 0, len(c.c.VolumeMounts))
	for _, vm := range c.c.VolumeMounts {
		mounts = append(mounts, vm.MountPath)
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	for _, mp := range mounts {
		text = strings.ReplaceAll(text, " "+mp+"/", " "+c.inRoot(mp)+"/")
	}
	// The stand-in file too, for a real serve run on root
	// (TestProbesAgainstServe).
	if err := os.WriteFile(c.inRoot(path), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(path, []byte(text))
	if err != nil {
		t.Fatalf("the ConfigMap's keygate.yaml does not load:\n%v\n--- (mapped under the test's root)\n%s", err, text)
	}
	file := *cfg // before the environment: what the file says
	c.file = &file
	// As serve's flags: the environment over the file.
	for name, dst := range map[string]*string{
		"KEYGATE_STORE": &cfg.Store.Path, "KEYGATE_REPLICA_ID": &cfg.Store.Etcd.ReplicaID,
		"KEYGATE_GRPC_LISTEN": &cfg.Listen.GRPC, "KEYGATE_HTTP_LISTEN": &cfg.Listen.HTTP,
		"KEYGATE_ADMIN_LISTEN": &cfg.Listen.Admin, "KEYGATE_METRICS_LISTEN": &cfg.Listen.Metrics,
	} {
		if v := c.env[name]; v != "" {
			*dst = v
		}
	}
	if v := c.env["KEYGATE_ETCD_ENDPOINTS"]; v != "" {
		cfg.Store.Etcd.Endpoints = strings.Split(v, ",")
	}
	c.cfg = cfg
}

// fromRoot turns a path under root back into the container's.
func (c *checker) fromRoot(p string) string {
	if rest, ok := strings.CutPrefix(p, c.root); ok {
		return rest
	}
	return p
}

// workload: the store is where the mode wants it, on a volume that keeps
// it (bbolt) or shared in etcd with one id per pod.
func (c *checker) workload() {
	t, cfg := c.t, c.cfg
	store := c.fromRoot(cfg.Store.Path)
	if !c.writable[filepath.Dir(store)] {
		t.Errorf("store %s: its directory is not a writable volume (root file system is read-only)", store)
	}
	if len(c.m.etcd) == 0 {
		if c.kind != "StatefulSet" {
			t.Errorf("bbolt mode renders a %s, want a StatefulSet", c.kind)
		}
		if cfg.UsesEtcd() {
			t.Errorf("bbolt mode: config uses etcd %v", cfg.Store.Etcd.Endpoints)
		}
		mountName := ""
		for _, vm := range c.c.VolumeMounts {
			if vm.MountPath == filepath.Dir(store) {
				mountName = vm.Name
			}
		}
		if !slices.Contains(c.claims, mountName) {
			t.Errorf("bbolt store %s is on volume %q, not on a volumeClaimTemplate %v: the keys would go with the pod", store, mountName, c.claims)
		}
		return
	}
	if c.kind != "Deployment" {
		t.Errorf("etcd mode renders a %s, want a Deployment", c.kind)
	}
	if len(c.claims) > 0 {
		t.Errorf("etcd mode claims volumes %v", c.claims)
	}
	if !slices.Equal(cfg.Store.Etcd.Endpoints, c.m.etcd) {
		t.Errorf("etcd endpoints %v, want %v", cfg.Store.Etcd.Endpoints, c.m.etcd)
	}
	if cfg.Store.Etcd.ReplicaID != "" {
		t.Errorf("the shared config names replica_id %q: every replica would have it", cfg.Store.Etcd.ReplicaID)
	}
	found := false
	for _, e := range c.c.Env {
		if e.Name == "KEYGATE_REPLICA_ID" {
			found = e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
		}
	}
	if !found {
		t.Error("KEYGATE_REPLICA_ID is not the pod's name (valueFrom.fieldRef metadata.name)")
	}
	if got := cfg.RateLimits.Redis.Addr; got != c.m.redis {
		t.Errorf("rate_limits.redis.addr %q, want %q", got, c.m.redis)
	}
}

// imageVars: every variable the image sets is set by the pod too (the image's
// would otherwise win over the config file), to what the config says.
func (c *checker) imageVars(image map[string]string) {
	t, file := c.t, c.file
	fileValue := map[string]string{
		"KEYGATE_STORE": c.fromRoot(file.Store.Path), "KEYGATE_GRPC_LISTEN": file.Listen.GRPC,
		"KEYGATE_HTTP_LISTEN": file.Listen.HTTP, "KEYGATE_METRICS_LISTEN": file.Listen.Metrics,
		"KEYGATE_ADMIN_LISTEN": file.Listen.Admin,
	}
	for name := range image {
		got, ok := c.env[name]
		if !ok {
			t.Errorf("the image sets %s=%s and the pod does not: it wins over the config file", name, image[name])
			continue
		}
		if want, ok := fileValue[name]; ok && got != want {
			t.Errorf("%s=%s, but the config file says %s", name, got, want)
		}
	}
}

// secrets: the admin token serve reads is the mounted Secret's, and is
// accepted; the admin certificate is the mounted Secret's, for 127.0.0.1.
func (c *checker) secrets() {
	t, cfg, m := c.t, c.cfg, c.m
	_, rendered := c.r.secrets[m.tokenName]
	if rendered == (m.external[m.tokenName] != nil) {
		t.Errorf("token Secret %s: rendered %v, want it rendered only when not referenced", m.tokenName, rendered)
	}
	if s := c.r.secrets[m.tokenName]; s != nil && len(s.Data[m.tokenKey]) < 32 {
		t.Errorf("generated token is %d characters, want at least 32", len(s.Data[m.tokenKey]))
	}
	tokenFile := c.env["KEYGATE_ADMIN_TOKEN_FILE"]
	if tokenFile == "" || c.fromRoot(cfg.Admin.TokenFile) != tokenFile {
		t.Errorf("KEYGATE_ADMIN_TOKEN_FILE %q, admin.token_file %q: want both set to one file", tokenFile, c.fromRoot(cfg.Admin.TokenFile))
	}
	if filepath.Base(tokenFile) != m.tokenKey || !c.mountedFrom(filepath.Dir(tokenFile), m.tokenName) {
		t.Errorf("admin token file %s is not key %s of Secret %s", tokenFile, m.tokenKey, m.tokenName)
	}
	getenv := func(k string) string {
		if k == admintoken.EnvFile && c.env[k] != "" {
			return c.inRoot(c.env[k])
		}
		return c.env[k]
	}
	if _, err := admintoken.Source(cfg, getenv, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Errorf("serve would refuse the admin token: %v", err)
	}
	if !m.tls {
		if cfg.Admin.TLSCertFile != "" {
			t.Errorf("admin TLS %s with TLS off", cfg.Admin.TLSCertFile)
		}
		for name, s := range c.r.secrets {
			if s.Type == corev1.SecretTypeTLS {
				t.Errorf("TLS Secret %s rendered with admin TLS off", name)
			}
		}
		return
	}
	_, rendered = c.r.secrets[m.tlsName]
	if rendered == (m.external[m.tlsName] != nil) {
		t.Errorf("TLS Secret %s: rendered %v, want it rendered only when not referenced", m.tlsName, rendered)
	}
	cert := c.fromRoot(cfg.Admin.TLSCertFile)
	if cert == "" || !c.mountedFrom(filepath.Dir(cert), m.tlsName) {
		t.Errorf("admin.tls_cert_file %q is not in Secret %s", cert, m.tlsName)
	}
	trust := c.env["SSL_CERT_FILE"]
	pemBytes, err := os.ReadFile(c.inRoot(trust))
	if err != nil {
		t.Errorf("SSL_CERT_FILE %q (the CLI's trust of the admin certificate): %v", trust, err)
	}
	scheme, host, err := adminURLHost(c.env["KEYGATE_ADMIN_URL"])
	if err != nil || scheme != "https" {
		t.Errorf("KEYGATE_ADMIN_URL %q: want https (%v)", c.env["KEYGATE_ADMIN_URL"], err)
	}
	h, p, _ := net.SplitHostPort(host)
	if p != strconv.Itoa(int(portOf(t, cfg.Listen.Admin))) {
		t.Errorf("KEYGATE_ADMIN_URL %q: not the admin listener's port (%s)", c.env["KEYGATE_ADMIN_URL"], cfg.Listen.Admin)
	}
	if err := certFor(pemBytes, h); err != nil {
		t.Errorf("the admin certificate is not valid for %s, where the CLI dials it: %v", h, err)
	}
}

// mountedFrom reports whether dir is the mount path of Secret secret.
func (c *checker) mountedFrom(dir, secret string) bool {
	for _, vm := range c.c.VolumeMounts {
		if vm.MountPath != dir {
			continue
		}
		for _, v := range c.pod.Spec.Volumes {
			if v.Name == vm.Name && v.Secret != nil && v.Secret.SecretName == secret {
				return true
			}
		}
	}
	return false
}

// probes reach what the real binary serves: HTTPS /readyz and /healthz on
// a TLS admin listener on the pod's IP, else the gRPC health service.
func (c *checker) probes() {
	t, cfg := c.t, c.cfg
	adminPublic := !config.IsLoopback(cfg.Listen.Admin)
	if adminPublic && cfg.Admin.TLSCertFile == "" && !cfg.Admin.InsecurePublic {
		t.Errorf("admin listener %s off loopback without TLS: serve refuses to start", cfg.Listen.Admin)
	}
	if adminPublic != c.m.tls {
		t.Errorf("admin listener %s: public %v, want %v", cfg.Listen.Admin, adminPublic, c.m.tls)
	}
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"readiness", "/readyz", c.c.ReadinessProbe}, {"liveness", "/healthz", c.c.LivenessProbe}} {
		switch {
		case p.probe == nil:
			t.Errorf("no %s probe", p.name)
		case p.probe.HTTPGet != nil:
			g := p.probe.HTTPGet
			if !adminPublic {
				t.Errorf("%s probe on HTTP while the admin listener is on loopback: the kubelet cannot reach it", p.name)
			}
			if port := c.containerPort(g.Port); port != portOf(t, cfg.Listen.Admin) {
				t.Errorf("%s probe port %s (%d), want the admin listener's %s", p.name, g.Port.String(), port, cfg.Listen.Admin)
			}
			wantScheme := corev1.URISchemeHTTP
			if cfg.Admin.TLSCertFile != "" {
				wantScheme = corev1.URISchemeHTTPS
			}
			if g.Scheme != wantScheme || g.Path != p.path {
				t.Errorf("%s probe %s %s, want %s %s", p.name, g.Scheme, g.Path, wantScheme, p.path)
			}
		case p.probe.GRPC != nil:
			if p.probe.GRPC.Port != portOf(t, cfg.Listen.GRPC) || config.IsLoopback(cfg.Listen.GRPC) {
				t.Errorf("%s probe gRPC port %d, want the grpc listener %s off loopback", p.name, p.probe.GRPC.Port, cfg.Listen.GRPC)
			}
			if s := p.probe.GRPC.Service; s != nil && *s != "" {
				t.Errorf("%s probe gRPC service %q: Keygate's health serves the empty name", p.name, *s)
			}
		default:
			t.Errorf("%s probe %+v: want httpGet or grpc", p.name, p.probe.ProbeHandler)
		}
	}
}

// containerPort resolves a port name or number to one the container
// declares; 0 when it declares none such.
func (c *checker) containerPort(p intstr.IntOrString) int32 {
	for _, cp := range c.c.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return cp.ContainerPort
		}
	}
	return 0
}

// ports: each named container port is its listener's.
func (c *checker) ports() {
	t, cfg := c.t, c.cfg
	want := map[string]string{"grpc": cfg.Listen.GRPC, "http": cfg.Listen.HTTP, "metrics": cfg.Listen.Metrics}
	if !config.IsLoopback(cfg.Listen.Admin) {
		want["admin"] = cfg.Listen.Admin
	}
	got := map[string]int32{}
	for _, p := range c.c.Ports {
		got[p.Name] = p.ContainerPort
	}
	for name, listen := range want {
		if config.IsLoopback(listen) {
			t.Errorf("%s listener %s is on loopback: nothing outside the pod reaches it", name, listen)
		}
		if got[name] != portOf(t, listen) {
			t.Errorf("container port %s is %d, listener %s", name, got[name], listen)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("container port %s: no listener of that name is on the pod's IP", name)
		}
	}
}

// services select the pods and target ports they declare; the main one
// carries grpc on the mode's port.
func (c *checker) services() {
	t := c.t
	if len(c.r.services) == 0 {
		t.Fatal("no Service")
	}
	for name, s := range c.r.services {
		if !selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, c.pod.Labels) {
			t.Errorf("Service %s selector %v does not match the pods' labels %v", name, s.Spec.Selector, c.pod.Labels)
		}
		for _, p := range s.Spec.Ports {
			if c.containerPort(p.TargetPort) == 0 {
				t.Errorf("Service %s port %s targets %s, which the container does not declare", name, p.Name, p.TargetPort.String())
			}
			if p.TargetPort.String() == "admin" || c.containerPort(p.TargetPort) == portOf(t, c.cfg.Listen.Admin) {
				t.Errorf("Service %s exposes the admin listener", name)
			}
		}
	}
	main := c.r.services[fullname]
	if main == nil {
		t.Fatalf("no Service %s", fullname)
	}
	if p := servicePort(main, "grpc"); p == nil || p.Port != c.m.grpcPort || c.containerPort(p.TargetPort) != portOf(t, c.cfg.Listen.GRPC) {
		t.Errorf("Service %s grpc port %+v, want %d to the grpc listener", fullname, p, c.m.grpcPort)
	}
}

func servicePort(s *corev1.Service, name string) *corev1.ServicePort {
	for i := range s.Spec.Ports {
		if s.Spec.Ports[i].Name == name {
			return &s.Spec.Ports[i]
		}
	}
	return nil
}

// disruption: a budget for several replicas that selects them; none for
// one (it would block node drains or allow the eviction anyway).
func (c *checker) disruption() {
	t := c.t
	if c.replicas <= 1 {
		if len(c.r.pdbs) != 0 {
			t.Errorf("%d PodDisruptionBudgets for one replica", len(c.r.pdbs))
		}
		return
	}
	if len(c.r.pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets for %d replicas, want 1", len(c.r.pdbs), c.replicas)
	}
	for name, b := range c.r.pdbs {
		if !selects(t, b.Spec.Selector, c.pod.Labels) {
			t.Errorf("PodDisruptionBudget %s selector %v does not match the pods' labels %v", name, b.Spec.Selector, c.pod.Labels)
		}
		if (b.Spec.MinAvailable == nil) == (b.Spec.MaxUnavailable == nil) {
			t.Errorf("PodDisruptionBudget %s: want one of minAvailable and maxUnavailable", name)
		}
		if u := b.Spec.MaxUnavailable; u != nil && (u.IntValue() < 1 || int32(u.IntValue()) >= c.replicas) {
			t.Errorf("PodDisruptionBudget %s maxUnavailable %s: want at least 1 and fewer than %d", name, u.String(), c.replicas)
		}
	}
}

// metrics: Prometheus scrapes each pod on the metrics listener.
func (c *checker) metrics() {
	t, a := c.t, c.pod.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod annotations %v: want prometheus.io/scrape true and path /metrics", a)
	}
	if a["prometheus.io/port"] != strconv.Itoa(int(portOf(t, c.cfg.Listen.Metrics))) {
		t.Errorf("prometheus.io/port %q, metrics listener %s", a["prometheus.io/port"], c.cfg.Listen.Metrics)
	}
}

// networkPolicy opens what the Services and Prometheus use, not admin.
func (c *checker) networkPolicy() {
	t := c.t
	if len(c.r.netpols) != 1 {
		t.Fatalf("%d NetworkPolicies, want 1", len(c.r.netpols))
	}
	for name, np := range c.r.netpols {
		if !selects(t, &np.Spec.PodSelector, c.pod.Labels) {
			t.Errorf("NetworkPolicy %s does not select the pods", name)
		}
		var open []int32
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port == nil {
					t.Errorf("NetworkPolicy %s opens every port", name)
					continue
				}
				port := c.containerPort(*p.Port)
				if port == 0 {
					t.Errorf("NetworkPolicy %s opens %s, which the container does not declare", name, p.Port.String())
				}
				open = append(open, port)
			}
		}
		if slices.Contains(open, portOf(t, c.cfg.Listen.Admin)) {
			t.Errorf("NetworkPolicy %s opens the admin port", name)
		}
		for _, l := range []string{c.cfg.Listen.GRPC, c.cfg.Listen.HTTP, c.cfg.Listen.Metrics} {
			if !slices.Contains(open, portOf(t, l)) {
				t.Errorf("NetworkPolicy %s does not open %s", name, l)
			}
		}
	}
}

// security: non-root, no privilege, read-only root file system.
func (c *checker) security() {
	t := c.t
	ps, cs := c.pod.Spec.SecurityContext, c.c.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.FSGroup == nil {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and an fsGroup (the volume writable by the image's user)", ps)
	}
	if cs == nil || cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation {
		t.Errorf("container securityContext %+v: want readOnlyRootFilesystem and no privilege escalation", cs)
	}
	if len(c.c.Resources.Requests) == 0 || c.c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want requests and a memory limit", c.c.Resources)
	}
}

// notes: the Istio snippet names the main Service's FQDN and grpc port,
// and the token command reads the Secret the pods mount.
func (c *checker) notes(n string) {
	t := c.t
	for _, want := range []string{
		"extensionProviders:",
		"service: " + fullname + "." + namespace + ".svc.cluster.local\n",
		"port: " + strconv.Itoa(int(c.m.grpcPort)) + "\n",
		"get secret " + c.m.tokenName + " -o jsonpath='{.data." + c.m.tokenKey + "}'",
		"exec " + map[string]string{"StatefulSet": "statefulset", "Deployment": "deploy"}[c.kind] + "/" + fullname + " -- keygate ",
		"port-forward " + map[string]string{"StatefulSet": "statefulset", "Deployment": "deploy"}[c.kind] + "/" + fullname + " ",
	} {
		if !strings.Contains(n, want) {
			t.Errorf("NOTES do not contain %q:\n%s", want, n)
		}
	}
}

// selfSigned is a certificate an operator might put in a referenced TLS
// Secret: for 127.0.0.1, where the CLI in the pod dials.
func selfSigned(t *testing.T) map[string][]byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keygate-admin"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
}
