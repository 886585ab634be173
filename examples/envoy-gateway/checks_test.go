package envoygateway

import (
	"maps"
	"slices"
	"strings"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestChecksCatch breaks the example one way at a time and expects the
// checks of TestManifests to say so: each check can fail.
func TestChecksCatch(t *testing.T) {
	kg := loadKeygate(t, mainSet(t))
	api := func(m *manifests) *egv1a1.ExtAuth { return m.policies["keygate-api"].Spec.ExtAuth }
	vault := func(m *manifests) *egv1a1.ExtAuth { return m.policies["keygate-vault"].Spec.ExtAuth }
	health := func(m *manifests) *gwapiv1.HTTPRouteFilter {
		return &m.routes["health"].Spec.Rules[0].Filters[0]
	}
	for _, tc := range []struct {
		name   string
		break_ func(m *manifests, kg *keygate)
		want   string
	}{
		{"fail open", func(m *manifests, _ *keygate) { api(m).FailOpen = ptr.To(true) }, "keygate-api: extAuth.failOpen must be set to false"},
		{"failOpen left to the default", func(m *manifests, _ *keygate) { vault(m).FailOpen = nil }, "keygate-vault: extAuth.failOpen must be set to false"},
		{"a key source not sent", func(m *manifests, _ *keygate) {
			ea := api(m)
			ea.HeadersToExtAuth = slices.DeleteFunc(ea.HeadersToExtAuth, func(h string) bool { return h == "x-api-token" })
		}, `keygate-api: extAuth.headersToExtAuth lacks "x-api-token"`},
		{"all headers sent", func(m *manifests, _ *keygate) { api(m).HeadersToExtAuth = nil }, "headersToExtAuth is empty"},
		{"a header Keygate's config reads", func(m *manifests, kg *keygate) { kg.need("x-org-name", "policy.org_header") }, `lacks "x-org-name", which Keygate reads (policy.org_header)`},
		{"http instead of grpc", func(m *manifests, _ *keygate) {
			ea := api(m)
			ea.HTTP = &egv1a1.HTTPExtAuthService{BackendCluster: ea.GRPC.BackendCluster}
			ea.GRPC = nil
		}, "keygate-api: extAuth must be grpc"},
		{"Keygate's HTTP port", func(m *manifests, _ *keygate) {
			api(m).GRPC.BackendRefs[0].Port = ptr.To(gwapiv1.PortNumber(9002))
		}, "Service keygate port 9002 reaches container port 9002, not Keygate's gRPC listener (9001)"},
		{"no such port", func(m *manifests, _ *keygate) {
			api(m).GRPC.BackendRefs[0].Port = ptr.To(gwapiv1.PortNumber(9003))
		}, "Service keygate has no port 9003"},
		{"no such Service", func(m *manifests, _ *keygate) { api(m).GRPC.BackendRefs[0].Name = "keygat" }, `backendRef Service "keygat" is in neither`},
		{"a Service of other pods", func(m *manifests, _ *keygate) { vault(m).GRPC.BackendRefs[0].Name = "echo" }, "Service echo does not select Keygate's pods"},
		{"no such Backend", func(m *manifests, _ *keygate) {
			r := &api(m).GRPC.BackendRefs[0]
			r.Group, r.Kind, r.Port = ptr.To(gwapiv1.Group(egv1a1.GroupName)), ptr.To(gwapiv1.Kind("Backend")), nil
		}, `backendRef Backend "keygate" is not in the files`},
		{"no backendRefs", func(m *manifests, _ *keygate) { api(m).GRPC.BackendRefs = nil }, "backendRefs is empty"},
		{"timeout unset", func(m *manifests, _ *keygate) { api(m).Timeout = nil }, "extAuth.timeout unset"},
		{"timeout Envoy Gateway ignores", func(m *manifests, _ *keygate) { api(m).Timeout = ptr.To(gwapiv1.Duration("0.25s")) }, `extAuth.timeout "0.25s" is not a Gateway API duration`},
		{"403 when Keygate is down", func(m *manifests, _ *keygate) { api(m).StatusOnError = ptr.To(int32(403)) }, "statusOnError must be 503"},
		{"body buffered", func(m *manifests, _ *keygate) {
			api(m).BodyToExtAuth = &egv1a1.BodyToExtAuth{MaxRequestBytes: 1024}
		}, "Keygate reads no body"},
		{"a misspelt setting", func(m *manifests, _ *keygate) { vault(m).ContextExtensions[0].Name = "keygate.scope" }, `Keygate refuses a request to /api/v2/vault/probe (HTTPRoute vault) with these contextExtensions: authorization unavailable: route vault: context_extensions: unknown setting "keygate.scope"`},
		{"a bad setting value", func(m *manifests, _ *keygate) { vault(m).ContextExtensions[1].Value = ptr.To("-1") }, `keygate.cost="-1": want a non-negative integer`},
		{"a policy on a missing route", func(m *manifests, _ *keygate) {
			m.policies["keygate-api"].Spec.TargetRefs[0].Name = "apis"
		}, `keygate-api: targets HTTPRoute "apis", which is not in the files`},
		{"no policy at all", func(m *manifests, _ *keygate) { clear(m.policies) }, "want at least a Gateway, an HTTPRoute and a SecurityPolicy"},
		// Unguarded, "api" must strip identity headers and be public to
		// Keygate: it is neither.
		{"an unguarded route", func(m *manifests, _ *keygate) { delete(m.policies, "keygate-api") }, "HTTPRoute api: no SecurityPolicy guards it, and it does not remove x-tenant-id"},
		{"an unguarded route Keygate guards", func(m *manifests, _ *keygate) { delete(m.policies, "keygate-api") }, "HTTPRoute api: no SecurityPolicy guards it, but Keygate's routes (../kubernetes/keygate.yaml) want a key for /probe (status 401"},
		{"the public route keeps a spoofed identity", func(m *manifests, _ *keygate) {
			h := health(m).RequestHeaderModifier
			h.Remove = slices.DeleteFunc(h.Remove, func(n string) bool { return n == "x-scopes" })
		}, "HTTPRoute health: no SecurityPolicy guards it, and it does not remove x-scopes"},
		{"the public route keeps the key", func(m *manifests, _ *keygate) {
			h := health(m).RequestHeaderModifier
			h.Remove = slices.DeleteFunc(h.Remove, func(n string) bool { return n == "authorization" })
		}, "does not remove authorization"},
		{"a public path Keygate guards", func(m *manifests, _ *keygate) {
			m.routes["health"].Spec.Rules[0].Matches[0].Path.Value = ptr.To("/metrics")
		}, "HTTPRoute health: no SecurityPolicy guards it, but Keygate's routes (../kubernetes/keygate.yaml) want a key for /metrics"},
		{"a guarded route drops what Keygate set", func(m *manifests, _ *keygate) {
			r := m.routes["api"]
			r.Spec.Rules[0].Filters = append(r.Spec.Rules[0].Filters, *health(m))
		}, "HTTPRoute api: its RequestHeaderModifier touches x-tenant-id, which Keygate sets"},
		{"a route on another Gateway", func(m *manifests, _ *keygate) {
			m.routes["vault"].Spec.ParentRefs[0].Name = "eg"
		}, `HTTPRoute vault: parentRef Gateway "eg" is not in the files`},
		{"a route to a missing Service", func(m *manifests, _ *keygate) {
			m.routes["api"].Spec.Rules[0].BackendRefs[0].Name = "backend"
		}, `HTTPRoute api: backendRef Service "backend" is not in the files`},
		{"underscores allowed", func(m *manifests, _ *keygate) {
			m.traffic["keygate-example"].Spec.Headers.WithUnderscoresAction = ptr.To(egv1a1.WithUnderscoresActionAllow)
		}, "sets headers.withUnderscoresAction: RejectRequest"},
		{"escaped slashes unescaped", func(m *manifests, _ *keygate) {
			m.traffic["keygate-example"].Spec.Path.EscapedSlashesAction = ptr.To(egv1a1.UnescapeAndRedirect)
		}, "sets path.escapedSlashesAction: RejectRequest"},
		{"another controller", func(m *manifests, _ *keygate) {
			m.classes["keygate-example"].Spec.ControllerName = "example.com/gateway"
		}, "not Envoy Gateway's"},
		{"a fixed namespace", func(m *manifests, _ *keygate) { m.routes["api"].Namespace = "default" }, `routes.yaml#0: namespace "default"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mainSet(t)
			k := *kg
			k.reads, k.why = slices.Clone(kg.reads), maps.Clone(kg.why)
			tc.break_(m, &k)
			problems := check(m, &k)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("no problem contains %q; got:\n%s", tc.want, strings.Join(problems, "\n"))
			}
		})
	}
}

// TestBackendChecksCatch breaks the Backend variant (backend/).
func TestBackendChecksCatch(t *testing.T) {
	kg := loadKeygate(t, mainSet(t))
	for _, tc := range []struct {
		name   string
		break_ func(b *egv1a1.Backend)
		want   string
	}{
		{"another port", func(b *egv1a1.Backend) { b.Spec.Endpoints[0].FQDN.Port = 9002 }, "Backend keygate: endpoint port 9002, not Keygate's gRPC port 9001"},
		{"a Service that is not Keygate's", func(b *egv1a1.Backend) {
			b.Spec.Endpoints[0].FQDN.Hostname = "keygate-admin.keygate.svc.cluster.local"
		}, `Backend keygate: backendRef Service "keygate-admin" is in neither`},
		{"no endpoints", func(b *egv1a1.Backend) { b.Spec.Endpoints = nil }, "Backend keygate: no endpoints"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := backendSet(t)
			tc.break_(m.backends["keygate"])
			problems := check(m, kg)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("no problem contains %q; got:\n%s", tc.want, strings.Join(problems, "\n"))
			}
		})
	}
}
