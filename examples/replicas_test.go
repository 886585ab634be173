package examples

import (
	"cmp"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/keygate/keygate/internal/config"
)

// examples/replicas: three Keygate replicas on one etcd and one Redis,
// behind an Envoy that balances over them. The bootstrap goes through
// checkBootstrap like every other (TestEnvoyBootstraps finds it too); the
// checks here are what the replicas add: the compose file really runs
// several replicas on a shared store, and Envoy's cluster reaches all of
// them on the port they listen on.

const (
	replicasBootstrap = "replicas/envoy.yaml"
	replicasCompose   = "replicas/docker-compose.yaml"
	replicasWant      = 3
	replicasKeygate   = "keygate" // the compose service, and the name Envoy resolves
)

// replicasService is what these checks read of a compose service beyond
// composeService.
type replicasService struct {
	Deploy struct {
		Replicas *int `json:"replicas"`
	} `json:"deploy"`
	DependsOn     any                 `json:"depends_on"` // [name...] or {name: {condition: ...}}
	Healthcheck   *composeHealthcheck `json:"healthcheck"`
	Ports         []any               `json:"ports"`
	ContainerName string              `json:"container_name"`
}

type composeHealthcheck struct {
	Test    any  `json:"test"` // "CMD-SHELL cmd" or ["CMD", argv...]
	Disable bool `json:"disable"`
}

// dependsOn returns the services a compose service waits for, with the
// condition it waits for (the short list form means service_started).
func (s replicasService) dependsOn() map[string]string {
	out := map[string]string{}
	switch d := s.DependsOn.(type) {
	case []any:
		for _, n := range d {
			out[fmt.Sprint(n)] = "service_started"
		}
	case map[string]any:
		for n, v := range d {
			cond, _ := v.(map[string]any)["condition"].(string)
			out[n] = cmp.Or(cond, "service_started")
		}
	}
	return out
}

// argv is a compose command or healthcheck test as words.
func argv(v any) []string {
	switch x := v.(type) {
	case string:
		w, _ := shellWords(x, nil)
		return w
	case []any:
		out := make([]string, len(x))
		for i, e := range x {
			out[i] = fmt.Sprint(e)
		}
		return out
	}
	return nil
}

// flagValue finds --name=value or --name value in a command line.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// imageFacts is what the repository's image gives the keygate service when
// the compose file does not say otherwise.
type imageFacts struct {
	env         map[string]string // the final stage's ENV
	healthcheck bool              // a HEALTHCHECK other than NONE
}

func repoImage(t *testing.T) imageFacts {
	t.Helper()
	d, _ := readRepoDockerfile(t)
	hc, ok := d.final.last("HEALTHCHECK")
	return imageFacts{env: d.finalEnv, healthcheck: ok && !strings.EqualFold(strings.TrimSpace(hc.args), "NONE")}
}

// replicasKeygateSetup is the keygate service as its containers see it.
type replicasKeygateSetup struct {
	env  map[string]string // the image's ENV, then the compose file's
	cfg  *config.Config    // the embedded config, with serve's env overrides
	grpc string            // the gRPC listen address serve uses
}

// replicasChecker cross-checks the replicas compose file, its embedded
// Keygate config and the bootstrap its Envoy runs.
type replicasChecker struct {
	problems
	cf    composeFile
	svcs  map[string]replicasService
	image imageFacts
}

// checkReplicasCompose returns what is wrong with the replicas compose file
// (decoded tree) and the bootstraps it mounts (by path under examples/).
func checkReplicasCompose(tree any, boots map[string]any, image imageFacts) []string {
	c, err := newReplicasChecker(tree, image)
	if err != nil {
		return []string{err.Error()}
	}
	kg, ok := c.keygate()
	if ok {
		c.store(kg)
		c.redis(kg)
	}
	c.dependencies()
	mounted := false
	base := filepath.Dir(replicasCompose)
	envoySvc := c.cf.Services["envoy"]
	for _, v := range envoySvc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || parts[1] != "/etc/envoy/envoy.yaml" {
			continue
		}
		host := filepath.ToSlash(filepath.Join(base, parts[0]))
		if host != replicasBootstrap {
			c.add("envoy: mounts %s at /etc/envoy/envoy.yaml, want ./%s", parts[0], filepath.Base(replicasBootstrap))
			continue
		}
		boot, found := boots[host]
		if !found {
			c.add("envoy: %s is not an Envoy bootstrap", host)
			continue
		}
		mounted = true
		if !ok {
			continue
		}
		bs, err := parseBootstrap(boot)
		if err != nil {
			c.add("%s: %v", host, err)
			continue
		}
		c.problems = append(c.problems, composeClusters("envoy", host, bs, c.cf, map[string]string{"KEYGATE_GRPC_LISTEN": listenPort(kg.grpc)})...)
		c.problems = append(c.problems, checkReplicasCluster(boot, kg)...)
	}
	if !mounted {
		c.add("envoy: does not mount ./%s at /etc/envoy/envoy.yaml (where the image reads its bootstrap)", filepath.Base(replicasBootstrap))
	}
	sort.Strings(c.problems)
	return c.problems
}

func newReplicasChecker(tree any, image imageFacts) (*replicasChecker, error) {
	c := &replicasChecker{image: image}
	var extra struct {
		Services map[string]replicasService `json:"services"`
	}
	if err := asJSON(tree, &c.cf); err != nil {
		return nil, err
	}
	if err := asJSON(tree, &extra); err != nil {
		return nil, err
	}
	c.svcs = extra.Services
	return c, nil
}

func listenPort(addr string) string {
	port, _, _ := listenAddr(addr)
	return port
}

// keygate checks the keygate service itself and loads its config.
func (c *replicasChecker) keygate() (replicasKeygateSetup, bool) {
	var kg replicasKeygateSetup
	svc, ok := c.cf.Services[replicasKeygate]
	if !ok {
		c.add("no %s service", replicasKeygate)
		return kg, false
	}
	more := c.svcs[replicasKeygate]
	if r := more.Deploy.Replicas; r == nil || *r != replicasWant {
		c.add("keygate: deploy.replicas must be %d (got %v): the example shows replicas sharing a store", replicasWant, fmtPtr(r))
	}
	if more.ContainerName != "" {
		c.add("keygate: container_name %q allows a single container, not %d replicas", more.ContainerName, replicasWant)
	}
	if len(more.Ports) > 0 {
		c.add("keygate: publishes ports %v: %d replicas cannot share a host port, and only Envoy needs to reach them", more.Ports, replicasWant)
	}
	ctx, _ := svc.Build.(string)
	if m, ok := svc.Build.(map[string]any); ok {
		ctx, _ = m["context"].(string)
	}
	if ctx == "" || filepath.Clean(filepath.Join(filepath.Dir(replicasCompose), ctx)) != ".." {
		c.add("keygate: build context %q is not the repository root (../..)", ctx)
	}
	kg.env = map[string]string{}
	for k, v := range c.image.env {
		kg.env[k] = v
	}
	for k, v := range svc.env() {
		kg.env[k] = v
	}
	cfgPath := kg.env["KEYGATE_CONFIG"]
	if cfgPath == "" {
		c.add("keygate: set KEYGATE_CONFIG to the file its configs entry provides")
		return kg, false
	}
	var content string
	found := false
	for _, ref := range svc.Configs {
		if ref.Target != cfgPath {
			continue
		}
		found = true
		src, ok := c.cf.Configs[ref.Source]
		if !ok || src.Content == "" {
			c.add("keygate: config %q has no inline content under the top-level configs", ref.Source)
			return kg, false
		}
		content = src.Content
	}
	if !found {
		c.add("keygate: KEYGATE_CONFIG=%s is not the target of any of its configs", cfgPath)
		return kg, false
	}
	cfg, err := config.Parse(cfgPath, []byte(content))
	if err != nil {
		for _, e := range config.Unjoin(err) {
			c.add("keygate: the embedded config does not load: %v", e)
		}
		return kg, false
	}
	// What serve does with the environment (cmd/keygate/serve.go).
	if v := kg.env["KEYGATE_ETCD_ENDPOINTS"]; v != "" {
		cfg.Store.Etcd.Endpoints = strings.Split(v, ",")
	}
	kg.cfg = cfg
	kg.grpc = cmp.Or(kg.env["KEYGATE_GRPC_LISTEN"], cfg.Listen.GRPC)
	if _, public, err := listenAddr(kg.grpc); err != nil || !public {
		c.add("keygate: gRPC listener %q is not reachable from the Envoy container: listen on 0.0.0.0 (%v)", kg.grpc, err)
	}
	return kg, true
}

func fmtPtr(p *int) string {
	if p == nil {
		return "unset, i.e. 1"
	}
	return fmt.Sprint(*p)
}

// store checks that the replicas share etcd, the compose service's.
func (c *replicasChecker) store(kg replicasKeygateSetup) {
	if !kg.cfg.UsesEtcd() {
		c.add("keygate: the config does not use etcd (store.etcd.endpoints): each replica would have its own bbolt file")
		return
	}
	for _, ep := range kg.cfg.Store.Etcd.Endpoints {
		hostport := ep
		if strings.Contains(ep, "://") {
			u, err := url.Parse(ep)
			if err != nil {
				c.add("keygate: etcd endpoint %q: %v", ep, err)
				continue
			}
			hostport = u.Host
		}
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			c.add("keygate: etcd endpoint %q: %v", ep, err)
			continue
		}
		svc, ok := c.cf.Services[host]
		if !ok {
			c.add("keygate: etcd endpoint %q names %q, which is not a service of the compose file", ep, host)
			continue
		}
		if !strings.Contains(svc.Image, "etcd") {
			c.add("keygate: etcd endpoint %q names service %s, whose image %q is not etcd", ep, host, svc.Image)
		}
		// etcd's default, http://localhost:2379, is out of other
		// containers' reach.
		listen, ok := flagValue(argv(svc.Command), "listen-client-urls")
		if !ok {
			listen = svc.env()["ETCD_LISTEN_CLIENT_URLS"]
		}
		reachable := false
		for _, l := range strings.Split(listen, ",") {
			u, err := url.Parse(strings.TrimSpace(l))
			if err == nil && u.Port() == port && (u.Hostname() == "0.0.0.0" || u.Hostname() == "::") {
				reachable = true
			}
		}
		if !reachable {
			c.add("keygate: etcd endpoint %q: service %s does not listen for clients on 0.0.0.0:%s (--listen-client-urls %q)", ep, host, port, listen)
		}
		adv, _ := flagValue(argv(svc.Command), "advertise-client-urls")
		if !slices.ContainsFunc(strings.Split(adv, ","), func(a string) bool {
			u, err := url.Parse(strings.TrimSpace(a))
			return err == nil && u.Hostname() == host && u.Port() == port
		}) {
			c.add("keygate: etcd service %s advertises %q, not %s:%s", host, adv, host, port)
		}
	}
	// A generated admin token lives beside store.path: one shared volume
	// there would have the replicas race to create it.
	store := cmp.Or(kg.env["KEYGATE_STORE"], kg.cfg.Store.Path)
	for _, v := range c.cf.Services[replicasKeygate].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && !strings.HasPrefix(parts[0], ".") && !strings.HasPrefix(parts[0], "/") &&
			filepath.Clean(parts[1]) == filepath.Dir(store) {
			c.add("keygate: named volume %s at %s is shared by the replicas, which would race to create their admin token there", parts[0], parts[1])
		}
	}
}

// sharedRedis splits the replicas' rate_limits.redis.addr into host and
// port, or says what is wrong with it.
func sharedRedis(cfg *config.Config) (addr, host, port, problem string) {
	addr = cfg.RateLimits.Redis.Addr
	if addr == "" {
		return "", "", "", "keygate: rate_limits.redis.addr is not set: each replica would count budgets on its own"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, "", "", fmt.Sprintf("keygate: rate_limits.redis.addr %q: %v", addr, err)
	}
	return addr, host, port, ""
}

// redis checks that the replicas share the compose file's Redis.
func (c *replicasChecker) redis(kg replicasKeygateSetup) {
	addr, host, port, problem := sharedRedis(kg.cfg)
	if problem != "" {
		c.add("%s", problem)
		return
	}
	svc, ok := c.cf.Services[host]
	if !ok {
		c.add("keygate: rate_limits.redis.addr %q names %q, which is not a service of the compose file", addr, host)
		return
	}
	want, ok := flagValue(argv(svc.Command), "port")
	if !ok {
		want = "6379" // redis-server's default
	}
	if port != want {
		c.add("keygate: rate_limits.redis.addr %q: service %s listens on port %s", addr, host, want)
	}
}

// dependencies checks the start order: Keygate after a healthy etcd (it
// would start without one, but answer 503 until etcd answers) and a
// started Redis, Envoy after healthy
// replicas (STRICT_DNS resolves them when it starts) and the backend.
func (c *replicasChecker) dependencies() {
	want := map[string]map[string]string{
		replicasKeygate: {"etcd": "service_healthy", "redis": "service_started"},
		"envoy":         {replicasKeygate: "service_healthy", "backend": "service_started"},
	}
	for _, name := range slices.Sorted(mapKeys(want)) {
		got := c.svcs[name].dependsOn()
		for dep, cond := range want[name] {
			if got[dep] != cond {
				c.add("%s: depends_on %s must have condition %s (got %q)", name, dep, cond, got[dep])
			}
		}
	}
	for _, name := range slices.Sorted(mapKeys(c.svcs)) {
		for dep, cond := range c.svcs[name].dependsOn() {
			if _, ok := c.cf.Services[dep]; !ok {
				c.add("%s: depends_on %s, which is not a service of the compose file", name, dep)
				continue
			}
			if cond != "service_healthy" {
				continue
			}
			hc := c.svcs[dep].Healthcheck
			fromImage := dep == replicasKeygate && c.image.healthcheck
			if (hc == nil || hc.Test == nil) && !fromImage || hc != nil && hc.Disable {
				c.add("%s: waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
			}
		}
	}
	if hc := c.svcs["etcd"].Healthcheck; hc != nil {
		if w := argv(hc.Test); !slices.Contains(w, "endpoint") || !slices.Contains(w, "health") ||
			!slices.ContainsFunc(w, func(s string) bool { return filepath.Base(s) == "etcdctl" }) {
			c.add("etcd: healthcheck %q is not etcdctl endpoint health", w)
		}
	}
}

// checkReplicasCluster checks the cluster the bootstrap's ext_authz filter
// sends Checks to: it must reach every replica of the keygate service, on
// the port their gRPC listener is on.
func checkReplicasCluster(tree any, kg replicasKeygateSetup) []string {
	var p problems
	bs, err := parseBootstrap(tree)
	if err != nil {
		return []string{err.Error()}
	}
	names := map[string]bool{}
	for e := range extAuthzFilters(bs) {
		if n := e.GetGrpcService().GetEnvoyGrpc().GetClusterName(); n != "" {
			names[n] = true
		} else {
			p.add("ext_authz does not use envoy_grpc: the replicas example is the gRPC front door")
		}
	}
	if len(names) == 0 {
		p.add("no ext_authz filter sends Checks to a cluster")
	}
	port := listenPort(kg.grpc)
	for _, cl := range bs.GetStaticResources().GetClusters() {
		if !names[cl.GetName()] {
			continue
		}
		where := fmt.Sprintf("cluster %q", cl.GetName())
		if cl.GetType() != clusterv3.Cluster_STRICT_DNS {
			p.add("%s: type %s: want STRICT_DNS, one host per address %s resolves to (one per replica)", where, cl.GetType(), replicasKeygate)
		}
		if cl.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN || cl.GetLoadBalancingPolicy() != nil {
			p.add("%s: lb_policy %s: want ROUND_ROBIN over the replicas", where, cl.GetLbPolicy())
		}
		var eps []string
		for _, ep := range cl.GetLoadAssignment().GetEndpoints() {
			for _, lb := range ep.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				eps = append(eps, net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue())))
			}
		}
		if want := net.JoinHostPort(replicasKeygate, port); len(eps) != 1 || eps[0] != want {
			p.add("%s: endpoints %v: want the one name all replicas answer to, %s (the compose service, on its gRPC listener %s)", where, eps, want, kg.grpc)
		}
	}
	sort.Strings(p)
	return p
}

// replicasSetup loads the unmutated compose file's keygate service.
func replicasSetup(t *testing.T) replicasKeygateSetup {
	t.Helper()
	c, err := newReplicasChecker(loadTree(t, replicasCompose), repoImage(t))
	if err != nil {
		t.Fatal(err)
	}
	kg, ok := c.keygate()
	if !ok || len(c.problems) > 0 {
		t.Fatalf("%s: %q", replicasCompose, c.problems)
	}
	return kg
}

// (a) The bootstrap: Envoy's and Keygate's requirements, as for every
// bootstrap, then the cluster against the compose file's keygate service.
func TestReplicasBootstrap(t *testing.T) {
	if _, ok := bootstraps(t)[replicasBootstrap]; !ok {
		t.Errorf("%s is not found as an Envoy bootstrap by TestEnvoyBootstraps", replicasBootstrap)
	}
	tree := loadTree(t, replicasBootstrap)
	for _, p := range checkBootstrap(tree) {
		t.Error(p)
	}
	kg := replicasSetup(t)
	if kg.grpc != "0.0.0.0:9001" {
		t.Errorf("keygate's gRPC listener is %s; envoy.yaml and the docs say 0.0.0.0:9001", kg.grpc)
	}
	for _, p := range checkReplicasCluster(tree, kg) {
		t.Error(p)
	}
}

// (b) The compose file: replicas, shared etcd and Redis, start order, and
// the bootstrap Envoy mounts.
func TestReplicasCompose(t *testing.T) {
	boots := map[string]any{replicasBootstrap: loadTree(t, replicasBootstrap)}
	for _, p := range checkReplicasCompose(loadTree(t, replicasCompose), boots, repoImage(t)) {
		t.Error(p)
	}
	kg := replicasSetup(t)
	if got := kg.cfg.Store.Etcd.Endpoints; !slices.Equal(got, []string{"http://etcd:2379"}) {
		t.Errorf("store.etcd.endpoints = %q, want [http://etcd:2379] (the README shows it)", got)
	}
	if got := kg.cfg.RateLimits.Redis.Addr; got != "redis:6379" {
		t.Errorf("rate_limits.redis.addr = %q, want redis:6379", got)
	}
}

// Each mistake must be reported.
func TestReplicasChecksCatch(t *testing.T) {
	image := repoImage(t)
	svc := func(t *testing.T, tree any, name string) map[string]any {
		return sub(t, tree.(map[string]any), "services", name)
	}
	editConfig := func(old, new string) func(t *testing.T, compose, boot any) {
		return func(t *testing.T, compose, boot any) {
			c := sub(t, compose.(map[string]any), "configs", "keygate-config")
			s := c["content"].(string)
			if !strings.Contains(s, old) {
				t.Fatalf("the embedded config has no %q: update this case", old)
			}
			c["content"] = strings.Replace(s, old, new, 1)
		}
	}
	cluster := func(t *testing.T, tree any) map[string]any {
		return only(t, tree, "cluster keygate", named(replicasKeygate, "load_assignment"))
	}
	socket := func(t *testing.T, tree any) map[string]any {
		return only(t, cluster(t, tree), "keygate socket_address", func(m map[string]any) bool { _, ok := m["port_value"]; return ok })
	}
	cases := []struct {
		name   string
		mutate func(t *testing.T, compose, boot any)
		want   string
	}{
		{"one replica", func(t *testing.T, compose, _ any) {
			sub(t, svc(t, compose, "keygate"), "deploy")["replicas"] = 1
		}, "deploy.replicas must be 3"},
		{"no deploy", func(t *testing.T, compose, _ any) {
			delete(svc(t, compose, "keygate"), "deploy")
		}, "deploy.replicas must be 3"},
		{"container_name", func(t *testing.T, compose, _ any) {
			svc(t, compose, "keygate")["container_name"] = "keygate"
		}, "container_name"},
		{"host port published", func(t *testing.T, compose, _ any) {
			svc(t, compose, "keygate")["ports"] = []any{"9001:9001"}
		}, "cannot share a host port"},
		{"wrong build context", func(t *testing.T, compose, _ any) {
			svc(t, compose, "keygate")["build"] = ".."
		}, "not the repository root"},
		{"bbolt store", func(t *testing.T, compose, _ any) {
			sub(t, compose.(map[string]any), "configs", "keygate-config")["content"] = "rate_limits:\n  redis:\n    addr: redis:6379\n"
		}, "does not use etcd"},
		{"invalid embedded config", editConfig("replica_ttl: 10s", "replica_ttl: 1s"), "replica_ttl"},
		{"etcd endpoint not a service", editConfig("http://etcd:2379", "http://etcd-0:2379"), `names "etcd-0", which is not a service`},
		{"etcd peer port", editConfig("http://etcd:2379", "http://etcd:2380"), "does not listen for clients on 0.0.0.0:2380"},
		{"endpoints overridden by the environment", func(t *testing.T, compose, _ any) {
			sub(t, svc(t, compose, "keygate"), "environment")["KEYGATE_ETCD_ENDPOINTS"] = "http://127.0.0.1:2379"
		}, `names "127.0.0.1", which is not a service`},
		{"etcd on loopback", func(t *testing.T, compose, _ any) {
			s := svc(t, compose, "etcd")
			s["command"] = slices.DeleteFunc(slices.Clone(s["command"].([]any)), func(a any) bool {
				return strings.HasPrefix(fmt.Sprint(a), "--listen-client-urls")
			})
		}, "does not listen for clients"},
		{"etcd advertises localhost", func(t *testing.T, compose, _ any) {
			s := svc(t, compose, "etcd")
			for i, a := range s["command"].([]any) {
				if strings.HasPrefix(fmt.Sprint(a), "--advertise-client-urls") {
					s["command"].([]any)[i] = "--advertise-client-urls=http://localhost:2379"
				}
			}
		}, "advertises"},
		{"shared data volume", func(t *testing.T, compose, _ any) {
			svc(t, compose, "keygate")["volumes"] = []any{"keygate-data:/data"}
		}, "race to create their admin token"},
		{"no redis", editConfig("addr: redis:6379", `addr: ""`), "each replica would count budgets on its own"},
		{"redis port", editConfig("addr: redis:6379", "addr: redis:6380"), "listens on port 6379"},
		{"redis not a service", editConfig("addr: redis:6379", "addr: valkey:6379"), `names "valkey"`},
		{"keygate does not wait for a healthy etcd", func(t *testing.T, compose, _ any) {
			sub(t, svc(t, compose, "keygate"), "depends_on", "etcd")["condition"] = "service_started"
		}, "depends_on etcd must have condition service_healthy"},
		{"keygate does not wait for redis", func(t *testing.T, compose, _ any) {
			delete(sub(t, svc(t, compose, "keygate"), "depends_on"), "redis")
		}, "depends_on redis must have condition service_started"},
		{"envoy does not wait for healthy replicas", func(t *testing.T, compose, _ any) {
			svc(t, compose, "envoy")["depends_on"] = []any{"keygate", "backend"}
		}, "depends_on keygate must have condition service_healthy"},
		{"etcd without healthcheck", func(t *testing.T, compose, _ any) {
			delete(svc(t, compose, "etcd"), "healthcheck")
		}, "etcd has no healthcheck"},
		{"etcd healthcheck not etcdctl", func(t *testing.T, compose, _ any) {
			sub(t, svc(t, compose, "etcd"), "healthcheck")["test"] = []any{"CMD", "true"}
		}, "not etcdctl endpoint health"},
		{"envoy mounts another bootstrap", func(t *testing.T, compose, _ any) {
			svc(t, compose, "envoy")["volumes"] = []any{"../envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro"}
		}, "want ./envoy.yaml"},
		{"envoy mounts nothing", func(t *testing.T, compose, _ any) {
			delete(svc(t, compose, "envoy"), "volumes")
		}, "does not mount ./envoy.yaml"},
		{"gRPC listener on loopback", func(t *testing.T, compose, _ any) {
			sub(t, svc(t, compose, "keygate"), "environment")["KEYGATE_GRPC_LISTEN"] = "127.0.0.1:9001"
		}, "not reachable from the Envoy container"},
		{"gRPC listener on another port", func(t *testing.T, compose, _ any) {
			sub(t, svc(t, compose, "keygate"), "environment")["KEYGATE_GRPC_LISTEN"] = "0.0.0.0:9005"
		}, "want the one name all replicas answer to, keygate:9005"},
		{"LOGICAL_DNS", func(t *testing.T, _, boot any) {
			cluster(t, boot)["type"] = "LOGICAL_DNS"
		}, "want STRICT_DNS"},
		{"static cluster", func(t *testing.T, _, boot any) {
			cluster(t, boot)["type"] = "STATIC"
		}, "want STRICT_DNS"},
		{"least request", func(t *testing.T, _, boot any) {
			cluster(t, boot)["lb_policy"] = "LEAST_REQUEST"
		}, "want ROUND_ROBIN"},
		{"cluster port is the HTTP listener", func(t *testing.T, _, boot any) {
			socket(t, boot)["port_value"] = 9002
		}, "want the one name all replicas answer to, keygate:9001"},
		{"cluster names one container", func(t *testing.T, _, boot any) {
			socket(t, boot)["address"] = "replicas-keygate-1"
		}, `"replicas-keygate-1", which is not a service`},
		{"ext_authz over HTTP", func(t *testing.T, _, boot any) {
			e := only(t, boot, "ExtAuthz", typed(extAuthzType))
			delete(e, "grpc_service")
			e["http_service"] = map[string]any{"path_prefix": "/envoy", "server_uri": map[string]any{"uri": "http://keygate:9002", "cluster": "keygate", "timeout": "0.25s"}}
		}, "does not use envoy_grpc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			compose, boot := loadTree(t, replicasCompose), loadTree(t, replicasBootstrap)
			if p := checkReplicasCompose(compose, map[string]any{replicasBootstrap: boot}, image); len(p) != 0 {
				t.Fatalf("the example does not pass unmutated: %q", p)
			}
			c.mutate(t, compose, boot)
			p := checkReplicasCompose(compose, map[string]any{replicasBootstrap: boot}, image)
			for _, s := range p {
				if strings.Contains(s, c.want) {
					t.Logf("reported: %s", s)
					return
				}
			}
			t.Errorf("want a problem mentioning %q, got %q", c.want, p)
		})
	}
}
