package examples

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/config"
)

// examples/kubernetes: the replicas example as Kubernetes manifests. The
// documents are decoded into the few fields these checks read (no
// k8s.io/api in go.mod), and cross-checked: the ConfigMap's Keygate config
// loads with the real loader and uses etcd; the Deployment names each
// replica after its pod; probes, Services and the PDB point at what the
// pods really serve; etcd and Redis are the ones the config names.

const (
	k8sDir       = "kubernetes"
	k8sKeygate   = "keygate" // the Deployment
	k8sContainer = "keygate" // its container
	k8sReplicas  = 3
)

type k8sEnv struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `json:"fieldPath"`
		} `json:"fieldRef"`
		SecretKeyRef    *keyRef `json:"secretKeyRef"`
		ConfigMapKeyRef *keyRef `json:"configMapKeyRef"`
	} `json:"valueFrom"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path   string `json:"path"`
		Port   any    `json:"port"` // number or port name
		Scheme string `json:"scheme"`
	} `json:"httpGet"`
	TCPSocket *struct {
		Port any `json:"port"`
	} `json:"tcpSocket"`
	GRPC *struct {
		Port int `json:"port"`
	} `json:"grpc"`
	Exec *struct {
		Command []string `json:"command"`
	} `json:"exec"`
}

type k8sContainerSpec struct {
	Name  string   `json:"name"`
	Image string   `json:"image"`
	Args  []string `json:"args"`
	Env   []k8sEnv `json:"env"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	ReadinessProbe *k8sProbe `json:"readinessProbe"`
	LivenessProbe  *k8sProbe `json:"livenessProbe"`
	Lifecycle      *struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `json:"seconds"`
			} `json:"sleep"`
		} `json:"preStop"`
	} `json:"lifecycle"`
	Resources struct {
		Requests map[string]any `json:"requests"`
		Limits   map[string]any `json:"limits"`
	} `json:"resources"`
	SecurityContext *k8sSecurityContext `json:"securityContext"`
	VolumeMounts    []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
		SubPath   string `json:"subPath"`
	} `json:"volumeMounts"`
}

type k8sSecurityContext struct {
	RunAsNonRoot             *bool `json:"runAsNonRoot"`
	RunAsUser                *int  `json:"runAsUser"`
	ReadOnlyRootFilesystem   *bool `json:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
}

type k8sPodSpec struct {
	Containers                    []k8sContainerSpec  `json:"containers"`
	Volumes                       []volume            `json:"volumes"`
	SecurityContext               *k8sSecurityContext `json:"securityContext"`
	TerminationGracePeriodSeconds *int                `json:"terminationGracePeriodSeconds"`
}

// k8sWorkload is a Deployment or a StatefulSet.
type k8sWorkload struct {
	object
	Spec struct {
		Replicas    *int   `json:"replicas"`
		ServiceName string `json:"serviceName"`
		Selector    struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Template struct {
			Metadata meta       `json:"metadata"`
			Spec     k8sPodSpec `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

func (w k8sWorkload) replicas() int {
	if w.Spec.Replicas == nil {
		return 1
	}
	return *w.Spec.Replicas
}

type k8sService struct {
	object
	Spec struct {
		ClusterIP string            `json:"clusterIP"`
		Selector  map[string]string `json:"selector"`
		Ports     []servicePort     `json:"ports"`
	} `json:"spec"`
}

type k8sPDB struct {
	object
	Spec struct {
		MinAvailable   any `json:"minAvailable"`
		MaxUnavailable any `json:"maxUnavailable"`
		Selector       struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
	} `json:"spec"`
}

// k8sManifests is every document of examples/kubernetes, by kind and name.
type k8sManifests struct {
	workloads  map[string]k8sWorkload // "Deployment/keygate", "StatefulSet/etcd"
	services   map[string]k8sService
	pdbs       []k8sPDB
	configMaps map[string]keyed
}

// k8sChecker cross-checks the manifests. tlsFiles stands in for the
// admin certificate's Secret, which the manifests do not hold: its files
// are substituted for the paths the config names, so that the loader,
// which reads them, accepts the config.
type k8sChecker struct {
	problems
	m        k8sManifests
	certFile string
	keyFile  string
}

func decodeK8s(docs []meshDoc) (k8sManifests, []string) {
	var p problems
	m := k8sManifests{workloads: map[string]k8sWorkload{}, services: map[string]k8sService{}, configMaps: map[string]keyed{}}
	for _, d := range docs {
		var o object
		if err := asJSON(d.tree, &o); err != nil || o.Kind == "" || o.APIVersion == "" || o.Metadata.Name == "" {
			p.add("%s: a document without apiVersion, kind and metadata.name (%v)", d.file, err)
			continue
		}
		where := fmt.Sprintf("%s: %s %s", d.file, o.Kind, o.Metadata.Name)
		if o.Metadata.Namespace != "" || o.Kind == "Namespace" {
			p.add("%s: names a namespace: the example is applied with kubectl -n", where)
		}
		var err error
		switch o.Kind {
		case "Deployment", "StatefulSet":
			var w k8sWorkload
			err = asJSON(d.tree, &w)
			m.workloads[o.Kind+"/"+o.Metadata.Name] = w
		case "Service":
			var s k8sService
			err = asJSON(d.tree, &s)
			m.services[o.Metadata.Name] = s
		case "PodDisruptionBudget":
			var b k8sPDB
			err = asJSON(d.tree, &b)
			m.pdbs = append(m.pdbs, b)
		case "ConfigMap":
			var k keyed
			err = asJSON(d.tree, &k)
			m.configMaps[o.Metadata.Name] = k
		}
		if err != nil {
			p.add("%s: %v", where, err)
		}
	}
	return m, p
}

func checkKubernetes(docs []meshDoc, certFile, keyFile string) []string {
	m, p := decodeK8s(docs)
	c := &k8sChecker{problems: p, m: m, certFile: certFile, keyFile: keyFile}
	c.keygate()
	sort.Strings(c.problems)
	return c.problems
}

// containerPort resolves a probe's or Service's port (number or name)
// against a container's ports.
func containerPort(ct k8sContainerSpec, port any) (int, bool) {
	for _, p := range ct.Ports {
		switch v := port.(type) {
		case string:
			if p.Name == v {
				return p.ContainerPort, true
			}
		case int, float64, uint64, int64:
			if n, _ := strconv.Atoi(fmt.Sprint(v)); n == p.ContainerPort {
				return n, true
			}
		}
	}
	return 0, false
}

// mountedFrom returns the volume mounted (whole, no subPath) at the
// directory holding file.
func mountedFrom(spec k8sPodSpec, ct k8sContainerSpec, file string) (volume, bool) {
	for _, vm := range ct.VolumeMounts {
		if vm.SubPath == "" && path.Clean(vm.MountPath) == path.Dir(file) {
			for _, v := range spec.Volumes {
				if v.Name == vm.Name {
					return v, true
				}
			}
		}
	}
	return volume{}, false
}

func (c *k8sChecker) keygate() {
	dep, ok := c.m.workloads["Deployment/"+k8sKeygate]
	if !ok {
		c.add("no Deployment %s", k8sKeygate)
		return
	}
	if r := dep.replicas(); r < k8sReplicas {
		c.add("Deployment %s: replicas %d, want at least %d", k8sKeygate, r, k8sReplicas)
	}
	labels := dep.Spec.Template.Metadata.Labels
	if len(dep.Spec.Selector.MatchLabels) == 0 || !selects(dep.Spec.Selector.MatchLabels, labels) {
		c.add("Deployment %s: selector %v does not select its pods' labels %v", k8sKeygate, dep.Spec.Selector.MatchLabels, labels)
	}
	spec := dep.Spec.Template.Spec
	i := slices.IndexFunc(spec.Containers, func(ct k8sContainerSpec) bool { return ct.Name == k8sContainer })
	if i < 0 {
		c.add("Deployment %s: no container %s", k8sKeygate, k8sContainer)
		return
	}
	ct := spec.Containers[i]
	env := map[string]k8sEnv{}
	for _, e := range ct.Env {
		env[e.Name] = e
	}

	// The replica id: the pod's own name, through the downward API.
	if e, ok := env["KEYGATE_REPLICA_ID"]; !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		c.add("keygate: KEYGATE_REPLICA_ID must come from the pod's metadata.name (valueFrom.fieldRef): each replica needs its own id")
	}

	cfg, ok := c.config(spec, ct, env)
	if !ok {
		return
	}
	c.listeners(spec, ct, cfg, env)
	c.metrics(dep.Spec.Template.Metadata, ct, cfg)
	c.services(ct, labels, cfg, env)
	c.pdb(dep)
	c.hardening(spec, ct, cfg, env)
	c.etcd(cfg)
	c.redis(cfg)
}

// value is an env var's literal value (one set through valueFrom is
// not known here).
func value(env map[string]k8sEnv, name string) string { return env[name].Value }

// config loads the ConfigMap's Keygate config with the real loader and lays
// serve's environment over it (cmd/keygate/serve.go).
func (c *k8sChecker) config(spec k8sPodSpec, ct k8sContainerSpec, env map[string]k8sEnv) (*config.Config, bool) {
	cfgPath := value(env, "KEYGATE_CONFIG")
	if cfgPath == "" {
		c.add("keygate: set KEYGATE_CONFIG to the file the ConfigMap provides")
		return nil, false
	}
	v, ok := mountedFrom(spec, ct, cfgPath)
	if !ok || v.ConfigMap == nil {
		c.add("keygate: KEYGATE_CONFIG=%s is not in a ConfigMap volume mounted whole (no subPath) at %s", cfgPath, path.Dir(cfgPath))
		return nil, false
	}
	cm, ok := c.m.configMaps[v.ConfigMap.Name]
	if !ok || !cm.has(path.Base(cfgPath)) {
		c.add("keygate: ConfigMap %s has no key %s", v.ConfigMap.Name, path.Base(cfgPath))
		return nil, false
	}
	content := cm.get(path.Base(cfgPath))

	// The admin certificate lives in a Secret: check the paths, then load
	// the config with test files in their place.
	var raw struct {
		Admin struct {
			Cert string `json:"tls_cert_file"`
			Key  string `json:"tls_key_file"`
		} `json:"admin"`
	}
	if docs, err := readYAML([]byte(content)); err == nil && len(docs) == 1 {
		_ = asJSON(docs[0], &raw)
	}
	for _, f := range []struct{ file, with string }{{raw.Admin.Cert, c.certFile}, {raw.Admin.Key, c.keyFile}} {
		if f.file == "" {
			continue
		}
		if v, ok := mountedFrom(spec, ct, f.file); !ok || v.Secret == nil {
			c.add("keygate: admin TLS file %s is not in a Secret volume mounted whole at %s", f.file, path.Dir(f.file))
		}
		content = strings.ReplaceAll(content, f.file, f.with)
	}
	cfg, err := config.Parse(cfgPath, []byte(content))
	if err != nil {
		for _, e := range config.Unjoin(err) {
			c.add("keygate: the ConfigMap's config does not load: %v", e)
		}
		return nil, false
	}
	for dst, name := range map[*string]string{&cfg.Listen.GRPC: "KEYGATE_GRPC_LISTEN", &cfg.Listen.HTTP: "KEYGATE_HTTP_LISTEN", &cfg.Listen.Admin: "KEYGATE_ADMIN_LISTEN", &cfg.Listen.Metrics: "KEYGATE_METRICS_LISTEN", &cfg.Store.Path: "KEYGATE_STORE"} {
		if v := value(env, name); v != "" {
			*dst = v
		}
	}
	if v := value(env, "KEYGATE_ETCD_ENDPOINTS"); v != "" {
		cfg.Store.Etcd.Endpoints = strings.Split(v, ",")
	}
	if !cfg.UsesEtcd() {
		c.add("keygate: the config does not use etcd (store.etcd.endpoints): the replicas would each have their own keys")
		return nil, false
	}
	if cfg.Store.Etcd.ReplicaID != "" {
		c.add("keygate: store.etcd.replica_id %q in the shared ConfigMap would give every replica the same id", cfg.Store.Etcd.ReplicaID)
	}
	return cfg, true
}

// listeners checks the container ports and probes against the listeners
// the config serves: /healthz and /readyz are the admin listener's.
func (c *k8sChecker) listeners(spec k8sPodSpec, ct k8sContainerSpec, cfg *config.Config, env map[string]k8sEnv) {
	for _, l := range []struct{ name, addr string }{{"grpc", cfg.Listen.GRPC}, {"http", cfg.Listen.HTTP}} {
		port, public, err := listenAddr(l.addr)
		if err != nil || !public {
			c.add("keygate: %s listener %q is not reachable on the pod's IP: listen on 0.0.0.0 (%v)", l.name, l.addr, err)
		}
		if n, _ := strconv.Atoi(port); !slices.ContainsFunc(ct.Ports, func(p struct {
			Name          string `json:"name"`
			ContainerPort int    `json:"containerPort"`
		}) bool {
			return p.ContainerPort == n
		}) {
			c.add("keygate: the %s listener's port %s is not a container port", l.name, port)
		}
	}
	adminPort, adminPublic, err := listenAddr(cfg.Listen.Admin)
	if err != nil {
		c.add("keygate: admin listener %q: %v", cfg.Listen.Admin, err)
	}
	tlsOn := cfg.Admin.TLSCertFile != ""
	if cfg.Admin.InsecurePublic {
		c.add("keygate: admin.insecure_public puts the admin API and its token on the pod network in clear text")
	}
	if adminPublic && !tlsOn {
		c.add("keygate: admin listener %s is not loopback and has no TLS: serve refuses to start", cfg.Listen.Admin)
	}
	if adminPublic && value(env, "KEYGATE_ADMIN_TOKEN_FILE") == "" && cfg.Admin.TokenFile == "" {
		c.add("keygate: a non-loopback admin listener needs a configured token (KEYGATE_ADMIN_TOKEN_FILE): none is generated off loopback")
	} else if f := cmpOr(value(env, "KEYGATE_ADMIN_TOKEN_FILE"), cfg.Admin.TokenFile); f != "" {
		if v, ok := mountedFrom(spec, ct, f); !ok || v.Secret == nil {
			c.add("keygate: admin token file %s is not in a Secret volume mounted whole at %s", f, path.Dir(f))
		}
	}
	for _, pr := range []struct {
		kind, path string
		p          *k8sProbe
	}{{"readinessProbe", "/readyz", ct.ReadinessProbe}, {"livenessProbe", "/healthz", ct.LivenessProbe}} {
		if pr.p == nil || pr.p.HTTPGet == nil {
			c.add("keygate: %s must be an httpGet of %s", pr.kind, pr.path)
			continue
		}
		g := pr.p.HTTPGet
		if g.Path != pr.path {
			c.add("keygate: %s path %q, want %s", pr.kind, g.Path, pr.path)
		}
		port, ok := containerPort(ct, g.Port)
		if !ok {
			c.add("keygate: %s port %v is not a container port", pr.kind, g.Port)
			continue
		}
		if strconv.Itoa(port) != adminPort {
			c.add("keygate: %s on port %d, but %s is served by the admin listener %s", pr.kind, port, pr.path, cfg.Listen.Admin)
			continue
		}
		if !adminPublic {
			c.add("keygate: %s: the admin listener %s is on loopback, out of the kubelet's reach", pr.kind, cfg.Listen.Admin)
		}
		if want := map[bool]string{true: "HTTPS", false: "HTTP"}[tlsOn]; cmpOr(g.Scheme, "HTTP") != want {
			c.add("keygate: %s scheme %q, want %s (admin TLS is %v)", pr.kind, g.Scheme, want, tlsOn)
		}
	}
}

// metrics: Prometheus scrapes each pod (the kubernetes-pods discovery and
// its prometheus.io annotations) on the metrics listener, which must be on
// the pod's IP and a container port.
func (c *k8sChecker) metrics(pod meta, ct k8sContainerSpec, cfg *config.Config) {
	if cfg.Listen.Metrics == config.MetricsListenOff {
		c.add("keygate: the metrics listener is off: nothing for Prometheus to scrape")
		return
	}
	port, public, err := listenAddr(cfg.Listen.Metrics)
	if err != nil || !public {
		c.add("keygate: metrics listener %q is not reachable on the pod's IP: listen on 0.0.0.0 (%v)", cfg.Listen.Metrics, err)
	}
	n, _ := strconv.Atoi(port)
	if !slices.ContainsFunc(ct.Ports, func(p struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	}) bool {
		return p.ContainerPort == n && p.Name == "metrics"
	}) {
		c.add("keygate: the metrics listener's port %s is not a container port named metrics", port)
	}
	a := pod.Annotations
	if a["prometheus.io/scrape"] != "true" {
		c.add("keygate: the pods lack the annotation prometheus.io/scrape: \"true\"")
	}
	if a["prometheus.io/port"] != port {
		c.add("keygate: annotation prometheus.io/port %q, but the metrics listener is on port %s", a["prometheus.io/port"], port)
	}
	if p := a["prometheus.io/path"]; p != "" && p != "/metrics" {
		c.add("keygate: annotation prometheus.io/path %q: the metrics listener serves /metrics only", p)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// services: every Service selecting the pods targets ports they serve,
// one of them the gRPC listener's, and none the admin API.
func (c *k8sChecker) services(ct k8sContainerSpec, labels map[string]string, cfg *config.Config, _ map[string]k8sEnv) {
	grpcPort := listenPort(cfg.Listen.GRPC)
	adminPort := listenPort(cfg.Listen.Admin)
	grpcServed := false
	for _, name := range slices.Sorted(mapKeys(c.m.services)) {
		s := c.m.services[name]
		if len(s.Spec.Selector) == 0 || !selects(s.Spec.Selector, labels) {
			continue
		}
		for _, sp := range s.Spec.Ports {
			target := sp.TargetPort
			if target == nil {
				target = sp.Port
			}
			port, ok := containerPort(ct, target)
			switch {
			case !ok:
				c.add("Service %s: port %s targets %v, which is not a container port of %s", name, sp.Name, target, k8sKeygate)
			case strconv.Itoa(port) == adminPort:
				c.add("Service %s: port %s exposes the admin API (%d)", name, sp.Name, port)
			case strconv.Itoa(port) == grpcPort:
				grpcServed = true
				if !sp.grpcDeclared() {
					c.add("Service %s: port %s carries gRPC: name it grpc or set appProtocol: grpc", name, sp.Name)
				}
			}
		}
	}
	if !grpcServed {
		c.add("no Service targets the gRPC listener's port %s", grpcPort)
	}
}

// pdb: one PodDisruptionBudget selects the pods and lets at most one go.
func (c *k8sChecker) pdb(dep k8sWorkload) {
	var found []k8sPDB
	for _, b := range c.m.pdbs {
		if len(b.Spec.Selector.MatchLabels) > 0 && selects(b.Spec.Selector.MatchLabels, dep.Spec.Template.Metadata.Labels) {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		c.add("want one PodDisruptionBudget selecting the %s pods (labels %v), found %d", k8sKeygate, dep.Spec.Template.Metadata.Labels, len(found))
		return
	}
	b := found[0]
	num := func(v any) (int, bool) {
		n, err := strconv.Atoi(fmt.Sprint(v))
		return n, err == nil
	}
	switch {
	case b.Spec.MaxUnavailable != nil && b.Spec.MinAvailable != nil:
		c.add("PodDisruptionBudget %s: set minAvailable or maxUnavailable, not both", b.Metadata.Name)
	case b.Spec.MaxUnavailable != nil:
		if n, ok := num(b.Spec.MaxUnavailable); !ok || n < 1 || n > 1 {
			c.add("PodDisruptionBudget %s: maxUnavailable %v, want 1", b.Metadata.Name, b.Spec.MaxUnavailable)
		}
	case b.Spec.MinAvailable != nil:
		if n, ok := num(b.Spec.MinAvailable); !ok || n < 2 || n != dep.replicas()-1 {
			c.add("PodDisruptionBudget %s: minAvailable %v allows other than one disruption of %d replicas", b.Metadata.Name, b.Spec.MinAvailable, dep.replicas())
		}
	default:
		c.add("PodDisruptionBudget %s: neither minAvailable nor maxUnavailable", b.Metadata.Name)
	}
}

// hardening: non-root, read-only root with the working directory on an
// emptyDir, resources, and time to drain.
func (c *k8sChecker) hardening(spec k8sPodSpec, ct k8sContainerSpec, cfg *config.Config, _ map[string]k8sEnv) {
	nonRoot := func(s *k8sSecurityContext) bool { return s != nil && s.RunAsNonRoot != nil && *s.RunAsNonRoot }
	if !nonRoot(spec.SecurityContext) && !nonRoot(ct.SecurityContext) {
		c.add("keygate: runAsNonRoot is not set")
	}
	sc := ct.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		c.add("keygate: readOnlyRootFilesystem is not set")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		c.add("keygate: allowPrivilegeEscalation must be false")
	}
	if v, ok := mountedFrom(spec, ct, cfg.Store.Path); !ok || v.EmptyDir == nil {
		c.add("keygate: %s (the store path's directory, where a generated token would go) is not an emptyDir on the read-only root", path.Dir(cfg.Store.Path))
	}
	if ct.Resources.Requests["cpu"] == nil || ct.Resources.Requests["memory"] == nil || ct.Resources.Limits["memory"] == nil {
		c.add("keygate: set resources.requests cpu and memory, and limits.memory")
	}
	// serve drains gRPC for shutdown_timeout, then gives the HTTP and
	// admin servers as long again; a preStop pause comes first.
	need := 2 * time.Duration(cfg.ShutdownTimeout)
	if l := ct.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		need += time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	grace := 30 * time.Second // Kubernetes' default
	if g := spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace <= need {
		c.add("keygate: terminationGracePeriodSeconds %v does not cover the preStop pause and twice shutdown_timeout (%v)", grace, need)
	}
}

// etcd: every endpoint is a member of the etcd StatefulSet, by its stable
// name under its headless Service, on the port it serves clients on.
func (c *k8sChecker) etcd(cfg *config.Config) {
	members := map[string]bool{}
	for _, ep := range cfg.Store.Etcd.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" {
			c.add("keygate: etcd endpoint %q is not a URL", ep)
			continue
		}
		pod, svcName, _ := strings.Cut(u.Hostname(), ".")
		svc, ok := c.m.services[svcName]
		if !ok {
			c.add("keygate: etcd endpoint %q: no Service %q", ep, svcName)
			continue
		}
		var sts *k8sWorkload
		for _, w := range c.m.workloads {
			if w.Kind == "StatefulSet" && w.Spec.ServiceName == svcName {
				sts = &w
			}
		}
		if sts == nil {
			c.add("keygate: etcd endpoint %q: no StatefulSet with serviceName %s", ep, svcName)
			continue
		}
		if svc.Spec.ClusterIP != "None" {
			c.add("Service %s: not headless (clusterIP: None): %s has no DNS name", svcName, pod)
		}
		if !selects(svc.Spec.Selector, sts.Spec.Template.Metadata.Labels) {
			c.add("Service %s does not select the pods of StatefulSet %s", svcName, sts.Metadata.Name)
		}
		n, err := strconv.Atoi(strings.TrimPrefix(pod, sts.Metadata.Name+"-"))
		if err != nil || !strings.HasPrefix(pod, sts.Metadata.Name+"-") || n < 0 || n >= sts.replicas() {
			c.add("keygate: etcd endpoint %q: %s is not a pod of StatefulSet %s (%d replicas)", ep, pod, sts.Metadata.Name, sts.replicas())
			continue
		}
		members[pod] = true
		if len(sts.Spec.Template.Spec.Containers) == 0 {
			continue
		}
		ct := sts.Spec.Template.Spec.Containers[0]
		port, _ := strconv.Atoi(u.Port())
		served := false
		for _, sp := range svc.Spec.Ports {
			if sp.Port != port {
				continue
			}
			target := sp.TargetPort
			if target == nil {
				target = sp.Port
			}
			if cp, ok := containerPort(ct, target); ok && c.etcdListens(ct, cp) {
				served = true
			}
		}
		if !served {
			c.add("keygate: etcd endpoint %q: Service %s port %s does not reach a port etcd serves clients on", ep, svcName, u.Port())
		}
		if sts.replicas() < 3 {
			c.add("StatefulSet %s: %d members; want 3 (one may fail)", sts.Metadata.Name, sts.replicas())
		}
	}
	if len(members) < 3 {
		c.add("keygate: store.etcd.endpoints names %d members; list all three so that the client fails over", len(members))
	}
}

// etcdListens reports whether the etcd container serves clients on port on
// every interface (ETCD_LISTEN_CLIENT_URLS or --listen-client-urls).
func (c *k8sChecker) etcdListens(ct k8sContainerSpec, port int) bool {
	listen, ok := flagValue(ct.Args, "listen-client-urls")
	if !ok {
		for _, e := range ct.Env {
			if e.Name == "ETCD_LISTEN_CLIENT_URLS" {
				listen = e.Value
			}
		}
	}
	for _, l := range strings.Split(listen, ",") {
		u, err := url.Parse(strings.TrimSpace(l))
		if err == nil && u.Port() == strconv.Itoa(port) && (u.Hostname() == "0.0.0.0" || u.Hostname() == "::") {
			return true
		}
	}
	return false
}

// redis: rate_limits.redis.addr is a Service whose port reaches Redis.
func (c *k8sChecker) redis(cfg *config.Config) {
	addr, host, port, problem := sharedRedis(cfg)
	if problem != "" {
		c.add("%s", problem)
		return
	}
	svc, ok := c.m.services[host]
	if !ok {
		c.add("keygate: rate_limits.redis.addr %q: no Service %q", addr, host)
		return
	}
	for _, sp := range svc.Spec.Ports {
		if strconv.Itoa(sp.Port) != port {
			continue
		}
		target := sp.TargetPort
		if target == nil {
			target = sp.Port
		}
		for _, w := range c.m.workloads {
			if !selects(svc.Spec.Selector, w.Spec.Template.Metadata.Labels) {
				continue
			}
			for _, ct := range w.Spec.Template.Spec.Containers {
				if cp, ok := containerPort(ct, target); ok && strings.Contains(ct.Image, "redis") && cp == 6379 {
					return
				}
			}
		}
	}
	c.add("keygate: rate_limits.redis.addr %q: Service %s has no port %s reaching a redis container's 6379", addr, host, port)
}

// k8sDocs reads every document of examples/kubernetes.
func k8sDocs(t *testing.T) []meshDoc {
	t.Helper()
	var docs []meshDoc
	for _, f := range exampleYAML(t) {
		if !strings.HasPrefix(f.path, k8sDir+"/") {
			continue
		}
		for _, d := range f.docs {
			docs = append(docs, meshDoc{file: f.path, tree: d})
		}
	}
	if len(docs) == 0 {
		t.Fatalf("no manifests under %s", k8sDir)
	}
	return docs
}

// adminCert writes a self-signed certificate and key, the kind README.md
// has users put in the keygate-admin-tls Secret.
func adminCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "keygate-admin"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestKubernetesManifests(t *testing.T) {
	cert, key := adminCert(t)
	for _, p := range checkKubernetes(k8sDocs(t), cert, key) {
		t.Error(p)
	}
}

// Each mistake must be reported.
func TestKubernetesChecksCatch(t *testing.T) {
	cert, key := adminCert(t)
	find := func(t *testing.T, docs []meshDoc, kind, name string) map[string]any {
		t.Helper()
		for _, d := range docs {
			m := d.tree.(map[string]any)
			if m["kind"] == kind && sub(t, m, "metadata")["name"] == name {
				return m
			}
		}
		t.Fatalf("no %s %s: update this case", kind, name)
		return nil
	}
	container := func(t *testing.T, docs []meshDoc) map[string]any {
		spec := sub(t, find(t, docs, "Deployment", k8sKeygate), "spec", "template", "spec")
		return spec["containers"].([]any)[0].(map[string]any)
	}
	envVar := func(t *testing.T, docs []meshDoc, name string) map[string]any {
		for _, e := range container(t, docs)["env"].([]any) {
			if e := e.(map[string]any); e["name"] == name {
				return e
			}
		}
		t.Fatalf("no env %s: update this case", name)
		return nil
	}
	editConfig := func(old, new string) func(t *testing.T, docs []meshDoc) {
		return func(t *testing.T, docs []meshDoc) {
			data := sub(t, find(t, docs, "ConfigMap", "keygate-config"), "data")
			s := data["keygate.yaml"].(string)
			if !strings.Contains(s, old) {
				t.Fatalf("the embedded config has no %q: update this case", old)
			}
			data["keygate.yaml"] = strings.Replace(s, old, new, 1)
		}
	}
	servicePort := func(t *testing.T, docs []meshDoc, svc, port string) map[string]any {
		for _, p := range sub(t, find(t, docs, "Service", svc), "spec")["ports"].([]any) {
			if p := p.(map[string]any); p["name"] == port {
				return p
			}
		}
		t.Fatalf("Service %s has no port %s: update this case", svc, port)
		return nil
	}
	cases := []struct {
		name   string
		mutate func(t *testing.T, docs []meshDoc)
		want   string
	}{
		{"one replica", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "Deployment", k8sKeygate), "spec")["replicas"] = 1
		}, "replicas 1, want at least 3"},
		{"replica id from the node", func(t *testing.T, docs []meshDoc) {
			sub(t, envVar(t, docs, "KEYGATE_REPLICA_ID"), "valueFrom", "fieldRef")["fieldPath"] = "spec.nodeName"
		}, "KEYGATE_REPLICA_ID must come from the pod's metadata.name"},
		{"replica id a constant", func(t *testing.T, docs []meshDoc) {
			e := envVar(t, docs, "KEYGATE_REPLICA_ID")
			delete(e, "valueFrom")
			e["value"] = "keygate"
		}, "KEYGATE_REPLICA_ID must come from"},
		{"replica id in the shared config", editConfig("replica_ttl: 10s", "replica_ttl: 10s\n    replica_id: keygate"), "same id"},
		{"bbolt store", func(t *testing.T, docs []meshDoc) {
			data := sub(t, find(t, docs, "ConfigMap", "keygate-config"), "data")
			s := data["keygate.yaml"].(string)
			i, j := strings.Index(s, "store:\n"), strings.Index(s, "listen:\n")
			if i < 0 || j < i {
				t.Fatal("no store: then listen: in the embedded config: update this case")
			}
			data["keygate.yaml"] = s[:i] + "store:\n  last_used_flush: 10s\n" + s[j:]
		}, "does not use etcd"},
		{"invalid config", editConfig("replica_ttl: 10s", "replica_ttl: 1s"), "replica_ttl"},
		{"readiness on the gRPC port", func(t *testing.T, docs []meshDoc) {
			sub(t, container(t, docs), "readinessProbe", "httpGet")["port"] = 9001
		}, "readinessProbe on port 9001"},
		{"liveness on a port the container lacks", func(t *testing.T, docs []meshDoc) {
			sub(t, container(t, docs), "livenessProbe", "httpGet")["port"] = 9014
		}, "livenessProbe port 9014 is not a container port"},
		{"metrics on loopback", editConfig("metrics: 0.0.0.0:9004", "metrics: 127.0.0.1:9004"), "metrics listener \"127.0.0.1:9004\" is not reachable"},
		{"metrics off", editConfig("metrics: 0.0.0.0:9004", "metrics: \"off\""), "metrics listener is off"},
		{"scrape annotation on another port", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "Deployment", k8sKeygate), "spec", "template", "metadata", "annotations")["prometheus.io/port"] = "9003"
		}, `prometheus.io/port "9003"`},
		{"no scrape annotation", func(t *testing.T, docs []meshDoc) {
			delete(sub(t, find(t, docs, "Deployment", k8sKeygate), "spec", "template", "metadata", "annotations"), "prometheus.io/scrape")
		}, `prometheus.io/scrape`},
		{"admin container port moved", func(t *testing.T, docs []meshDoc) {
			for _, p := range container(t, docs)["ports"].([]any) {
				if p := p.(map[string]any); p["name"] == "admin" {
					p["containerPort"] = 9013
				}
			}
		}, "readinessProbe on port 9013"},
		{"readiness on /healthz", func(t *testing.T, docs []meshDoc) {
			sub(t, container(t, docs), "readinessProbe", "httpGet")["path"] = "/healthz"
		}, `readinessProbe path "/healthz"`},
		{"probe over HTTP", func(t *testing.T, docs []meshDoc) {
			sub(t, container(t, docs), "livenessProbe", "httpGet")["scheme"] = "HTTP"
		}, "want HTTPS"},
		{"admin on loopback", editConfig("admin: 0.0.0.0:9003", "admin: 127.0.0.1:9003"), "out of the kubelet's reach"},
		{"admin insecure_public", editConfig("admin:\n  tls_cert_file", "admin:\n  insecure_public: true\n  tls_cert_file"), "insecure_public"},
		{"admin without TLS", editConfig("  tls_cert_file: /etc/keygate/admin-tls/tls.crt\n  tls_key_file: /etc/keygate/admin-tls/tls.key\n", ""), "has no TLS"},
		{"no admin token", func(t *testing.T, docs []meshDoc) {
			c := container(t, docs)
			c["env"] = slices.DeleteFunc(c["env"].([]any), func(e any) bool { return e.(map[string]any)["name"] == "KEYGATE_ADMIN_TOKEN_FILE" })
		}, "needs a configured token"},
		{"gRPC listener on loopback", func(t *testing.T, docs []meshDoc) {
			envVar(t, docs, "KEYGATE_GRPC_LISTEN")["value"] = "127.0.0.1:9001"
		}, "not reachable on the pod's IP"},
		{"gRPC listener on another port", func(t *testing.T, docs []meshDoc) {
			envVar(t, docs, "KEYGATE_GRPC_LISTEN")["value"] = "0.0.0.0:9005"
		}, "port 9005 is not a container port"},
		{"Service targets a missing port", func(t *testing.T, docs []meshDoc) {
			servicePort(t, docs, "keygate", "grpc")["targetPort"] = "grpc-ext"
		}, "Service keygate: port grpc targets grpc-ext"},
		{"Service exposes admin", func(t *testing.T, docs []meshDoc) {
			servicePort(t, docs, "keygate-pods", "http")["targetPort"] = "admin"
		}, "exposes the admin API"},
		{"no Service for gRPC", func(t *testing.T, docs []meshDoc) {
			servicePort(t, docs, "keygate", "grpc")["targetPort"] = "http"
			servicePort(t, docs, "keygate-pods", "grpc")["targetPort"] = "http"
		}, "no Service targets the gRPC listener's port"},
		{"PDB selects nothing", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "PodDisruptionBudget", k8sKeygate), "spec", "selector", "matchLabels")["app.kubernetes.io/name"] = "keygate-api"
		}, "want one PodDisruptionBudget selecting"},
		{"PDB allows two", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "PodDisruptionBudget", k8sKeygate), "spec")["maxUnavailable"] = 2
		}, "maxUnavailable 2"},
		{"PDB minAvailable 1", func(t *testing.T, docs []meshDoc) {
			s := sub(t, find(t, docs, "PodDisruptionBudget", k8sKeygate), "spec")
			delete(s, "maxUnavailable")
			s["minAvailable"] = 1
		}, "minAvailable 1"},
		{"short grace period", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "Deployment", k8sKeygate), "spec", "template", "spec")["terminationGracePeriodSeconds"] = 30
		}, "terminationGracePeriodSeconds"},
		{"writable root", func(t *testing.T, docs []meshDoc) {
			sub(t, container(t, docs), "securityContext")["readOnlyRootFilesystem"] = false
		}, "readOnlyRootFilesystem"},
		{"root", func(t *testing.T, docs []meshDoc) {
			delete(sub(t, find(t, docs, "Deployment", k8sKeygate), "spec", "template", "spec", "securityContext"), "runAsNonRoot")
		}, "runAsNonRoot"},
		{"namespaced", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "Service", "redis"), "metadata")["namespace"] = "keygate"
		}, "names a namespace"},
		{"etcd member that does not exist", editConfig("http://etcd-2.etcd:2379", "http://etcd-3.etcd:2379"), "etcd-3 is not a pod of StatefulSet etcd"},
		{"etcd peer port", editConfig("http://etcd-2.etcd:2379", "http://etcd-2.etcd:2380"), "does not reach a port etcd serves clients on"},
		{"etcd Service not headless", func(t *testing.T, docs []meshDoc) {
			delete(sub(t, find(t, docs, "Service", "etcd"), "spec"), "clusterIP")
		}, "not headless"},
		{"one etcd member", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "StatefulSet", "etcd"), "spec")["replicas"] = 1
		}, "not a pod of StatefulSet etcd (1 replicas)"},
		{"redis port", editConfig("addr: redis:6379", "addr: redis:6380"), "has no port 6380"},
		{"redis not a Service", editConfig("addr: redis:6379", "addr: valkey:6379"), `no Service "valkey"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			docs := k8sDocs(t)
			if p := checkKubernetes(docs, cert, key); len(p) != 0 {
				t.Fatalf("the example does not pass unmutated: %q", p)
			}
			tc.mutate(t, docs)
			p := checkKubernetes(docs, cert, key)
			for _, s := range p {
				if strings.Contains(s, tc.want) {
					t.Logf("reported: %s", s)
					return
				}
			}
			t.Errorf("want a problem mentioning %q, got %q", tc.want, p)
		})
	}
}
