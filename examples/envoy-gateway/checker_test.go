package envoygateway

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// check returns every way m fails what Keygate and Envoy Gateway need.
func check(m *manifests, kg *keygate) []string {
	c := &checker{m: m, kg: kg, problems: slices.Clone(m.dupes)}
	for _, d := range m.ownDocs {
		if ns := namespaceOf(d.obj); ns != "" {
			c.add("%s: namespace %q: the example applies to the namespace of your choice (-n)", d.where, ns)
		}
	}
	if len(m.gateways) == 0 || len(m.routes) == 0 || len(m.policies) == 0 {
		c.add("want at least a Gateway, an HTTPRoute and a SecurityPolicy; have %d, %d and %d", len(m.gateways), len(m.routes), len(m.policies))
	}
	for _, name := range sortedKeys(m.gateways) {
		c.gateway(m.gateways[name])
	}
	guarded := map[string]bool{}
	for _, name := range sortedKeys(m.policies) {
		for _, r := range c.policy(m.policies[name]) {
			guarded[r] = true
		}
	}
	for _, name := range sortedKeys(m.routes) {
		c.route(m.routes[name], guarded[name])
	}
	if len(guarded) == 0 {
		c.add("no HTTPRoute has Keygate in front of it")
	}
	return c.problems
}

type checker struct {
	m        *manifests
	kg       *keygate
	problems []string
}

func (c *checker) add(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c *checker) gateway(g *gwapiv1.Gateway) {
	where := "Gateway " + g.Name
	class, ok := c.m.classes[string(g.Spec.GatewayClassName)]
	switch {
	case !ok:
		c.add("%s: gatewayClassName %q: no such GatewayClass", where, g.Spec.GatewayClassName)
	case class.Spec.ControllerName != egController:
		c.add("%s: GatewayClass %s has controllerName %q, not Envoy Gateway's %q", where, class.Name, class.Spec.ControllerName, egController)
	}
	// headersToExtAuth shows Keygate only the headers it names, so Keygate
	// cannot strip an x_api_key or x_tenant_id it never saw: the Gateway
	// must refuse such names before anything else reads them.
	var underscores, slashes bool
	for _, p := range c.m.traffic {
		if !targets(p.Spec.PolicyTargetReferences, "Gateway", g.Name) {
			continue
		}
		if h := p.Spec.Headers; h != nil && h.WithUnderscoresAction != nil && *h.WithUnderscoresAction == egv1a1.WithUnderscoresActionRejectRequest {
			underscores = true
		}
		if s := p.Spec.Path; s != nil && s.EscapedSlashesAction != nil && *s.EscapedSlashesAction == egv1a1.RejectRequestAction {
			slashes = true
		}
	}
	if !underscores {
		c.add("%s: no ClientTrafficPolicy targeting it sets headers.withUnderscoresAction: RejectRequest", where)
	}
	if !slashes {
		c.add("%s: no ClientTrafficPolicy targeting it sets path.escapedSlashesAction: RejectRequest", where)
	}
}

// policy checks one SecurityPolicy and returns the HTTPRoutes it puts
// Keygate in front of.
func (c *checker) policy(p *egv1a1.SecurityPolicy) (routes []string) {
	where := "SecurityPolicy " + p.Name
	refs := p.Spec.TargetRefs
	//lint:ignore SA1019 refused here because it is deprecated
	if p.Spec.TargetRef != nil || len(p.Spec.TargetSelectors) > 0 {
		c.add("%s: use targetRefs (targetRef is deprecated, targetSelectors are not checked here)", where)
	}
	if len(refs) == 0 {
		c.add("%s: no targetRefs", where)
	}
	for _, r := range refs {
		if r.Group != gwapiv1.GroupName || r.Kind != "HTTPRoute" {
			c.add("%s: targets %s %s/%s; this example targets HTTPRoutes", where, r.Kind, r.Group, r.Name)
			continue
		}
		if _, ok := c.m.routes[string(r.Name)]; !ok {
			c.add("%s: targets HTTPRoute %q, which is not in the files", where, r.Name)
			continue
		}
		routes = append(routes, string(r.Name))
	}
	ea := p.Spec.ExtAuth
	if ea == nil {
		c.add("%s: no extAuth", where)
		return nil
	}
	if ea.HTTP != nil || ea.GRPC == nil {
		c.add("%s: extAuth must be grpc (Keygate's ext_authz service on its gRPC listener), not http", where)
		return routes
	}
	c.backendRefs(where, ea.GRPC)

	// Fail closed, said explicitly.
	if ea.FailOpen == nil || *ea.FailOpen {
		c.add("%s: extAuth.failOpen must be set to false", where)
	}
	if ea.StatusOnError == nil || *ea.StatusOnError != 503 {
		c.add("%s: extAuth.statusOnError must be 503, the status Keygate itself answers when it cannot decide", where)
	}
	// Envoy Gateway drops a timeout it cannot parse, silently, for its 10s.
	switch {
	case ea.Timeout == nil:
		c.add("%s: extAuth.timeout unset: Envoy Gateway's 10s default holds requests far past Keygate's budget", where)
	default:
		d, err := time.ParseDuration(string(*ea.Timeout))
		if err != nil || d <= 0 || !gatewayDuration.MatchString(string(*ea.Timeout)) {
			c.add("%s: extAuth.timeout %q is not a Gateway API duration", where, *ea.Timeout)
		}
	}
	if ea.BodyToExtAuth != nil {
		c.add("%s: extAuth.bodyToExtAuth: Keygate reads no body; buffering it only delays requests", where)
	}
	if len(ea.HeadersToExtAuth) == 0 {
		c.add("%s: extAuth.headersToExtAuth is empty: list the headers Keygate reads", where)
	}
	for _, h := range c.kg.reads {
		if !containsFold(ea.HeadersToExtAuth, h) {
			c.add("%s: extAuth.headersToExtAuth lacks %q, which Keygate reads (%s)", where, h, c.kg.why[h])
		}
	}
	c.contextExtensions(where, ea.ContextExtensions, routes)
	return routes
}

// gatewayDuration is Gateway API's Duration (GEP-2257) as its CRD checks it.
var gatewayDuration = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// backendRefs checks that every backend of the ext_authz service is
// Keygate's gRPC listener.
func (c *checker) backendRefs(where string, g *egv1a1.GRPCExtAuthService) {
	//lint:ignore SA1019 refused here because it is deprecated
	if g.BackendRef != nil {
		c.add("%s: extAuth.grpc.backendRef is deprecated: use backendRefs", where)
	}
	if len(g.BackendRefs) == 0 {
		c.add("%s: extAuth.grpc.backendRefs is empty", where)
	}
	for _, r := range g.BackendRefs {
		name := string(r.Name)
		if r.Namespace != nil {
			c.add("%s: backendRef %s names namespace %q: keep the example in one namespace (or add a ReferenceGrant)", where, name, *r.Namespace)
		}
		group, kind := "", "Service"
		if r.Group != nil {
			group = string(*r.Group)
		}
		if r.Kind != nil {
			kind = string(*r.Kind)
		}
		switch {
		case group == "" && kind == "Service":
			if r.Port == nil {
				c.add("%s: backendRef Service %s: no port", where, name)
				continue
			}
			c.keygateService(where, name, int32(*r.Port))
		case group == egv1a1.GroupName && kind == "Backend":
			b, ok := c.m.backends[name]
			if !ok {
				c.add("%s: backendRef Backend %q is not in the files", where, name)
				continue
			}
			if r.Port != nil && int32(*r.Port) != c.kg.grpcPort {
				c.add("%s: backendRef Backend %s: port %d, not Keygate's gRPC port %d", where, name, *r.Port, c.kg.grpcPort)
			}
			if len(b.Spec.Endpoints) == 0 {
				c.add("Backend %s: no endpoints", name)
			}
			for _, e := range b.Spec.Endpoints {
				var port int32
				switch {
				case e.FQDN != nil:
					port = e.FQDN.Port
				case e.IP != nil:
					port = e.IP.Port
				default:
					c.add("Backend %s: an endpoint that is not fqdn or ip", name)
					continue
				}
				if port != c.kg.grpcPort {
					c.add("Backend %s: endpoint port %d, not Keygate's gRPC port %d", name, port, c.kg.grpcPort)
				}
				// A cluster-local name is a Service of Keygate's manifest:
				// the same checks as a Service backendRef.
				if e.FQDN != nil {
					if h := strings.TrimSuffix(e.FQDN.Hostname, "."); strings.HasSuffix(h, ".svc.cluster.local") {
						c.keygateService("Backend "+name, strings.SplitN(h, ".", 2)[0], port)
					}
				}
			}
		default:
			c.add("%s: backendRef %s %s/%s: want a Service or an Envoy Gateway Backend", where, name, group, kind)
		}
	}
}

// keygateService checks that Service name, port port reaches Keygate's
// gRPC listener: its selector picks Keygate's pods and the port's target
// is the container port Keygate's gRPC listener binds.
func (c *checker) keygateService(where, name string, port int32) {
	s, ok := c.m.services[name]
	if !ok {
		c.add("%s: backendRef Service %q is in neither these files nor %s", where, name, keygateManifest)
		return
	}
	d := c.kg.deployment
	sel := labels.SelectorFromSet(s.Spec.Selector)
	if len(s.Spec.Selector) == 0 || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		c.add("%s: Service %s does not select Keygate's pods (Deployment %s)", where, name, d.Name)
		return
	}
	i := slices.IndexFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == port })
	if i < 0 {
		c.add("%s: Service %s has no port %d", where, name, port)
		return
	}
	target := s.Spec.Ports[i].TargetPort
	var container int32
	switch {
	case target.Type == intstr.String:
		for _, p := range c.kg.container.Ports {
			if p.Name == target.StrVal {
				container = p.ContainerPort
			}
		}
	case target.IntVal != 0:
		container = target.IntVal
	default:
		container = port
	}
	if container != c.kg.grpcPort {
		c.add("%s: Service %s port %d reaches container port %d, not Keygate's gRPC listener (%d)", where, name, port, container, c.kg.grpcPort)
	}
}

// contextExtensions checks the keygate.* settings of a policy the way
// Keygate reads them: a Check on each route it targets, with them as the
// context, must be decided, not refused as misconfigured.
func (c *checker) contextExtensions(where string, exts []*egv1a1.ContextExtension, routes []string) {
	if len(exts) == 0 {
		return
	}
	settings := map[string]string{}
	for _, e := range exts {
		if e == nil {
			continue
		}
		if e.Type != egv1a1.ContextExtensionValueTypeValue || e.Value == nil || e.ValueRef != nil {
			c.add("%s: contextExtension %s: want type Value and a value (a ValueRef cannot be checked here)", where, e.Name)
			continue
		}
		if _, dup := settings[e.Name]; dup {
			c.add("%s: contextExtension %s given twice", where, e.Name)
		}
		settings[e.Name] = *e.Value
	}
	for _, r := range routes {
		for _, path := range probePaths(c.m.routes[r]) {
			_, err := c.kg.decide(path, settings)
			if err != nil {
				c.add("%s: Keygate refuses a request to %s (HTTPRoute %s) with these contextExtensions: %v", where, path, r, err)
			}
		}
	}
}

func (c *checker) route(r *gwapiv1.HTTPRoute, guarded bool) {
	where := "HTTPRoute " + r.Name
	if len(r.Spec.ParentRefs) == 0 {
		c.add("%s: no parentRefs", where)
	}
	for _, p := range r.Spec.ParentRefs {
		if (p.Group != nil && *p.Group != gwapiv1.GroupName) || (p.Kind != nil && *p.Kind != "Gateway") || p.Namespace != nil {
			c.add("%s: parentRef %s is not a Gateway of this namespace", where, p.Name)
			continue
		}
		if _, ok := c.m.gateways[string(p.Name)]; !ok {
			c.add("%s: parentRef Gateway %q is not in the files", where, p.Name)
		}
	}
	for _, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			if (b.Group != nil && *b.Group != "") || (b.Kind != nil && *b.Kind != "Service") || b.Namespace != nil {
				continue
			}
			s, ok := c.m.services[string(b.Name)]
			if !ok {
				c.add("%s: backendRef Service %q is not in the files", where, b.Name)
				continue
			}
			if b.Port == nil || !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(*b.Port) }) {
				c.add("%s: backendRef Service %s: no such port", where, b.Name)
			}
		}
	}
	removed := map[string]bool{}
	allRules := true
	for _, rule := range r.Spec.Rules {
		ruleRemoved := map[string]bool{}
		for _, f := range rule.Filters {
			if f.Type != gwapiv1.HTTPRouteFilterRequestHeaderModifier || f.RequestHeaderModifier == nil {
				continue
			}
			h := f.RequestHeaderModifier
			for _, n := range h.Remove {
				ruleRemoved[strings.ToLower(n)] = true
				removed[strings.ToLower(n)] = true
			}
			if guarded {
				// The route's header filter runs after ext_authz: it would
				// undo what Keygate set.
				for _, n := range c.kg.identity {
					if containsFold(h.Remove, n) || slices.ContainsFunc(append(h.Set, h.Add...), func(x gwapiv1.HTTPHeader) bool { return strings.EqualFold(string(x.Name), n) }) {
						c.add("%s: its RequestHeaderModifier touches %s, which Keygate sets", where, n)
					}
				}
			}
		}
		for _, n := range c.kg.strip {
			if !ruleRemoved[n] {
				allRules = false
			}
		}
	}
	if guarded {
		return
	}
	// A public route: Keygate never sees it, so the route strips what
	// Keygate would have.
	for _, n := range c.kg.strip {
		if !removed[n] {
			c.add("%s: no SecurityPolicy guards it, and it does not remove %s (RequestHeaderModifier)", where, n)
		}
	}
	if !allRules {
		c.add("%s: every rule of an unguarded route must remove the identity and credential headers", where)
	}
	// And Keygate would let these requests through without a key anyway: a
	// route left open at the Gateway is one Keygate's own routes call public.
	for _, path := range probePaths(r) {
		d, err := c.kg.decide(path, nil)
		if err != nil || d.Status != 200 {
			c.add("%s: no SecurityPolicy guards it, but Keygate's routes (%s) want a key for %s (status %d, %v)", where, keygateManifest, path, d.Status, err)
		}
	}
}

// probePaths returns a request path for each path match of r.
func probePaths(r *gwapiv1.HTTPRoute) []string {
	var out []string
	for _, rule := range r.Spec.Rules {
		matches := rule.Matches
		if len(matches) == 0 {
			out = append(out, "/probe")
		}
		for _, m := range matches {
			if m.Path == nil || m.Path.Value == nil {
				out = append(out, "/probe")
				continue
			}
			v := *m.Path.Value
			switch {
			case m.Path.Type != nil && *m.Path.Type == gwapiv1.PathMatchExact:
				out = append(out, v)
			case m.Path.Type != nil && *m.Path.Type == gwapiv1.PathMatchRegularExpression:
				out = append(out, "regular expression "+v) // decide refuses: no path to try
			case strings.HasSuffix(v, "/"):
				out = append(out, v+"probe")
			default:
				out = append(out, v+"/probe")
			}
		}
	}
	return out
}

func targets(refs egv1a1.PolicyTargetReferences, kind, name string) bool {
	for _, r := range refs.TargetRefs {
		if r.Group == gwapiv1.GroupName && string(r.Kind) == kind && string(r.Name) == name {
			return true
		}
	}
	return false
}

func namespaceOf(o any) string {
	if n, ok := o.(interface{ GetNamespace() string }); ok {
		return n.GetNamespace()
	}
	return ""
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}

func sortedKeys[T any](m map[string]T) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// portOf returns the port of a listen address.
func portOf(addr string) (int32, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", addr, err)
	}
	return int32(n), nil
}
