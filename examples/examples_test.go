// Package examples holds configurations users copy: Envoy bootstraps, a
// docker compose file, Istio and Kubernetes manifests. Its tests load each
// into the real schema it is written for (go-control-plane's Envoy protos,
// Keygate's config loader) and check that the files agree with each other
// and with what Keygate needs, so an example cannot rot unnoticed.
package examples

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/keystore/apikey"
)

// The imports above register the Envoy types the examples name in
// "@type" (Router and HttpProtocolOptions are used through Any only):
// protojson and anypb resolve them from the global registry, so a type
// the examples use must be imported here or it reads as unknown.
var _ = []proto.Message{&routerv3.Router{}, &upstreamhttpv3.HttpProtocolOptions{}}

// ---------------------------------------------------------------------------
// YAML

// readYAML decodes every document of a YAML file into plain values whose
// maps have string keys, the shape encoding/json writes. Empty documents
// are skipped.
func readYAML(data []byte) ([]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []any
	for {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if v != nil {
			docs = append(docs, stringKeys(v))
		}
	}
}

// stringKeys turns map[any]any (YAML allows non-string keys) into
// map[string]any, recursively, so the tree marshals to JSON.
func stringKeys(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = stringKeys(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = stringKeys(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = stringKeys(e)
		}
	}
	return v
}

// yamlFile is one file under examples/, decoded.
type yamlFile struct {
	path string // relative to examples/, slash-separated
	docs []any
}

// exampleYAML reads every .yaml/.yml file under examples/. A file that is
// not valid YAML fails the test: users copy these. A Helm chart's
// templates are not YAML until helm renders them: examples/helm's own
// module renders and checks them.
func exampleYAML(t *testing.T) []yamlFile {
	t.Helper()
	var files []yamlFile
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "templates" && strings.HasPrefix(filepath.ToSlash(p), "helm/") {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		docs, err := readYAML(data)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		files = append(files, yamlFile{path: filepath.ToSlash(p), docs: docs})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// isBootstrap: Envoy bootstraps are the documents with a top-level
// static_resources.
func isBootstrap(doc any) bool {
	m, ok := doc.(map[string]any)
	_, has := m["static_resources"]
	return ok && has
}

// ---------------------------------------------------------------------------
// Envoy bootstraps

// identityHeaders are the headers Keygate sets upstream (DESIGN.md).
func identityHeaders() []string {
	h := authz.DefaultIdentityHeaders
	return []string{h.Tenant, h.Org, h.User, h.KeyID, h.KeyName, h.Environment, h.Tier, h.Scopes}
}

// bypassStrips are the headers a route that skips ext_authz must remove
// itself: the identity headers and the signature (a client's must not pass
// for Keygate's), and every credential source (the key must not reach the
// backend, though nobody checks it there).
func bypassStrips() []string {
	return slices.Concat(identityHeaders(), []string{authz.DefaultSignatureHeader}, authz.DefaultSources)
}

// keygateSettings are the context_extensions names Keygate reads.
var keygateSettings = []string{authz.SettingPublic, authz.SettingScopes, authz.SettingEnvironments, authz.SettingCost, authz.SettingShadow}

const httpProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

type validator interface{ ValidateAll() error }

type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// parseBootstrap reads a decoded YAML tree as Envoy reads its bootstrap:
// through the proto's JSON mapping, strictly (an unknown field or an
// unresolvable "@type" is an error, as in Envoy).
func parseBootstrap(tree any) (*bootstrapv3.Bootstrap, error) {
	js, err := json.Marshal(tree)
	if err != nil {
		return nil, err
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, bs); err != nil {
		return nil, fmt.Errorf("not a valid Envoy v3 Bootstrap: %w", err)
	}
	return bs, nil
}

// bootstrapChecker walks one bootstrap.
type bootstrapChecker struct {
	problems
	clusters map[string]*clusterv3.Cluster
	extAuthz int
}

// checkBootstrap returns what is wrong with an Envoy bootstrap: what
// Envoy's own validation rejects (protoc-gen-validate rules, on the
// bootstrap and on every typed config inside it), deprecated fields,
// dangling cluster names, and what Keygate needs from Envoy.
func checkBootstrap(tree any) []string {
	bs, err := parseBootstrap(tree)
	if err != nil {
		return []string{err.Error()}
	}
	c := &bootstrapChecker{clusters: map[string]*clusterv3.Cluster{}}
	if err := bs.ValidateAll(); err != nil {
		c.add("bootstrap: %v", err)
	}
	for _, cl := range bs.GetStaticResources().GetClusters() {
		if _, dup := c.clusters[cl.GetName()]; dup {
			c.add("cluster %q is defined twice", cl.GetName())
		}
		c.clusters[cl.GetName()] = cl
	}
	c.walk(bs.ProtoReflect(), "")
	if c.extAuthz == 0 {
		c.add("no ext_authz filter: requests reach the backend without Keygate")
	}
	sort.Strings(c.problems)
	return c.problems
}

// walk visits every message of the tree, unpacking each Any (typed_config,
// typed_per_filter_config, typed_extension_protocol_options...) into its
// message, which it validates and walks in turn: Envoy validates them when
// it instantiates the extension, ValidateAll on the bootstrap does not.
func (c *bootstrapChecker) walk(m protoreflect.Message, path string) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			c.add("%s: %v", path, err)
			return
		}
		if v, ok := inner.(validator); ok {
			if err := v.ValidateAll(); err != nil {
				c.add("%s (%s): %v", path, a.MessageName(), err)
			}
		}
		c.walk(inner.ProtoReflect(), path)
		return
	}
	c.visit(path, m.Interface())
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		c.deprecated(p, fd, v)
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					c.walk(mv.Message(), fmt.Sprintf("%s[%s]", p, k))
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i, l := 0, v.List(); i < l.Len(); i++ {
					c.walk(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i))
				}
			}
		case fd.Message() != nil:
			c.walk(v.Message(), p)
		}
		return true
	})
}

// deprecated reports deprecated fields and enum values: Envoy warns about
// them today and refuses them in a later release, and users copy these
// files for years.
func (c *bootstrapChecker) deprecated(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	if o, ok := fd.Options().(*descriptorpb.FieldOptions); ok && o.GetDeprecated() {
		c.add("%s is deprecated", path)
	}
	if fd.Kind() == protoreflect.EnumKind && !fd.IsList() && !fd.IsMap() {
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			if o, ok := ev.Options().(*descriptorpb.EnumValueOptions); ok && o.GetDeprecated() {
				c.add("%s: %s is deprecated", path, ev.Name())
			}
		}
	}
}

func (c *bootstrapChecker) visit(path string, m proto.Message) {
	switch m := m.(type) {
	case *clusterv3.Cluster:
		for k, a := range m.GetTypedExtensionProtocolOptions() {
			// Envoy finds protocol options by this key, not by "@type".
			if a.MessageName() == httpProtocolOptions && k != httpProtocolOptions {
				c.add("%s: cluster %q has HttpProtocolOptions under %q; Envoy reads them only under %s", path, m.GetName(), k, httpProtocolOptions)
			}
		}
	case *routev3.RouteAction:
		switch s := m.GetClusterSpecifier().(type) {
		case *routev3.RouteAction_Cluster:
			c.ref(path+".cluster", s.Cluster)
		case *routev3.RouteAction_WeightedClusters:
			for _, w := range s.WeightedClusters.GetClusters() {
				c.ref(path+".weighted_clusters", w.GetName())
			}
		default:
			c.add("%s: routes here name their cluster, so that it can be checked", path)
		}
	case *corev3.GrpcService:
		if eg := m.GetEnvoyGrpc(); eg != nil {
			if cl := c.ref(path+".envoy_grpc.cluster_name", eg.GetClusterName()); cl != nil && !speaksHTTP2(cl) {
				c.add("%s: cluster %q carries gRPC but is not configured for HTTP/2 (typed_extension_protocol_options %s explicit_http_config.http2_protocol_options)", path, eg.GetClusterName(), httpProtocolOptions)
			}
		}
	case *corev3.HttpUri:
		c.ref(path+".cluster", m.GetCluster())
	case *hcmv3.HttpConnectionManager:
		c.hcm(path, m)
	case *extauthzv3.ExtAuthz:
		c.extAuthz++
		c.checkExtAuthz(path, m)
	}
}

// ref reports a cluster name that static_resources does not define: Envoy
// would refuse a bootstrap naming one (or fail every request using it).
func (c *bootstrapChecker) ref(path, name string) *clusterv3.Cluster {
	cl, ok := c.clusters[name]
	if !ok {
		c.add("%s: cluster %q is not defined in static_resources.clusters", path, name)
	}
	return cl
}

func speaksHTTP2(cl *clusterv3.Cluster) bool {
	//lint:ignore SA1019 a bootstrap written for an older Envoy still says http2_protocol_options, and still speaks HTTP/2
	if cl.GetHttp2ProtocolOptions() != nil { // deprecated; reported as such
		return true
	}
	a, ok := cl.GetTypedExtensionProtocolOptions()[httpProtocolOptions]
	if !ok {
		return false
	}
	var o upstreamhttpv3.HttpProtocolOptions
	if a.UnmarshalTo(&o) != nil {
		return false
	}
	return o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

// checkExtAuthz checks the facts Keygate relies on (DESIGN.md, "Envoy
// facts the code must respect").
func (c *bootstrapChecker) checkExtAuthz(path string, e *extauthzv3.ExtAuthz) {
	if e.GetFailureModeAllow() {
		c.add("%s: failure_mode_allow must be false: an unreachable Keygate would let every request through", path)
	}
	if e.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		c.add("%s: transport_api_version must be V3 (got %s): Keygate speaks envoy.service.auth.v3 only", path, e.GetTransportApiVersion())
	}
	sources := slices.Clone(authz.DefaultSources)
	switch s := e.GetServices().(type) {
	case *extauthzv3.ExtAuthz_GrpcService:
		if d := s.GrpcService.GetTimeout(); d == nil || d.AsDuration() <= 0 {
			c.add("%s: grpc_service.timeout must be set: it is the deadline Keygate honours, and Envoy's implicit 200ms is easy to miss", path)
		}
	case *extauthzv3.ExtAuthz_HttpService:
		hs := s.HttpService
		if hs.GetPathPrefix() != envoy.PathEnvoy || hs.GetPathOverride() != "" {
			c.add("%s: http_service.path_prefix must be %s (Keygate's Envoy dialect), got %q", path, envoy.PathEnvoy, hs.GetPathPrefix())
		}
		resp := hs.GetAuthorizationResponse()
		for _, h := range identityHeaders() {
			if !matchList(resp.GetAllowedUpstreamHeaders(), h) {
				c.add("%s: authorization_response.allowed_upstream_headers must include %s, or the backend never gets it from Keygate", path, h)
			}
			if matchList(resp.GetAllowedUpstreamHeadersToAppend(), h) {
				c.add("%s: %s must not be in allowed_upstream_headers_to_append: appending keeps a client's spoofed value beside Keygate's", path, h)
			}
		}
		// Unset, Envoy passes every header of a refusal to the client.
		if l := resp.GetAllowedClientHeaders(); l != nil {
			for _, h := range []string{"content-type", "retry-after", authz.DecisionIDHeader} {
				if !matchList(l, h) {
					c.add("%s: authorization_response.allowed_client_headers must include %s, or Keygate's refusals lose it", path, h)
				}
			}
		}
		// Envoy always sends authorization to an HTTP service.
		sources = slices.DeleteFunc(sources, func(s string) bool { return s == authz.SourceAuthorization })
		//lint:ignore SA1019 a bootstrap written for an older Envoy lists the key headers in authorization_request, which Envoy still honours
		if e.GetAllowedHeaders() == nil && hs.GetAuthorizationRequest().GetAllowedHeaders() == nil {
			c.add("%s: allowed_headers must list the key headers (%s): in http_service mode Envoy sends none by default", path, strings.Join(sources, ", "))
			sources = nil
		}
	default:
		c.add("%s: ext_authz has neither grpc_service nor http_service", path)
	}
	allowed := e.GetAllowedHeaders()
	if allowed == nil {
		//lint:ignore SA1019 the older place of the list, which Envoy still honours (above)
		allowed = e.GetHttpService().GetAuthorizationRequest().GetAllowedHeaders()
	}
	for _, h := range sources {
		if allowed != nil && !matchList(allowed, h) {
			c.add("%s: allowed_headers does not include %s: Keygate would never see keys sent there", path, h)
		}
		if matchList(e.GetDisallowedHeaders(), h) {
			c.add("%s: disallowed_headers hides %s from Keygate", path, h)
		}
	}
}

// hcm checks an HTTP connection manager: its filter chain and, per route,
// how the ext_authz filter is configured there.
func (c *bootstrapChecker) hcm(path string, h *hcmv3.HttpConnectionManager) {
	filters := h.GetHttpFilters()
	names := map[string]bool{}
	var ext *extauthzv3.ExtAuthz
	for _, f := range filters {
		if names[f.GetName()] {
			c.add("%s: HTTP filter %q appears twice", path, f.GetName())
		}
		names[f.GetName()] = true
		var e extauthzv3.ExtAuthz
		if f.GetTypedConfig().MessageIs(&e) && f.GetTypedConfig().UnmarshalTo(&e) == nil {
			ext = &e
		}
	}
	if len(filters) == 0 || !filters[len(filters)-1].GetTypedConfig().MessageIs(&routerv3.Router{}) {
		c.add("%s: the last HTTP filter must be the router: filters after it never run, and ext_authz must run before it", path)
	}
	if ext == nil {
		c.add("%s: this connection manager has no ext_authz filter", path)
	}
	c.hardened(path, h)
	rc := h.GetRouteConfig()
	if rc == nil {
		c.add("%s: route_config must be inline here, so that its routes can be checked", path)
		return
	}
	identity := identityHeaders()
	strips := bypassStrips()
	for i, vh := range rc.GetVirtualHosts() {
		vpath := fmt.Sprintf("%s.route_config.virtual_hosts[%d]", path, i)
		vhExt := c.perFilter(vpath, vh.GetTypedPerFilterConfig(), names, ext)
		for j, r := range vh.GetRoutes() {
			rpath := fmt.Sprintf("%s.routes[%d] (%s)", vpath, j, r.GetName())
			rExt := c.perFilter(rpath, r.GetTypedPerFilterConfig(), names, ext)
			if rExt == nil {
				rExt = vhExt
			}
			removed := slices.Concat(r.GetRequestHeadersToRemove(), vh.GetRequestHeadersToRemove(), rc.GetRequestHeadersToRemove())
			if rExt.GetDisabled() {
				// Keygate never sees this request, so it cannot remove
				// identity headers a client made up, nor the key.
				for _, h := range strips {
					if !slices.Contains(removed, h) {
						c.add("%s: ext_authz is disabled, so request_headers_to_remove must strip %s, or a client can send it to the backend (a made-up identity, or its key)", rpath, h)
					}
				}
				continue
			}
			// The router applies removals after ext_authz has run: they
			// would strip what Keygate set.
			for _, id := range identity {
				if slices.Contains(removed, id) {
					c.add("%s: request_headers_to_remove would remove %s after Keygate set it", rpath, id)
				}
			}
		}
	}
}

// hardened checks that a connection manager refuses what a backend could
// read differently from Keygate: header names with an underscore (CGI,
// WSGI and Rack read x_tenant_id as x-tenant-id) and escaped slashes in
// the path, and that it normalises paths as Keygate's rules assume.
func (c *bootstrapChecker) hardened(path string, h *hcmv3.HttpConnectionManager) {
	for _, p := range hcmHardening(h) {
		c.add("%s: %s", path, p)
	}
	if !h.GetNormalizePath().GetValue() || !h.GetMergeSlashes() {
		c.add("%s: set normalize_path and merge_slashes: the backend should get the path Keygate's rules matched", path)
	}
}

func hcmHardening(h *hcmv3.HttpConnectionManager) []string {
	var p []string
	if a := h.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); a != corev3.HttpProtocolOptions_REJECT_REQUEST {
		p = append(p, fmt.Sprintf("common_http_protocol_options.headers_with_underscores_action is %s, want REJECT_REQUEST: a backend reads a client's x_tenant_id as the x-tenant-id Keygate sets", a))
	}
	if a := h.GetPathWithEscapedSlashesAction(); a != hcmv3.HttpConnectionManager_REJECT_REQUEST {
		p = append(p, fmt.Sprintf("path_with_escaped_slashes_action is %s, want REJECT_REQUEST: backends disagree on where /public%%2F..%%2Fadmin goes", a))
	}
	return p
}

// perFilter checks a typed_per_filter_config map and returns its ext_authz
// entry, if any.
func (c *bootstrapChecker) perFilter(path string, cfg map[string]*anypb.Any, filters map[string]bool, ext *extauthzv3.ExtAuthz) *extauthzv3.ExtAuthzPerRoute {
	var out *extauthzv3.ExtAuthzPerRoute
	for name, a := range cfg {
		if !filters[name] {
			c.add("%s: typed_per_filter_config %q names no HTTP filter of this connection manager", path, name)
		}
		var pr extauthzv3.ExtAuthzPerRoute
		if !a.MessageIs(&pr) || a.UnmarshalTo(&pr) != nil {
			continue
		}
		out = &pr
		ce := pr.GetCheckSettings().GetContextExtensions()
		if len(ce) > 0 && ext.GetHttpService() != nil {
			c.add("%s: context_extensions reach only gRPC ext_authz servers; in http_service mode Keygate never sees them (put the policy in Keygate's routes)", path)
		}
		for k := range ce {
			if strings.HasPrefix(k, "keygate.") && !slices.Contains(keygateSettings, k) {
				c.add("%s: context_extensions %q is not a Keygate setting (known: %s); Keygate would fail every request of this route closed", path, k, strings.Join(keygateSettings, ", "))
			}
		}
		if err := keygateAccepts(ce); err != nil {
			c.add("%s: Keygate refuses these context_extensions: %v", path, err)
		}
	}
	return out
}

// noKeys is a key store with no keys: settings are judged before any
// lookup.
type noKeys struct{}

func (noKeys) LookupKey(context.Context, apikey.Hash) (*authz.Credential, bool, error) {
	return nil, false, nil
}

// keygateAccepts asks Keygate's own decision core whether it accepts these
// per-route settings: a bad value is an error there (it fails closed).
func keygateAccepts(settings map[string]string) error {
	if len(settings) == 0 {
		return nil
	}
	e, err := authz.New(authz.Config{}, noKeys{})
	if err != nil {
		return err
	}
	_, err = e.Decide(context.Background(), &authz.Request{Method: "GET", Path: "/", Settings: settings})
	return err
}

// matchList tells whether an Envoy ListStringMatcher matches s (header
// names are lower case in Envoy).
func matchList(l *matcherv3.ListStringMatcher, s string) bool {
	for _, m := range l.GetPatterns() {
		if matchString(m, s) {
			return true
		}
	}
	return false
}

func matchString(m *matcherv3.StringMatcher, s string) bool {
	v := s
	fold := func(x string) string {
		if m.GetIgnoreCase() {
			return strings.ToLower(x)
		}
		return x
	}
	v = fold(v)
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return v == fold(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(v, fold(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(v, fold(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(v, fold(p.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		return err == nil && re.MatchString(s)
	}
	return false
}

// wantBootstraps are the bootstraps the walk must find: a walk that finds
// nothing checks nothing.
var wantBootstraps = []string{"envoy/envoy.yaml", "envoy/envoy-http.yaml"}

func bootstraps(t *testing.T) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, f := range exampleYAML(t) {
		for i, d := range f.docs {
			if isBootstrap(d) {
				name := f.path
				if len(f.docs) > 1 {
					name = fmt.Sprintf("%s#%d", f.path, i)
				}
				out[name] = d
			}
		}
	}
	for _, w := range wantBootstraps {
		if _, ok := out[w]; !ok {
			t.Errorf("%s is not an Envoy bootstrap any more (no top-level static_resources)", w)
		}
	}
	return out
}

func TestEnvoyBootstraps(t *testing.T) {
	for name, tree := range bootstraps(t) {
		t.Run(name, func(t *testing.T) {
			for _, p := range checkBootstrap(tree) {
				t.Error(p)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Mutations: each mistake must be reported.

// loadTree decodes one example file afresh, so mutations do not leak.
func loadTree(t *testing.T, path string) any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := readYAML(data)
	if err != nil || len(docs) != 1 {
		t.Fatalf("%s: %v (%d documents)", path, err, len(docs))
	}
	return docs[0]
}

// maps returns every map in tree (depth first) for which pred is true.
func maps(tree any, pred func(map[string]any) bool) []map[string]any {
	var out []map[string]any
	var rec func(any)
	rec = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if pred(x) {
				out = append(out, x)
			}
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				rec(x[k])
			}
		case []any:
			for _, e := range x {
				rec(e)
			}
		}
	}
	rec(tree)
	return out
}

// only returns the single map of tree for which pred is true.
func only(t *testing.T, tree any, what string, pred func(map[string]any) bool) map[string]any {
	t.Helper()
	ms := maps(tree, pred)
	if len(ms) != 1 {
		t.Fatalf("want exactly one %s in the example, found %d: update this case", what, len(ms))
	}
	return ms[0]
}

func typed(name string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["@type"] == "type.googleapis.com/"+name }
}

func named(name string, key string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		_, ok := m[key]
		return m["name"] == name && ok
	}
}

func sub(t *testing.T, m map[string]any, keys ...string) map[string]any {
	t.Helper()
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			t.Fatalf("no map at %q: update this case", k)
		}
		m = next
	}
	return m
}

// dropItem removes the string item from the list m[key].
func dropItem(t *testing.T, m map[string]any, key, item string) {
	t.Helper()
	l, _ := m[key].([]any)
	out := slices.DeleteFunc(slices.Clone(l), func(e any) bool { return e == item })
	if len(out) == len(l) {
		t.Fatalf("no %s in %s: update this case", item, key)
	}
	m[key] = out
}

// dropPattern removes the matcher entries for header h from a list.
func dropPattern(t *testing.T, l map[string]any, h string) {
	t.Helper()
	ps, _ := l["patterns"].([]any)
	out := slices.DeleteFunc(slices.Clone(ps), func(p any) bool { return p.(map[string]any)["exact"] == h })
	if len(out) == len(ps) {
		t.Fatalf("no pattern for %s: update this case", h)
	}
	l["patterns"] = out
}

const (
	extAuthzType  = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
	perRouteType  = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
	routerType    = "envoy.extensions.filters.http.router.v3.Router"
	hcmType       = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	grpcBootstrap = "envoy/envoy.yaml"
	httpBootstrap = "envoy/envoy-http.yaml"
)

func TestBootstrapChecksCatch(t *testing.T) {
	extAuthz := func(t *testing.T, tree any) map[string]any { return only(t, tree, "ExtAuthz", typed(extAuthzType)) }
	hcm := func(t *testing.T, tree any) map[string]any {
		return only(t, tree, "HttpConnectionManager", typed(hcmType))
	}
	route := func(t *testing.T, tree any, name string) map[string]any {
		return only(t, tree, "route "+name, named(name, "match"))
	}
	cluster := func(t *testing.T, tree any, name string) map[string]any {
		return only(t, tree, "cluster "+name, named(name, "load_assignment"))
	}
	contextExtensions := func(t *testing.T, tree any) map[string]any {
		return sub(t, only(t, tree, "context_extensions", func(m map[string]any) bool { _, ok := m["context_extensions"]; return ok }), "context_extensions")
	}
	cases := []struct {
		name, file string
		mutate     func(t *testing.T, tree any)
		want       string
	}{
		{"wrong @type", grpcBootstrap, func(t *testing.T, tree any) {
			only(t, tree, "Router", typed(routerType))["@type"] = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr"
		}, "Routr"},
		{"unknown field", grpcBootstrap, func(t *testing.T, tree any) {
			extAuthz(t, tree)["failure_mode_alow"] = false
		}, "failure_mode_alow"},
		{"unknown field in the bootstrap itself", grpcBootstrap, func(t *testing.T, tree any) {
			tree.(map[string]any)["static_resource"] = map[string]any{}
		}, "static_resource"},
		{"missing stat_prefix", grpcBootstrap, func(t *testing.T, tree any) {
			delete(hcm(t, tree), "stat_prefix")
		}, "StatPrefix"},
		{"route without action", grpcBootstrap, func(t *testing.T, tree any) {
			delete(route(t, tree, "api"), "route")
		}, "Route.Action"},
		{"ext_authz names an undefined cluster", grpcBootstrap, func(t *testing.T, tree any) {
			sub(t, extAuthz(t, tree), "grpc_service", "envoy_grpc")["cluster_name"] = "keygat"
		}, `cluster "keygat" is not defined`},
		{"route names an undefined cluster", grpcBootstrap, func(t *testing.T, tree any) {
			sub(t, route(t, tree, "api"), "route")["cluster"] = "backnd"
		}, `cluster "backnd" is not defined`},
		{"failure_mode_allow true", grpcBootstrap, func(t *testing.T, tree any) {
			extAuthz(t, tree)["failure_mode_allow"] = true
		}, "failure_mode_allow must be false"},
		{"transport_api_version unset", grpcBootstrap, func(t *testing.T, tree any) {
			delete(extAuthz(t, tree), "transport_api_version")
		}, "transport_api_version must be V3"},
		{"deprecated V2 transport", grpcBootstrap, func(t *testing.T, tree any) {
			extAuthz(t, tree)["transport_api_version"] = "V2"
		}, "V2 is deprecated"},
		{"no grpc timeout", grpcBootstrap, func(t *testing.T, tree any) {
			delete(sub(t, extAuthz(t, tree), "grpc_service"), "timeout")
		}, "grpc_service.timeout must be set"},
		{"unknown keygate setting", grpcBootstrap, func(t *testing.T, tree any) {
			contextExtensions(t, tree)["keygate.scope"] = "vault:read"
		}, `"keygate.scope" is not a Keygate setting`},
		{"bad keygate setting value", grpcBootstrap, func(t *testing.T, tree any) {
			contextExtensions(t, tree)["keygate.cost"] = "lots"
		}, "keygate.cost"},
		{"gRPC cluster without HTTP/2", grpcBootstrap, func(t *testing.T, tree any) {
			delete(cluster(t, tree, "keygate"), "typed_extension_protocol_options")
		}, "not configured for HTTP/2"},
		{"protocol options under the wrong key", grpcBootstrap, func(t *testing.T, tree any) {
			o := sub(t, cluster(t, tree, "keygate"), "typed_extension_protocol_options")
			o["envoy.upstreams.http.http_protocol_options"] = o[httpProtocolOptions]
			delete(o, httpProtocolOptions)
		}, "Envoy reads them only under"},
		{"per-filter config for no filter", grpcBootstrap, func(t *testing.T, tree any) {
			p := sub(t, route(t, tree, "health"), "typed_per_filter_config")
			p["envoy.filters.http.extauthz"] = p["envoy.filters.http.ext_authz"]
			delete(p, "envoy.filters.http.ext_authz")
		}, `"envoy.filters.http.extauthz" names no HTTP filter`},
		{"disabled route passes spoofed identity", grpcBootstrap, func(t *testing.T, tree any) {
			delete(route(t, tree, "health"), "request_headers_to_remove")
		}, "must strip x-tenant-id"},
		{"disabled route passes a spoofed signature", grpcBootstrap, func(t *testing.T, tree any) {
			dropItem(t, route(t, tree, "health"), "request_headers_to_remove", "x-keygate-signature")
		}, "must strip x-keygate-signature"},
		{"disabled route passes the key in x-api-key", grpcBootstrap, func(t *testing.T, tree any) {
			dropItem(t, route(t, tree, "health"), "request_headers_to_remove", "x-api-key")
		}, "must strip x-api-key"},
		{"disabled route passes the key in x-api-token", httpBootstrap, func(t *testing.T, tree any) {
			dropItem(t, route(t, tree, "health"), "request_headers_to_remove", "x-api-token")
		}, "must strip x-api-token"},
		{"disabled route passes Authorization", grpcBootstrap, func(t *testing.T, tree any) {
			dropItem(t, route(t, tree, "health"), "request_headers_to_remove", "authorization")
		}, "must strip authorization"},
		{"underscore headers allowed", grpcBootstrap, func(t *testing.T, tree any) {
			delete(hcm(t, tree), "common_http_protocol_options")
		}, "headers_with_underscores_action is ALLOW, want REJECT_REQUEST"},
		{"underscore headers dropped silently", httpBootstrap, func(t *testing.T, tree any) {
			sub(t, hcm(t, tree), "common_http_protocol_options")["headers_with_underscores_action"] = "DROP_HEADER"
		}, "headers_with_underscores_action is DROP_HEADER"},
		{"escaped slashes kept", grpcBootstrap, func(t *testing.T, tree any) {
			delete(hcm(t, tree), "path_with_escaped_slashes_action")
		}, "path_with_escaped_slashes_action is IMPLEMENTATION_SPECIFIC_DEFAULT, want REJECT_REQUEST"},
		{"escaped slashes unescaped", httpBootstrap, func(t *testing.T, tree any) {
			hcm(t, tree)["path_with_escaped_slashes_action"] = "UNESCAPE_AND_FORWARD"
		}, "path_with_escaped_slashes_action is UNESCAPE_AND_FORWARD"},
		{"path not normalised", grpcBootstrap, func(t *testing.T, tree any) {
			delete(hcm(t, tree), "normalize_path")
		}, "set normalize_path and merge_slashes"},
		{"slashes not merged", httpBootstrap, func(t *testing.T, tree any) {
			hcm(t, tree)["merge_slashes"] = false
		}, "set normalize_path and merge_slashes"},
		{"removal of a header Keygate sets", grpcBootstrap, func(t *testing.T, tree any) {
			route(t, tree, "api")["request_headers_to_remove"] = []any{"x-scopes"}
		}, "would remove x-scopes after Keygate set it"},
		{"router not last", grpcBootstrap, func(t *testing.T, tree any) {
			h := hcm(t, tree)
			fs := h["http_filters"].([]any)
			slices.Reverse(fs)
		}, "last HTTP filter must be the router"},
		{"no ext_authz filter", grpcBootstrap, func(t *testing.T, tree any) {
			h := hcm(t, tree)
			h["http_filters"] = slices.DeleteFunc(h["http_filters"].([]any), func(f any) bool {
				return f.(map[string]any)["name"] == "envoy.filters.http.ext_authz"
			})
		}, "no ext_authz filter"},

		{"http_service: wrong path_prefix", httpBootstrap, func(t *testing.T, tree any) {
			sub(t, extAuthz(t, tree), "http_service")["path_prefix"] = envoy.PathNginx
		}, "path_prefix must be /envoy"},
		{"http_service: undefined cluster", httpBootstrap, func(t *testing.T, tree any) {
			sub(t, extAuthz(t, tree), "http_service", "server_uri")["cluster"] = "keygate"
		}, `cluster "keygate" is not defined`},
		{"http_service: server_uri without timeout", httpBootstrap, func(t *testing.T, tree any) {
			delete(sub(t, extAuthz(t, tree), "http_service", "server_uri"), "timeout")
		}, "HttpUri.Timeout"},
		{"http_service: identity header not copied", httpBootstrap, func(t *testing.T, tree any) {
			dropPattern(t, sub(t, extAuthz(t, tree), "http_service", "authorization_response", "allowed_upstream_headers"), "x-scopes")
		}, "allowed_upstream_headers must include x-scopes"},
		{"http_service: identity header appended", httpBootstrap, func(t *testing.T, tree any) {
			sub(t, extAuthz(t, tree), "http_service", "authorization_response")["allowed_upstream_headers_to_append"] =
				map[string]any{"patterns": []any{map[string]any{"prefix": "x-"}}}
		}, "allowed_upstream_headers_to_append"},
		{"http_service: key header not sent", httpBootstrap, func(t *testing.T, tree any) {
			dropPattern(t, sub(t, extAuthz(t, tree), "allowed_headers"), "x-api-key")
		}, "allowed_headers does not include x-api-key"},
		{"http_service: no allowed_headers", httpBootstrap, func(t *testing.T, tree any) {
			delete(extAuthz(t, tree), "allowed_headers")
		}, "allowed_headers must list the key headers"},
		{"http_service: decision id kept from the client", httpBootstrap, func(t *testing.T, tree any) {
			dropPattern(t, sub(t, extAuthz(t, tree), "http_service", "authorization_response", "allowed_client_headers"), authz.DecisionIDHeader)
		}, "allowed_client_headers must include x-keygate-decision-id"},
		{"http_service: deprecated authorization_request.allowed_headers", httpBootstrap, func(t *testing.T, tree any) {
			e := extAuthz(t, tree)
			sub(t, e, "http_service")["authorization_request"] = map[string]any{"allowed_headers": e["allowed_headers"]}
			delete(e, "allowed_headers")
		}, "authorization_request.allowed_headers is deprecated"},
		{"http_service: context_extensions Keygate never sees", httpBootstrap, func(t *testing.T, tree any) {
			route(t, tree, "api")["typed_per_filter_config"] = map[string]any{"envoy.filters.http.ext_authz": map[string]any{
				"@type":          "type.googleapis.com/" + perRouteType,
				"check_settings": map[string]any{"context_extensions": map[string]any{"keygate.scopes": "a"}},
			}}
		}, "context_extensions reach only gRPC"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tree := loadTree(t, c.file)
			if p := checkBootstrap(tree); len(p) != 0 {
				t.Fatalf("%s does not pass unmutated: %q", c.file, p)
			}
			c.mutate(t, tree)
			p := checkBootstrap(tree)
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

// ---------------------------------------------------------------------------
// Keygate config files embedded in the examples

// validateConfig runs `keygate config validate` (the loader serve uses)
// on a config file's content.
func validateConfig(t *testing.T) func(content string) error {
	bin := keygateBinary(t)
	return func(content string) error {
		dir, err := os.MkdirTemp("", "keygate-example-config")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		f := filepath.Join(dir, "keygate.yaml")
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			return err
		}
		out, err := exec.Command(bin, "config", "validate", f).CombinedOutput()
		if err != nil {
			return fmt.Errorf("keygate config validate: %v: %s", err, bytes.TrimSpace(out))
		}
		return nil
	}
}

func TestKeygateConfigExample(t *testing.T) {
	data, err := os.ReadFile("keygate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := validateConfig(t)(string(data)); err != nil {
		t.Error(err)
	}
}

// ---------------------------------------------------------------------------
// Shared by the compose and Kubernetes checks

// listenAddr splits a listen address and tells whether it is reachable
// from outside the container (every interface).
func listenAddr(v string) (port string, public bool, err error) {
	host, port, err := splitHostPort(v)
	if err != nil {
		return "", false, err
	}
	return port, host == "" || host == "0.0.0.0" || host == "::" || host == "[::]", nil
}

func splitHostPort(v string) (host, port string, err error) {
	i := strings.LastIndexByte(v, ':')
	if i < 0 {
		return "", "", fmt.Errorf("address %q has no port", v)
	}
	return strings.Trim(v[:i], "[]"), v[i+1:], nil
}

// asJSON converts a decoded YAML tree into a Go struct (lenient: unknown
// fields are ignored).
func asJSON(tree any, v any) error {
	js, err := json.Marshal(tree)
	if err != nil {
		return err
	}
	return json.Unmarshal(js, v)
}

// strictJSON converts a decoded YAML tree into a Go struct that lists
// every field the schema has, so a misspelt field is an error. Field names
// must match exactly: encoding/json alone would take failopen for failOpen,
// which Istio would not.
func strictJSON(tree any, v any) error {
	if err := exactFields(tree, reflect.TypeOf(v), ""); err != nil {
		return err
	}
	js, err := json.Marshal(tree)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// exactFields checks that every key of the maps in tree is, exactly, the
// json name of a field of the struct type t describes at that place.
func exactFields(tree any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch x := tree.(type) {
	case map[string]any:
		if t.Kind() != reflect.Struct {
			return nil
		}
		for k, v := range x {
			f, ok := fieldByJSONName(t, k)
			if !ok {
				return fmt.Errorf("unknown field %q at %s", k, cmp.Or(path, "top level"))
			}
			if err := exactFields(v, f.Type, path+"."+k); err != nil {
				return err
			}
		}
	case []any:
		if t.Kind() != reflect.Slice {
			return nil
		}
		for i, e := range x {
			if err := exactFields(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func fieldByJSONName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// ---------------------------------------------------------------------------
// docker compose

type composeFile struct {
	Services map[string]composeService `json:"services"`
	Configs  map[string]struct {
		Content string `json:"content"`
		File    string `json:"file"`
	} `json:"configs"`
	Volumes map[string]any `json:"volumes"`
}

type composeService struct {
	Build       any      `json:"build"` // "dir" or {context: dir}
	Image       string   `json:"image"`
	Command     any      `json:"command"`
	Environment any      `json:"environment"` // map or list of NAME=value
	Volumes     []string `json:"volumes"`
	Configs     []struct {
		Source string `json:"source"`
		Target string `json:"target"`
	} `json:"configs"`
}

func (s composeService) env() map[string]string {
	out := map[string]string{}
	switch e := s.Environment.(type) {
	case map[string]any:
		for k, v := range e {
			out[k] = fmt.Sprint(v)
		}
	case []any:
		for _, kv := range e {
			k, v, _ := strings.Cut(fmt.Sprint(kv), "=")
			out[k] = v
		}
	}
	return out
}

const composePath = "envoy/docker-compose.yaml"

// checkCompose checks that the compose file runs what the other examples
// describe: the bootstraps it mounts are the checked ones, their clusters
// name its services and Keygate's listeners, and its Keygate config loads.
func checkCompose(tree any, boots map[string]any, validate func(string) error) []string {
	var p problems
	var cf composeFile
	if err := asJSON(tree, &cf); err != nil {
		return []string{err.Error()}
	}
	base := filepath.Dir(composePath)
	kg, ok := cf.Services["keygate"]
	if !ok {
		return []string{"no keygate service"}
	}
	ctx, _ := kg.Build.(string)
	if m, ok := kg.Build.(map[string]any); ok {
		ctx, _ = m["context"].(string)
	}
	if _, err := os.Stat(filepath.Join(base, ctx, "Dockerfile")); ctx == "" || err != nil {
		p.add("keygate: build context %q (from %s) holds no Dockerfile", ctx, base)
	}
	env := kg.env()
	ports := map[string]string{} // listener → port, when reachable from other containers
	for _, l := range []string{"KEYGATE_GRPC_LISTEN", "KEYGATE_HTTP_LISTEN"} {
		port, public, err := listenAddr(env[l])
		switch {
		case err != nil:
			p.add("keygate: %s: %v", l, err)
		case !public:
			p.add("keygate: %s=%s is not reachable from the Envoy container: listen on 0.0.0.0", l, env[l])
		default:
			ports[l] = port
		}
	}
	if store := env["KEYGATE_STORE"]; !slices.ContainsFunc(kg.Volumes, func(v string) bool {
		parts := strings.Split(v, ":")
		return len(parts) >= 2 && parts[1] == filepath.Dir(store)
	}) {
		p.add("keygate: KEYGATE_STORE=%q is not on a volume: keys would be lost with the container", store)
	}
	if cfgPath := env["KEYGATE_CONFIG"]; cfgPath != "" {
		found := false
		for _, c := range kg.Configs {
			if c.Target != cfgPath {
				continue
			}
			found = true
			src, ok := cf.Configs[c.Source]
			switch {
			case !ok:
				p.add("keygate: config %q is not defined under configs", c.Source)
			case src.Content == "":
				p.add("keygate: config %q has no inline content to check", c.Source)
			default:
				if err := validate(src.Content); err != nil {
					p.add("keygate: config %q: %v", c.Source, err)
				}
			}
		}
		if !found {
			p.add("keygate: KEYGATE_CONFIG=%s is not the target of any of its configs", cfgPath)
		}
	}

	mounted := 0
	for _, name := range slices.Sorted(mapKeys(cf.Services)) {
		svc := cf.Services[name]
		for _, v := range svc.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 || !strings.HasPrefix(parts[0], ".") {
				continue
			}
			host := filepath.ToSlash(filepath.Join(base, parts[0]))
			if _, err := os.Stat(host); err != nil {
				p.add("%s: mounts %s, which does not exist", name, parts[0])
				continue
			}
			tree, ok := boots[host]
			if !ok {
				continue
			}
			mounted++
			// The envoy image runs envoy -c /etc/envoy/envoy.yaml.
			if svc.Command == nil && parts[1] != "/etc/envoy/envoy.yaml" {
				p.add("%s: %s is mounted at %s, but the image reads /etc/envoy/envoy.yaml", name, parts[0], parts[1])
			}
			bs, err := parseBootstrap(tree)
			if err != nil {
				p.add("%s: %v", host, err)
				continue
			}
			p = append(p, composeClusters(name, host, bs, cf, ports)...)
		}
	}
	for _, w := range wantBootstraps {
		found := false
		for _, svc := range cf.Services {
			for _, v := range svc.Volumes {
				if parts := strings.Split(v, ":"); len(parts) >= 2 && filepath.ToSlash(filepath.Join(base, parts[0])) == w {
					found = true
				}
			}
		}
		if !found {
			p.add("no service runs Envoy with %s", w)
		}
	}
	if mounted == 0 {
		p.add("no service mounts an Envoy bootstrap")
	}
	sort.Strings(p)
	return p
}

// extAuthzFilters yields every ext_authz filter of the bootstrap's
// HTTP connection managers.
func extAuthzFilters(bs *bootstrapv3.Bootstrap) iter.Seq[*extauthzv3.ExtAuthz] {
	return func(yield func(*extauthzv3.ExtAuthz) bool) {
		for _, l := range bs.GetStaticResources().GetListeners() {
			for _, fc := range l.GetFilterChains() {
				for _, f := range fc.GetFilters() {
					var h hcmv3.HttpConnectionManager
					if f.GetTypedConfig().UnmarshalTo(&h) != nil {
						continue
					}
					for _, hf := range h.GetHttpFilters() {
						var e extauthzv3.ExtAuthz
						if hf.GetTypedConfig().UnmarshalTo(&e) == nil && !yield(&e) {
							return
						}
					}
				}
			}
		}
	}
}

// composeClusters checks that a bootstrap's endpoints are compose
// services, and that those pointing at Keygate use the port of the
// listener the filter speaks to (gRPC or HTTP).
func composeClusters(svc, file string, bs *bootstrapv3.Bootstrap, cf composeFile, ports map[string]string) []string {
	var p problems
	want := map[string]string{} // cluster → listener env
	for e := range extAuthzFilters(bs) {
		if c := e.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != "" {
			want[c] = "KEYGATE_GRPC_LISTEN"
		}
		if c := e.GetHttpService().GetServerUri().GetCluster(); c != "" {
			want[c] = "KEYGATE_HTTP_LISTEN"
		}
	}
	for _, cl := range bs.GetStaticResources().GetClusters() {
		for _, ep := range cl.GetLoadAssignment().GetEndpoints() {
			for _, lb := range ep.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				host, port := sa.GetAddress(), fmt.Sprint(sa.GetPortValue())
				if _, ok := cf.Services[host]; !ok {
					p.add("%s (run by %s): cluster %q sends to %q, which is not a service of the compose file", file, svc, cl.GetName(), host)
				}
				if l, ok := want[cl.GetName()]; ok && ports[l] != port {
					p.add("%s (run by %s): cluster %q sends to port %s, but keygate's %s is on port %q", file, svc, cl.GetName(), port, l, ports[l])
				}
			}
		}
	}
	return p
}

func TestCompose(t *testing.T) {
	boots := bootstraps(t)
	validate := validateConfig(t)
	for _, p := range checkCompose(loadTree(t, composePath), boots, validate) {
		t.Error(p)
	}
}

func TestComposeChecksCatch(t *testing.T) {
	boots := bootstraps(t)
	validate := validateConfig(t)
	svc := func(t *testing.T, tree any, name string) map[string]any {
		return sub(t, tree.(map[string]any), "services", name)
	}
	cases := []struct {
		name   string
		mutate func(t *testing.T, tree any)
		want   string
	}{
		{"gRPC port disagrees with envoy.yaml", func(t *testing.T, tree any) {
			sub(t, svc(t, tree, "keygate"), "environment")["KEYGATE_GRPC_LISTEN"] = "0.0.0.0:9005"
		}, `cluster "keygate" sends to port 9001`},
		{"HTTP listener on loopback", func(t *testing.T, tree any) {
			sub(t, svc(t, tree, "keygate"), "environment")["KEYGATE_HTTP_LISTEN"] = "127.0.0.1:9002"
		}, "not reachable from the Envoy container"},
		{"backend renamed", func(t *testing.T, tree any) {
			s := sub(t, tree.(map[string]any), "services")
			s["echo"] = s["backend"]
			delete(s, "backend")
		}, `"backend", which is not a service`},
		{"store not on a volume", func(t *testing.T, tree any) {
			delete(svc(t, tree, "keygate"), "volumes")
		}, "not on a volume"},
		{"invalid Keygate config", func(t *testing.T, tree any) {
			c := sub(t, tree.(map[string]any), "configs", "keygate-config")
			c["content"] = c["content"].(string) + "routez: []\n"
		}, "routez"},
		{"bootstrap not mounted", func(t *testing.T, tree any) {
			delete(sub(t, tree.(map[string]any), "services"), "envoy-http")
		}, "no service runs Envoy with envoy/envoy-http.yaml"},
		{"missing file mounted", func(t *testing.T, tree any) {
			svc(t, tree, "envoy")["volumes"] = []any{"./envoy-grpc.yaml:/etc/envoy/envoy.yaml:ro"}
		}, "does not exist"},
		{"wrong build context", func(t *testing.T, tree any) {
			svc(t, tree, "keygate")["build"] = ".."
		}, "holds no Dockerfile"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tree := loadTree(t, composePath)
			c.mutate(t, tree)
			p := checkCompose(tree, boots, validate)
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

// ---------------------------------------------------------------------------
// Istio and Kubernetes

const istioDir = "istio"

type meta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   meta   `json:"metadata"`
}

// grpcProvider is Istio's MeshConfig.ExtensionProvider
// .EnvoyExternalAuthorizationGrpcProvider with all of its fields, decoded
// strictly: a misspelt field (failopen) is silently ignored by Istio's
// YAML loaders and would leave the default in place.
type grpcProvider struct {
	Service                   string         `json:"service"`
	Port                      int            `json:"port"`
	Timeout                   string         `json:"timeout"`
	FailOpen                  bool           `json:"failOpen"`
	StatusOnError             string         `json:"statusOnError"`
	IncludeRequestBodyInCheck map[string]any `json:"includeRequestBodyInCheck"`
}

// authorizationPolicySpec is security.istio.io/v1 AuthorizationPolicy's
// spec, all fields, decoded strictly.
type authorizationPolicySpec struct {
	Selector *struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	TargetRef  any              `json:"targetRef"`
	TargetRefs []any            `json:"targetRefs"`
	Rules      []map[string]any `json:"rules"`
	Action     string           `json:"action"`
	Provider   *struct {
		Name string `json:"name"`
	} `json:"provider"`
}

type deployment struct {
	object
	Spec struct {
		Replicas *int `json:"replicas"`
		Strategy struct {
			Type string `json:"type"`
		} `json:"strategy"`
		Template struct {
			Metadata meta `json:"metadata"`
			Spec     struct {
				Containers []container `json:"containers"`
				Volumes    []volume    `json:"volumes"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

type keyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

type container struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	Env   []struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom *struct {
			SecretKeyRef    *keyRef `json:"secretKeyRef"`
			ConfigMapKeyRef *keyRef `json:"configMapKeyRef"`
		} `json:"valueFrom"`
	} `json:"env"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
		SubPath   string `json:"subPath"`
		ReadOnly  bool   `json:"readOnly"`
	} `json:"volumeMounts"`
	ReadinessProbe *probe `json:"readinessProbe"`
	LivenessProbe  *probe `json:"livenessProbe"`
}

func (c container) env(name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

type probe struct {
	GRPC *struct {
		Port    int     `json:"port"`
		Service *string `json:"service"`
	} `json:"grpc"`
}

type keyPath struct {
	Key  string `json:"key"`
	Path string `json:"path"`
}

type volume struct {
	Name      string `json:"name"`
	ConfigMap *struct {
		Name  string    `json:"name"`
		Items []keyPath `json:"items"`
	} `json:"configMap"`
	Secret *struct {
		SecretName string    `json:"secretName"`
		Items      []keyPath `json:"items"`
	} `json:"secret"`
	PersistentVolumeClaim *struct {
		ClaimName string `json:"claimName"`
	} `json:"persistentVolumeClaim"`
	EmptyDir map[string]any `json:"emptyDir"`
}

type service struct {
	object
	Spec struct {
		Selector map[string]string `json:"selector"`
		Ports    []servicePort     `json:"ports"`
	} `json:"spec"`
}

type servicePort struct {
	Name        string `json:"name"`
	AppProtocol string `json:"appProtocol"`
	Port        int    `json:"port"`
	TargetPort  any    `json:"targetPort"` // number or port name
}

// grpcDeclared: Istio picks a port's protocol from appProtocol, or from
// a name of grpc or grpc-<suffix>.
func (sp servicePort) grpcDeclared() bool {
	return sp.AppProtocol == "grpc" || sp.Name == "grpc" || strings.HasPrefix(sp.Name, "grpc-")
}

type keyed struct {
	object
	Data       map[string]string `json:"data"`
	StringData map[string]string `json:"stringData"`
}

func (k keyed) has(key string) bool {
	_, a := k.Data[key]
	_, b := k.StringData[key]
	return a || b
}

func (k keyed) get(key string) string {
	if v, ok := k.StringData[key]; ok {
		return v
	}
	return k.Data[key]
}

// meshDoc is one document of examples/istio.
type meshDoc struct {
	file string
	tree any
	obj  object
}

func namespaceOf(o object) string {
	if o.Metadata.Namespace == "" {
		return "default"
	}
	return o.Metadata.Namespace
}

// selects tells whether a label selector picks pods with these labels.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// meshChecker cross-checks the Istio and Kubernetes manifests.
type meshChecker struct {
	problems
	validate func(string) error
	keyed    map[string]keyed // kind/namespace/name of ConfigMaps and Secrets
	pvcs     map[string]bool  // namespace/name
	services []service
	deploys  []deployment
}

func checkMesh(docs []meshDoc, validate func(string) error) []string {
	c := &meshChecker{validate: validate, keyed: map[string]keyed{}, pvcs: map[string]bool{}}
	namespaces := map[string]bool{}
	var providers map[string]grpcProvider
	var policies, filters []meshDoc
	for _, d := range docs {
		ns := namespaceOf(d.obj)
		switch d.obj.Kind {
		case "Namespace":
			namespaces[d.obj.Metadata.Name] = true
		case "ConfigMap", "Secret":
			var k keyed
			if err := asJSON(d.tree, &k); err != nil {
				c.add("%s: %v", d.file, err)
			}
			c.keyed[d.obj.Kind+"/"+ns+"/"+d.obj.Metadata.Name] = k
		case "PersistentVolumeClaim":
			c.pvcs[ns+"/"+d.obj.Metadata.Name] = true
		case "Service":
			var s service
			if err := asJSON(d.tree, &s); err != nil {
				c.add("%s: %v", d.file, err)
			}
			c.services = append(c.services, s)
		case "Deployment":
			var dep deployment
			if err := asJSON(d.tree, &dep); err != nil {
				c.add("%s: %v", d.file, err)
			}
			c.deploys = append(c.deploys, dep)
		case "IstioOperator":
			providers = c.extensionProviders(d)
		case "AuthorizationPolicy":
			policies = append(policies, d)
		case "EnvoyFilter":
			filters = append(filters, d)
		}
	}
	if len(providers) == 0 {
		c.add("no IstioOperator with an envoyExtAuthzGrpc extension provider")
	}
	if len(c.deploys) == 0 {
		c.add("no Deployment of Keygate")
	}
	for _, dep := range c.deploys {
		if !namespaces[namespaceOf(dep.object)] {
			c.add("Deployment %s: its namespace %s is not created by these manifests", dep.Metadata.Name, namespaceOf(dep.object))
		}
		c.deployment(dep)
	}
	for _, name := range slices.Sorted(mapKeys(providers)) {
		c.provider(name, providers[name])
	}
	hardening := c.envoyFilters(filters)
	custom := 0
	for _, d := range policies {
		if c.policy(d, providers) {
			custom++
			c.hardenedBy(d, hardening)
		}
	}
	if custom == 0 {
		c.add("no AuthorizationPolicy with action CUSTOM sends requests to Keygate")
	}
	sort.Strings(c.problems)
	return c.problems
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (c *meshChecker) extensionProviders(d meshDoc) map[string]grpcProvider {
	var op struct {
		Spec struct {
			MeshConfig struct {
				ExtensionProviders []map[string]any `json:"extensionProviders"`
			} `json:"meshConfig"`
		} `json:"spec"`
	}
	if err := asJSON(d.tree, &op); err != nil {
		c.add("%s: %v", d.file, err)
		return nil
	}
	out := map[string]grpcProvider{}
	for _, ep := range op.Spec.MeshConfig.ExtensionProviders {
		name, _ := ep["name"].(string)
		raw, ok := ep["envoyExtAuthzGrpc"]
		if !ok {
			continue
		}
		var g grpcProvider
		if err := strictJSON(raw, &g); err != nil {
			c.add("%s: extension provider %q: envoyExtAuthzGrpc: %v", d.file, name, err)
		}
		if _, dup := out[name]; dup {
			c.add("%s: extension provider %q is defined twice", d.file, name)
		}
		out[name] = g
	}
	return out
}

// provider checks that an extension provider reaches Keygate's gRPC
// listener through the Service, and fails closed.
func (c *meshChecker) provider(name string, g grpcProvider) {
	where := fmt.Sprintf("extension provider %q", name)
	if g.FailOpen {
		c.add("%s: failOpen must be false: an unreachable Keygate would let every request through", where)
	}
	if g.Timeout == "" {
		c.add("%s: set a timeout: Istio's default is 600s", where)
	} else if err := protojson.Unmarshal([]byte(`"`+g.Timeout+`"`), &durationpb.Duration{}); err != nil {
		c.add("%s: timeout %q is not a protobuf duration such as 0.5s: %v", where, g.Timeout, err)
	}
	host := g.Service
	if _, h, ok := strings.Cut(host, "/"); ok {
		host = h
	}
	var svc *service
	for i, s := range c.services {
		if host == s.Metadata.Name+"."+namespaceOf(s.object)+".svc.cluster.local" {
			svc = &c.services[i]
		}
	}
	if svc == nil {
		c.add("%s: service %q is no <Service>.<namespace>.svc.cluster.local of these manifests", where, g.Service)
		return
	}
	var sp *servicePort
	for i, p := range svc.Spec.Ports {
		if p.Port == g.Port {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		c.add("%s: Service %s has no port %d", where, svc.Metadata.Name, g.Port)
		return
	}
	if !sp.grpcDeclared() {
		c.add("%s: Service %s port %d (%q) is not declared gRPC (name: grpc or appProtocol: grpc): Istio would not speak HTTP/2 to it", where, svc.Metadata.Name, sp.Port, sp.Name)
	}
	dep, ct, port := c.target(*svc, *sp)
	if ct == nil {
		return
	}
	v, ok := ct.env("KEYGATE_GRPC_LISTEN")
	lport, public, err := listenAddr(v)
	switch {
	case !ok:
		c.add("Deployment %s: set KEYGATE_GRPC_LISTEN (the provider's port %d reaches container port %d)", dep.Metadata.Name, g.Port, port)
	case err != nil:
		c.add("Deployment %s: KEYGATE_GRPC_LISTEN: %v", dep.Metadata.Name, err)
	case !public:
		c.add("Deployment %s: KEYGATE_GRPC_LISTEN=%s is loopback: the sidecar and the kubelet reach the pod on its IP", dep.Metadata.Name, v)
	case lport != fmt.Sprint(port):
		c.add("Deployment %s: KEYGATE_GRPC_LISTEN=%s, but the Service's gRPC port goes to container port %d", dep.Metadata.Name, v, port)
	}
	for _, pr := range []struct {
		name string
		p    *probe
	}{{"readinessProbe", ct.ReadinessProbe}, {"livenessProbe", ct.LivenessProbe}} {
		switch {
		case pr.p == nil || pr.p.GRPC == nil:
			c.add("Deployment %s: container %s needs a grpc %s (grpc.health.v1 on the ext_authz port)", dep.Metadata.Name, ct.Name, pr.name)
		case pr.p.GRPC.Port != port:
			c.add("Deployment %s: %s probes port %d, not the gRPC port %d", dep.Metadata.Name, pr.name, pr.p.GRPC.Port, port)
		case pr.p.GRPC.Service != nil && *pr.p.GRPC.Service != "":
			c.add("Deployment %s: %s asks for service %q; Keygate's overall health is service \"\"", dep.Metadata.Name, pr.name, *pr.p.GRPC.Service)
		}
	}
}

// metricsScrape: Prometheus scrapes Keygate's metrics listener through
// the pod's prometheus.io annotations (which Istio's metrics merging hands
// to the sidecar's agent), so the listener must be on the pod's IP, a
// container port named metrics, and the port the annotations name.
func (c *meshChecker) metricsScrape(dep deployment, ct container) {
	name := dep.Metadata.Name
	addr, ok := ct.env("KEYGATE_METRICS_LISTEN")
	if !ok {
		c.add("Deployment %s: set KEYGATE_METRICS_LISTEN: the default is loopback, out of the scrape's reach", name)
		return
	}
	port, public, err := listenAddr(addr)
	if err != nil || !public {
		c.add("Deployment %s: KEYGATE_METRICS_LISTEN=%s is not reachable on the pod's IP (%v)", name, addr, err)
		return
	}
	if !slices.ContainsFunc(ct.Ports, func(p struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	}) bool {
		return p.Name == "metrics" && fmt.Sprint(p.ContainerPort) == port
	}) {
		c.add("Deployment %s: KEYGATE_METRICS_LISTEN=%s, but no container port named metrics is %s", name, addr, port)
	}
	a := dep.Spec.Template.Metadata.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != port {
		c.add("Deployment %s: the pods' annotations prometheus.io/scrape %q and prometheus.io/port %q do not point Prometheus at the metrics listener (port %s)", name, a["prometheus.io/scrape"], a["prometheus.io/port"], port)
	}
}

// target finds the Deployment, container and container port a Service
// port leads to.
func (c *meshChecker) target(svc service, sp servicePort) (*deployment, *container, int) {
	for i, dep := range c.deploys {
		if namespaceOf(dep.object) != namespaceOf(svc.object) || len(svc.Spec.Selector) == 0 || !selects(svc.Spec.Selector, dep.Spec.Template.Metadata.Labels) {
			continue
		}
		for j, ct := range dep.Spec.Template.Spec.Containers {
			for _, cp := range ct.Ports {
				switch tp := sp.TargetPort.(type) {
				case nil:
					if cp.ContainerPort == sp.Port {
						return &c.deploys[i], &c.deploys[i].Spec.Template.Spec.Containers[j], cp.ContainerPort
					}
				case float64:
					if cp.ContainerPort == int(tp) {
						return &c.deploys[i], &c.deploys[i].Spec.Template.Spec.Containers[j], cp.ContainerPort
					}
				case string:
					if cp.Name == tp {
						return &c.deploys[i], &c.deploys[i].Spec.Template.Spec.Containers[j], cp.ContainerPort
					}
				}
			}
		}
		c.add("Service %s port %d: targetPort %v is no container port of Deployment %s", svc.Metadata.Name, sp.Port, sp.TargetPort, dep.Metadata.Name)
		return nil, nil, 0
	}
	c.add("Service %s selects no Deployment of these manifests (selector %v)", svc.Metadata.Name, svc.Spec.Selector)
	return nil, nil, 0
}

// deployment checks one Keygate Deployment on its own.
func (c *meshChecker) deployment(dep deployment) {
	name, ns := dep.Metadata.Name, namespaceOf(dep.object)
	// bbolt locks its file: a second process cannot open the store, and a
	// rolling update's new pod would wait forever for the old one's lock.
	if r := dep.Spec.Replicas; r != nil && *r != 1 {
		c.add("Deployment %s: replicas %d: bbolt is one process per store, replicas must be 1", name, *r)
	}
	if dep.Spec.Strategy.Type != "Recreate" {
		c.add("Deployment %s: strategy %q: use Recreate, or the new pod cannot open the store the old one holds", name, dep.Spec.Strategy.Type)
	}
	volumes := map[string]volume{}
	for _, v := range dep.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
		switch {
		case v.ConfigMap != nil:
			k, ok := c.keyed["ConfigMap/"+ns+"/"+v.ConfigMap.Name]
			if !ok {
				c.add("Deployment %s: volume %s: ConfigMap %q is not in these manifests", name, v.Name, v.ConfigMap.Name)
			}
			for _, it := range v.ConfigMap.Items {
				if ok && !k.has(it.Key) {
					c.add("Deployment %s: volume %s: ConfigMap %s has no key %q", name, v.Name, v.ConfigMap.Name, it.Key)
				}
			}
		case v.Secret != nil:
			k, ok := c.keyed["Secret/"+ns+"/"+v.Secret.SecretName]
			if !ok {
				c.add("Deployment %s: volume %s: Secret %q is not in these manifests", name, v.Name, v.Secret.SecretName)
			}
			for _, it := range v.Secret.Items {
				if ok && !k.has(it.Key) {
					c.add("Deployment %s: volume %s: Secret %s has no key %q", name, v.Name, v.Secret.SecretName, it.Key)
				}
			}
		case v.PersistentVolumeClaim != nil:
			if !c.pvcs[ns+"/"+v.PersistentVolumeClaim.ClaimName] {
				c.add("Deployment %s: volume %s: PersistentVolumeClaim %q is not in these manifests", name, v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	for _, ct := range dep.Spec.Template.Spec.Containers {
		if ct.Image == "" {
			c.add("Deployment %s: container %s has no image", name, ct.Name)
		}
		for _, e := range ct.Env {
			if e.ValueFrom == nil {
				continue
			}
			for kind, ref := range map[string]*keyRef{"Secret": e.ValueFrom.SecretKeyRef, "ConfigMap": e.ValueFrom.ConfigMapKeyRef} {
				if ref == nil {
					continue
				}
				if k, ok := c.keyed[kind+"/"+ns+"/"+ref.Name]; !ok || !k.has(ref.Key) {
					c.add("Deployment %s: env %s: %s %s has no key %q in these manifests", name, e.Name, kind, ref.Name, ref.Key)
				}
			}
		}
		// The files Keygate is told to read must be where a volume puts
		// them: KEYGATE_CONFIG in a ConfigMap (whose content must load),
		// the admin token in a Secret.
		if p, ok := ct.env("KEYGATE_CONFIG"); !ok {
			c.add("Deployment %s: set KEYGATE_CONFIG to the config file the ConfigMap provides", name)
		} else if kind, content, err := c.mountedKey(ct, volumes, ns, p); err != nil {
			c.add("Deployment %s: KEYGATE_CONFIG=%s: %v", name, p, err)
		} else if kind != "ConfigMap" {
			c.add("Deployment %s: KEYGATE_CONFIG=%s comes from a %s, want a ConfigMap", name, p, kind)
		} else if err := c.validate(content); err != nil {
			c.add("Deployment %s: the config file at %s is not valid: %v", name, p, err)
		}
		if p, ok := ct.env("KEYGATE_ADMIN_TOKEN_FILE"); ok {
			if kind, _, err := c.mountedKey(ct, volumes, ns, p); err != nil {
				c.add("Deployment %s: KEYGATE_ADMIN_TOKEN_FILE=%s: %v", name, p, err)
			} else if kind != "Secret" {
				c.add("Deployment %s: KEYGATE_ADMIN_TOKEN_FILE=%s comes from a %s, want a Secret", name, p, kind)
			}
		}
		if admin, ok := ct.env("KEYGATE_ADMIN_LISTEN"); ok {
			_, tokenFile := ct.env("KEYGATE_ADMIN_TOKEN_FILE")
			_, token := ct.env("KEYGATE_ADMIN_TOKEN")
			if _, public, err := listenAddr(admin); err == nil && public && !tokenFile && !token {
				c.add("Deployment %s: KEYGATE_ADMIN_LISTEN=%s without a token: Keygate refuses to start", name, admin)
			}
		}
		c.metricsScrape(dep, ct)
		store, ok := ct.env("KEYGATE_STORE")
		if !ok {
			c.add("Deployment %s: set KEYGATE_STORE to a file on the data volume", name)
			continue
		}
		onVolume := false
		for _, m := range ct.VolumeMounts {
			v := volumes[m.Name]
			if !m.ReadOnly && m.SubPath == "" && (v.PersistentVolumeClaim != nil || v.EmptyDir != nil) && filepath.Dir(store) == filepath.Clean(m.MountPath) {
				onVolume = true
			}
		}
		if !onVolume {
			c.add("Deployment %s: KEYGATE_STORE=%s is not on a writable PersistentVolumeClaim or emptyDir mount", name, store)
		}
	}
}

// mountedKey finds which ConfigMap or Secret key a container sees at file
// p, and its content.
func (c *meshChecker) mountedKey(ct container, volumes map[string]volume, ns, p string) (kind, content string, err error) {
	for _, m := range ct.VolumeMounts {
		dir := filepath.Clean(m.MountPath)
		if filepath.Dir(p) != dir {
			continue
		}
		if m.SubPath != "" {
			// A subPath mount never sees updates: no config reload, no
			// token rotation.
			return "", "", fmt.Errorf("volume %s is mounted with subPath, which Kubernetes never updates", m.Name)
		}
		v := volumes[m.Name]
		file := filepath.Base(p)
		var (
			ref   string
			items []keyPath
		)
		switch {
		case v.ConfigMap != nil:
			kind, ref, items = "ConfigMap", v.ConfigMap.Name, v.ConfigMap.Items
		case v.Secret != nil:
			kind, ref, items = "Secret", v.Secret.SecretName, v.Secret.Items
		default:
			return "", "", fmt.Errorf("volume %s is neither a ConfigMap nor a Secret", m.Name)
		}
		key := file
		for _, it := range items {
			if it.Path == file {
				key = it.Key
			}
		}
		k, ok := c.keyed[kind+"/"+ns+"/"+ref]
		if !ok || !k.has(key) {
			return "", "", fmt.Errorf("%s %s has no key %q", kind, ref, key)
		}
		return kind, k.get(key), nil
	}
	return "", "", fmt.Errorf("no volume is mounted at %s", filepath.Dir(p))
}

// policy checks an AuthorizationPolicy; it reports whether it is a CUSTOM
// one sending requests to Keygate.
func (c *meshChecker) policy(d meshDoc, providers map[string]grpcProvider) bool {
	var spec authorizationPolicySpec
	raw, _ := d.tree.(map[string]any)["spec"]
	if err := strictJSON(raw, &spec); err != nil {
		c.add("%s: AuthorizationPolicy %s: %v", d.file, d.obj.Metadata.Name, err)
		return false
	}
	where := fmt.Sprintf("AuthorizationPolicy %s", d.obj.Metadata.Name)
	if spec.Action != "CUSTOM" {
		return false
	}
	if spec.Provider == nil {
		c.add("%s: action CUSTOM needs a provider", where)
		return false
	}
	if _, ok := providers[spec.Provider.Name]; !ok {
		c.add("%s: provider %q is not an extension provider of the mesh config (have %v)", where, spec.Provider.Name, slices.Sorted(mapKeys(providers)))
	}
	if len(spec.Rules) == 0 {
		c.add("%s: no rules: a CUSTOM policy without rules matches no request, and nothing is checked", where)
	}
	// Keygate's own pods must not be sent to Keygate: its sidecar would
	// ask Keygate about every Check.
	ns := namespaceOf(d.obj)
	for _, dep := range c.deploys {
		if ns != namespaceOf(dep.object) && ns != "istio-system" {
			continue
		}
		if spec.TargetRef != nil || len(spec.TargetRefs) > 0 {
			continue
		}
		if spec.Selector == nil || selects(spec.Selector.MatchLabels, dep.Spec.Template.Metadata.Labels) {
			c.add("%s: selects Keygate's own pods (Deployment %s): their Checks would be sent to Keygate", where, dep.Metadata.Name)
		}
	}
	return true
}

// envoyFilterSpec is networking.istio.io/v1alpha3 EnvoyFilter's spec, all
// fields down to the patch's value (an Envoy message, checked as one),
// decoded strictly.
type envoyFilterSpec struct {
	WorkloadSelector *struct {
		Labels map[string]string `json:"labels"`
	} `json:"workloadSelector"`
	TargetRefs    []any `json:"targetRefs"`
	Priority      int   `json:"priority"`
	ConfigPatches []struct {
		ApplyTo string `json:"applyTo"`
		Match   *struct {
			Context  string         `json:"context"`
			Proxy    map[string]any `json:"proxy"`
			Listener *struct {
				Name        string `json:"name"`
				PortNumber  int    `json:"portNumber"`
				FilterChain *struct {
					Name                 string `json:"name"`
					Sni                  string `json:"sni"`
					TransportProtocol    string `json:"transportProtocol"`
					ApplicationProtocols string `json:"applicationProtocols"`
					DestinationPort      int    `json:"destinationPort"`
					Filter               *struct {
						Name      string         `json:"name"`
						SubFilter map[string]any `json:"subFilter"`
					} `json:"filter"`
				} `json:"filterChain"`
				ListenerFilter string `json:"listenerFilter"`
			} `json:"listener"`
			RouteConfiguration map[string]any `json:"routeConfiguration"`
			Cluster            map[string]any `json:"cluster"`
		} `json:"match"`
		Patch *struct {
			Operation   string         `json:"operation"`
			Value       map[string]any `json:"value"`
			FilterClass string         `json:"filterClass"`
		} `json:"patch"`
	} `json:"configPatches"`
}

// hardeningFilter is an EnvoyFilter that makes the inbound connection
// manager of the sidecars it selects refuse underscore header names and
// escaped slashes.
type hardeningFilter struct {
	namespace string
	labels    map[string]string // nil: every workload of the namespace
}

// envoyFilters checks the EnvoyFilters and returns those that harden the
// sidecars Keygate guards (the settings of hcmHardening, merged into the
// SIDECAR_INBOUND http_connection_manager).
func (c *meshChecker) envoyFilters(docs []meshDoc) []hardeningFilter {
	var out []hardeningFilter
	for _, d := range docs {
		where := fmt.Sprintf("%s: EnvoyFilter %s", d.file, d.obj.Metadata.Name)
		var spec envoyFilterSpec
		raw, _ := d.tree.(map[string]any)["spec"]
		if err := strictJSON(raw, &spec); err != nil {
			c.add("%s: %v", where, err)
			continue
		}
		hardens := false
		for i, cp := range spec.ConfigPatches {
			m, p := cp.Match, cp.Patch
			if cp.ApplyTo != "NETWORK_FILTER" || m == nil || m.Listener == nil || m.Listener.FilterChain == nil || m.Listener.FilterChain.Filter == nil ||
				m.Listener.FilterChain.Filter.Name != "envoy.filters.network.http_connection_manager" {
				continue
			}
			at := fmt.Sprintf("%s: configPatches[%d]", where, i)
			if m.Context != "SIDECAR_INBOUND" && m.Context != "ANY" {
				c.add("%s: context %q: the CUSTOM policy runs in the workload's sidecar, on SIDECAR_INBOUND", at, m.Context)
				continue
			}
			if p == nil || p.Operation != "MERGE" {
				c.add("%s: patch the connection manager Istio generates with operation MERGE", at)
				continue
			}
			tc, ok := p.Value["typed_config"]
			if !ok {
				c.add("%s: patch.value has no typed_config", at)
				continue
			}
			js, err := json.Marshal(tc)
			if err != nil {
				c.add("%s: %v", at, err)
				continue
			}
			var a anypb.Any
			if err := protojson.Unmarshal(js, &a); err != nil {
				c.add("%s: typed_config is not a valid Envoy message: %v", at, err)
				continue
			}
			var h hcmv3.HttpConnectionManager
			if err := a.UnmarshalTo(&h); err != nil {
				c.add("%s: typed_config is a %s, not an HttpConnectionManager", at, a.MessageName())
				continue
			}
			problems := hcmHardening(&h)
			for _, pr := range problems {
				c.add("%s: %s", at, pr)
			}
			hardens = hardens || len(problems) == 0
		}
		if !hardens {
			continue
		}
		f := hardeningFilter{namespace: namespaceOf(d.obj)}
		if spec.WorkloadSelector != nil {
			f.labels = spec.WorkloadSelector.Labels
		}
		out = append(out, f)
	}
	return out
}

// hardenedBy reports a CUSTOM policy whose workloads no EnvoyFilter
// hardens: every pod the policy selects must be selected by one, in the
// policy's namespace or the root namespace.
func (c *meshChecker) hardenedBy(d meshDoc, filters []hardeningFilter) {
	var spec authorizationPolicySpec
	if asJSON(d.tree.(map[string]any)["spec"], &spec) != nil || spec.TargetRef != nil || len(spec.TargetRefs) > 0 {
		return
	}
	var want map[string]string
	if spec.Selector != nil {
		want = spec.Selector.MatchLabels
	}
	ns := namespaceOf(d.obj)
	for _, f := range filters {
		if (f.namespace == ns || f.namespace == "istio-system" && f.labels == nil) && selects(f.labels, want) {
			return
		}
	}
	c.add("AuthorizationPolicy %s: no EnvoyFilter makes the sidecars it selects (namespace %s, labels %v) refuse underscore header names and escaped slashes (headers_with_underscores_action and path_with_escaped_slashes_action REJECT_REQUEST on the SIDECAR_INBOUND http_connection_manager)", d.obj.Metadata.Name, ns, want)
}

func meshDocs(t *testing.T) []meshDoc {
	t.Helper()
	var docs []meshDoc
	for _, f := range exampleYAML(t) {
		if !strings.HasPrefix(f.path, istioDir+"/") {
			continue
		}
		for _, tree := range f.docs {
			var o object
			if err := asJSON(tree, &o); err != nil || o.Kind == "" || o.APIVersion == "" {
				t.Errorf("%s: a document without apiVersion and kind: %v", f.path, err)
				continue
			}
			docs = append(docs, meshDoc{file: f.path, tree: tree, obj: o})
		}
	}
	if len(docs) == 0 {
		t.Fatal("no manifests under examples/istio")
	}
	return docs
}

func TestIstioManifests(t *testing.T) {
	for _, p := range checkMesh(meshDocs(t), validateConfig(t)) {
		t.Error(p)
	}
}

// hardeningPatch is the single config patch of the example's EnvoyFilter.
func hardeningPatch(t *testing.T, filter map[string]any) map[string]any {
	t.Helper()
	ps, _ := sub(t, filter, "spec")["configPatches"].([]any)
	if len(ps) != 1 {
		t.Fatalf("%d config patches: update this case", len(ps))
	}
	return ps[0].(map[string]any)
}

// hardeningHCM is the connection manager that patch merges.
func hardeningHCM(t *testing.T, filter map[string]any) map[string]any {
	t.Helper()
	return sub(t, hardeningPatch(t, filter), "patch", "value", "typed_config")
}

func TestIstioChecksCatch(t *testing.T) {
	validate := validateConfig(t)
	find := func(t *testing.T, docs []meshDoc, kind string) map[string]any {
		t.Helper()
		var out map[string]any
		for _, d := range docs {
			if d.obj.Kind == kind {
				if out != nil {
					t.Fatalf("more than one %s: update this case", kind)
				}
				out = d.tree.(map[string]any)
			}
		}
		if out == nil {
			t.Fatalf("no %s: update this case", kind)
		}
		return out
	}
	provider := func(t *testing.T, docs []meshDoc) map[string]any {
		eps := sub(t, find(t, docs, "IstioOperator"), "spec", "meshConfig")["extensionProviders"].([]any)
		return eps[0].(map[string]any)["envoyExtAuthzGrpc"].(map[string]any)
	}
	keygate := func(t *testing.T, docs []meshDoc) map[string]any {
		cs := sub(t, find(t, docs, "Deployment"), "spec", "template", "spec")["containers"].([]any)
		return cs[0].(map[string]any)
	}
	setEnv := func(t *testing.T, docs []meshDoc, name, value string) {
		for _, e := range keygate(t, docs)["env"].([]any) {
			if e := e.(map[string]any); e["name"] == name {
				e["value"] = value
				return
			}
		}
		t.Fatalf("no env %s: update this case", name)
	}
	grpcPort := func(t *testing.T, docs []meshDoc) map[string]any {
		for _, p := range sub(t, find(t, docs, "Service"), "spec")["ports"].([]any) {
			if p := p.(map[string]any); p["name"] == "grpc" {
				return p
			}
		}
		t.Fatal("no port named grpc: update this case")
		return nil
	}
	volume := func(t *testing.T, docs []meshDoc, key string) map[string]any {
		for _, v := range sub(t, find(t, docs, "Deployment"), "spec", "template", "spec")["volumes"].([]any) {
			if m, ok := v.(map[string]any)[key].(map[string]any); ok {
				return m
			}
		}
		t.Fatalf("no %s volume: update this case", key)
		return nil
	}
	cases := []struct {
		name   string
		mutate func(t *testing.T, docs []meshDoc)
		want   string
	}{
		{"provider port not on the Service", func(t *testing.T, docs []meshDoc) {
			provider(t, docs)["port"] = 9010
		}, "has no port 9010"},
		{"provider service in another namespace", func(t *testing.T, docs []meshDoc) {
			provider(t, docs)["service"] = "keygate.default.svc.cluster.local"
		}, "is no <Service>.<namespace>.svc.cluster.local"},
		{"provider fails open", func(t *testing.T, docs []meshDoc) {
			provider(t, docs)["failOpen"] = true
		}, "failOpen must be false"},
		{"provider field misspelt", func(t *testing.T, docs []meshDoc) {
			p := provider(t, docs)
			p["failopen"] = p["failOpen"]
			delete(p, "failOpen")
		}, `unknown field "failopen"`},
		{"policy field in the wrong case", func(t *testing.T, docs []meshDoc) {
			s := sub(t, find(t, docs, "AuthorizationPolicy"), "spec")
			s["Action"] = s["action"]
			delete(s, "action")
		}, `unknown field "Action"`},
		{"provider timeout in Kubernetes style", func(t *testing.T, docs []meshDoc) {
			provider(t, docs)["timeout"] = "500ms"
		}, "not a protobuf duration"},
		{"provider without timeout", func(t *testing.T, docs []meshDoc) {
			delete(provider(t, docs), "timeout")
		}, "set a timeout"},
		{"gRPC port not declared", func(t *testing.T, docs []meshDoc) {
			p := grpcPort(t, docs)
			p["name"] = "tcp-authz"
			delete(p, "appProtocol")
		}, "not declared gRPC"},
		{"targetPort not a container port", func(t *testing.T, docs []meshDoc) {
			grpcPort(t, docs)["targetPort"] = 9009
		}, "targetPort 9009 is no container port"},
		{"Service selects nothing", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "Service"), "spec")["selector"] = map[string]any{"app": "keygat"}
		}, "selects no Deployment"},
		{"listener on another port", func(t *testing.T, docs []meshDoc) {
			setEnv(t, docs, "KEYGATE_GRPC_LISTEN", "0.0.0.0:9005")
		}, "KEYGATE_GRPC_LISTEN=0.0.0.0:9005, but"},
		{"listener on loopback", func(t *testing.T, docs []meshDoc) {
			setEnv(t, docs, "KEYGATE_GRPC_LISTEN", "127.0.0.1:9001")
		}, "is loopback"},
		{"readiness probe on the HTTP port", func(t *testing.T, docs []meshDoc) {
			sub(t, keygate(t, docs), "readinessProbe", "grpc")["port"] = 9002
		}, "readinessProbe probes port 9002"},
		{"no liveness probe", func(t *testing.T, docs []meshDoc) {
			delete(keygate(t, docs), "livenessProbe")
		}, "grpc livenessProbe"},
		{"probe of a named service", func(t *testing.T, docs []meshDoc) {
			sub(t, keygate(t, docs), "livenessProbe", "grpc")["service"] = "keygate"
		}, `asks for service "keygate"`},
		{"policy names another provider", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "AuthorizationPolicy"), "spec", "provider")["name"] = "keygate-authz"
		}, `provider "keygate-authz" is not an extension provider`},
		{"policy without rules", func(t *testing.T, docs []meshDoc) {
			delete(sub(t, find(t, docs, "AuthorizationPolicy"), "spec"), "rules")
		}, "no rules"},
		{"policy not CUSTOM", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "AuthorizationPolicy"), "spec")["action"] = "ALLOW"
		}, "no AuthorizationPolicy with action CUSTOM"},
		{"policy selecting Keygate itself", func(t *testing.T, docs []meshDoc) {
			p := find(t, docs, "AuthorizationPolicy")
			sub(t, p, "metadata")["namespace"] = "keygate"
			sub(t, p, "spec", "selector")["matchLabels"] = map[string]any{"app": "keygate"}
		}, "selects Keygate's own pods"},
		{"policy field misspelt", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "AuthorizationPolicy"), "spec")["provder"] = map[string]any{"name": "keygate"}
		}, `unknown field "provder"`},
		{"ConfigMap missing", func(t *testing.T, docs []meshDoc) {
			volume(t, docs, "configMap")["name"] = "keygate-cfg"
		}, `ConfigMap "keygate-cfg" is not in these manifests`},
		{"Secret missing", func(t *testing.T, docs []meshDoc) {
			volume(t, docs, "secret")["secretName"] = "admin"
		}, `Secret "admin" is not in these manifests`},
		{"PVC missing", func(t *testing.T, docs []meshDoc) {
			volume(t, docs, "persistentVolumeClaim")["claimName"] = "data"
		}, `PersistentVolumeClaim "data"`},
		{"config file not where the ConfigMap is", func(t *testing.T, docs []meshDoc) {
			setEnv(t, docs, "KEYGATE_CONFIG", "/etc/keygate/keygate.yaml")
		}, "KEYGATE_CONFIG=/etc/keygate/keygate.yaml: no volume"},
		{"config file key missing", func(t *testing.T, docs []meshDoc) {
			setEnv(t, docs, "KEYGATE_CONFIG", "/etc/keygate/config/config.yaml")
		}, `has no key "config.yaml"`},
		{"invalid keygate.yaml in the ConfigMap", func(t *testing.T, docs []meshDoc) {
			d := sub(t, find(t, docs, "ConfigMap"), "data")
			d["keygate.yaml"] = d["keygate.yaml"].(string) + "listen:\n  grcp: 0.0.0.0:9001\n"
		}, "grcp"},
		{"token file not from the Secret", func(t *testing.T, docs []meshDoc) {
			setEnv(t, docs, "KEYGATE_ADMIN_TOKEN_FILE", "/etc/keygate/config/keygate.yaml")
		}, "want a Secret"},
		{"store in the read-only root", func(t *testing.T, docs []meshDoc) {
			setEnv(t, docs, "KEYGATE_STORE", "/var/lib/keygate.db")
		}, "KEYGATE_STORE=/var/lib/keygate.db is not on a writable"},
		{"two replicas", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "Deployment"), "spec")["replicas"] = 2
		}, "replicas must be 1"},
		{"rolling update", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "Deployment"), "spec", "strategy")["type"] = "RollingUpdate"
		}, "use Recreate"},
		{"admin API exposed without a token", func(t *testing.T, docs []meshDoc) {
			setEnv(t, docs, "KEYGATE_ADMIN_LISTEN", "0.0.0.0:9003")
			c := keygate(t, docs)
			c["env"] = slices.DeleteFunc(c["env"].([]any), func(e any) bool { return e.(map[string]any)["name"] == "KEYGATE_ADMIN_TOKEN_FILE" })
		}, "Keygate refuses to start"},
		{"metrics on loopback", func(t *testing.T, docs []meshDoc) {
			setEnv(t, docs, "KEYGATE_METRICS_LISTEN", "127.0.0.1:9004")
		}, "KEYGATE_METRICS_LISTEN=127.0.0.1:9004 is not reachable"},
		{"metrics on another port", func(t *testing.T, docs []meshDoc) {
			setEnv(t, docs, "KEYGATE_METRICS_LISTEN", "0.0.0.0:9005")
		}, "no container port named metrics is 9005"},
		{"no scrape annotations", func(t *testing.T, docs []meshDoc) {
			delete(sub(t, find(t, docs, "Deployment"), "spec", "template", "metadata"), "annotations")
		}, "do not point Prometheus at the metrics listener"},
		{"no hardening EnvoyFilter", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "EnvoyFilter"), "metadata")["namespace"] = "other"
		}, "no EnvoyFilter makes the sidecars it selects"},
		{"EnvoyFilter selects other pods", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "EnvoyFilter"), "spec", "workloadSelector")["labels"] = map[string]any{"app": "web"}
		}, "no EnvoyFilter makes the sidecars it selects"},
		{"EnvoyFilter allows underscores", func(t *testing.T, docs []meshDoc) {
			delete(hardeningHCM(t, find(t, docs, "EnvoyFilter")), "common_http_protocol_options")
		}, "headers_with_underscores_action is ALLOW"},
		{"EnvoyFilter keeps escaped slashes", func(t *testing.T, docs []meshDoc) {
			hardeningHCM(t, find(t, docs, "EnvoyFilter"))["path_with_escaped_slashes_action"] = "KEEP_UNCHANGED"
		}, "path_with_escaped_slashes_action is KEEP_UNCHANGED"},
		{"EnvoyFilter field misspelt", func(t *testing.T, docs []meshDoc) {
			h := hardeningHCM(t, find(t, docs, "EnvoyFilter"))
			h["path_with_escaped_slash_action"] = h["path_with_escaped_slashes_action"]
			delete(h, "path_with_escaped_slashes_action")
		}, "path_with_escaped_slash_action"},
		{"EnvoyFilter on outbound", func(t *testing.T, docs []meshDoc) {
			hardeningPatch(t, find(t, docs, "EnvoyFilter"))["match"].(map[string]any)["context"] = "SIDECAR_OUTBOUND"
		}, "on SIDECAR_INBOUND"},
		{"EnvoyFilter replaces the connection manager", func(t *testing.T, docs []meshDoc) {
			sub(t, hardeningPatch(t, find(t, docs, "EnvoyFilter")), "patch")["operation"] = "REPLACE"
		}, "operation MERGE"},
		{"EnvoyFilter spec field misspelt", func(t *testing.T, docs []meshDoc) {
			s := sub(t, find(t, docs, "EnvoyFilter"), "spec")
			s["workloadSelecter"] = s["workloadSelector"]
			delete(s, "workloadSelector")
		}, `unknown field "workloadSelecter"`},
		{"namespace not created", func(t *testing.T, docs []meshDoc) {
			sub(t, find(t, docs, "Namespace"), "metadata")["name"] = "keygate-system"
		}, "is not created by these manifests"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			docs := meshDocs(t)
			if p := checkMesh(docs, validate); len(p) != 0 {
				t.Fatalf("the manifests do not pass unmutated: %q", p)
			}
			c.mutate(t, docs)
			for i := range docs {
				// Kind and names are read from the tree again.
				docs[i].obj = object{}
				if err := asJSON(docs[i].tree, &docs[i].obj); err != nil {
					t.Fatal(err)
				}
			}
			p := checkMesh(docs, validate)
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
