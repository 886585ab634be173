package authz

import (
	"strings"
	"testing"
)

// variantPolicy has a rule of every kind a spelling could slip past: a
// public prefix, a pattern with an org, a case-insensitive pattern, an
// exact path and a host.
var variantPolicy = Policy{Rules: []Rule{
	{Name: "pub", PathPrefix: "/pub/", Public: true},
	{Name: "vault", PathPattern: "/api/{org}/vault/**", OrgParam: "org", Scopes: []string{"vault"}},
	{Name: "admin", PathPattern: "/admin/**", CaseInsensitive: true, Scopes: []string{"admin"}},
	{Name: "exact", Path: "/exact", Scopes: []string{"exact"}},
	{Name: "host", Host: "api.example.com", PathPrefix: "/h/", Scopes: []string{"h"}},
}}

// routed is how a request is decided as far as the path and host go: the
// rule and the org, or refused.
type routed struct {
	rule, org string
	refused   bool
}

// routeOf decides a request, and also returns how each of its readings
// alone would be routed: bare (";params" dropped, as Tomcat reads it) and
// folded (case ignored, as a case-insensitive backend reads it), by index
// bare*2+folded; [0] is the exact reading.
func routeOf(cp *compiledPolicy, host, p string) (decided routed, readings [4]routed) {
	f, ok := normalizePath(p, cp.decodeSlashes)
	if !ok {
		return routed{refused: true}, [4]routed{{refused: true}, {refused: true}, {refused: true}, {refused: true}}
	}
	h := canonicalHost(host)
	for i, r := range [4]struct {
		path string
		fold bool
	}{{f.clean, false}, {f.clean, true}, {f.bare, false}, {f.bare, true}} {
		j, org := cp.match("GET", h, r.path, r.fold)
		readings[i] = routed{rule: "(unmatched)", org: org}
		if j >= 0 {
			readings[i].rule = cp.rules[j].name
		}
	}
	rt, org, _, ok := cp.route("GET", host, f)
	if !ok {
		return routed{refused: true}, readings
	}
	return routed{rule: rt.name, org: org}, readings
}

// mutate rewrites p (and host) into a spelling a backend reads as the same
// resource: an unreserved character percent-encoded, "/." or "/x/.."
// inserted before a slash, a slash doubled, ";params" added to a segment
// (Tomcat, Spring and Jetty drop them), a query added, a letter in the
// other case (to a case-insensitive backend); or the host with a trailing
// dot, in upper case or with a port. params reports ";params"
// were added: that spelling is the same resource only to backends that
// drop them, so only the bare reading is kept.
func mutate(p, host string, op, at byte) (_, _ string, params, caseChanged bool) {
	end := len(p)
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		end = i
	}
	var slashes []int
	for i := 0; i < end; i++ {
		if p[i] == '/' {
			slashes = append(slashes, i)
		}
	}
	switch op % 9 {
	case 0: // percent-encode an unreserved character
		if end == 0 {
			return p, host, false, false
		}
		i := int(at) % end
		if c := p[i]; isUnreserved(c) {
			const hexdigits = "0123456789ABCDEF"
			enc := []byte{'%', hexdigits[c>>4], hexdigits[c&0xf]}
			if at&0x80 != 0 {
				enc = []byte(strings.ToLower(string(enc)))
			}
			return p[:i] + string(enc) + p[i+1:], host, false, false
		}
	case 1, 2, 3, 4:
		if len(slashes) == 0 {
			return p, host, false, false
		}
		i := slashes[int(at)%len(slashes)]
		ins := [...]string{"/.", "/x/..", "/", ";v=1"}[op%9-1]
		if ins == ";v=1" {
			// At the end of the segment that ends at this slash, never
			// onto the root.
			if i == 0 {
				return p, host, false, false
			}
		}
		return p[:i] + ins + p[i:], host, ins == ";v=1", false
	case 5:
		if end == len(p) {
			return p + "?next=/admin/x", host, false, false
		}
	case 6:
		return p, host + ".", false, false
	case 8: // a letter in the other case: the same resource to a case-insensitive backend
		if end == 0 {
			return p, host, false, false
		}
		i := int(at) % end
		switch c := p[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			return p[:i] + string(c^0x20) + p[i+1:], host, false, true
		}
	case 7:
		if at&1 == 0 {
			return p, strings.ToUpper(host), false, false
		}
		return p, host + ":8443", false, false
	}
	return p, host, false, false
}

// FuzzRouteVariants is the property the path and host normalisation keeps:
// no spelling of a request that a backend could read as the same resource
// is decided by another rule, or for another org, than the request itself;
// at most it is refused. (Deciding by the same rule and org means no
// spelling is decided more permissively.)
func FuzzRouteVariants(f *testing.F) {
	cp, err := variantPolicy.compile()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []struct {
		p   string
		ops []byte
	}{
		{"/api/o1/vault/x", []byte{4, 1, 0, 3}},
		{"/pub/a", []byte{4, 1, 2, 0}},
		{"/admin/x", []byte{0, 1, 7, 0}},
		{"/exact", []byte{4, 0, 5, 0}},
		{"/h/x", []byte{6, 0, 7, 1}},
		{"/pub/../admin/x", []byte{1, 1, 3, 2}},
		{"/pub/..;/api/o1/vault/x", []byte{0, 5}},
		{"/pub/a", []byte{8, 1}},
		{"/api/O1/vault/x", []byte{8, 5}},
	} {
		f.Add(s.p, s.ops)
	}
	f.Fuzz(func(t *testing.T, p string, ops []byte) {
		if len(ops) > 16 {
			ops = ops[:16]
		}
		host := []string{"api.example.com", "other.example.com"}[len(p)%2]
		want, readings := routeOf(cp, host, p)
		v, vh, params, folded := p, host, false, false
		for i := 0; i+1 < len(ops); i += 2 {
			var addedParams, changedCase bool
			v, vh, addedParams, changedCase = mutate(v, vh, ops[i], ops[i+1])
			params, folded = params || addedParams, folded || changedCase
		}
		got, _ := routeOf(cp, vh, v)
		if params || folded {
			// Only that reading is the same resource.
			want = readings[b2i(params)*2+b2i(folded)]
		}
		switch {
		case got.refused:
		case want.refused:
			t.Fatalf("%q on %q is refused, but its spelling %q on %q is decided by %+v", p, host, v, vh, got)
		case got.rule != want.rule || !strings.EqualFold(got.org, want.org):
			// An org id in another case is another org to Keygate, which
			// then refuses it: never more permissive.
			t.Fatalf("%q on %q is decided by %+v, but its spelling %q on %q by %+v", p, host, want, v, vh, got)
		}
	})
}
