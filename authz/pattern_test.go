package authz

import (
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	const refused = "(refused)"
	for _, tt := range []struct {
		in          string
		clean, bare string // bare "": same as clean
		decoded     string // with DecodeEscapedSlashes; "": same as clean
	}{
		{in: "/a/b", clean: "/a/b"},
		{in: "/a/b?x=1&key=ak_live_x", clean: "/a/b"},
		{in: "", clean: "/"},
		{in: "a", clean: "/a"},
		{in: "//admin", clean: "/admin"},
		{in: "/public/../admin", clean: "/admin"},
		{in: "/a/./b/", clean: "/a/b/"},
		{in: "/a/b/..", clean: "/a"},
		{in: "/../../etc", clean: "/etc"},
		{in: "/%61dmin", clean: "/admin"},
		{in: "/%2e%2e/admin", clean: "/admin"},
		{in: "/a%zz", clean: "/a%zz"},
		{in: "/A/B", clean: "/A/B"}, // paths are case-sensitive, as in Envoy
		{in: "/a#frag", clean: "/a"},
		{in: "/a%20b", clean: "/a%20b"}, // reserved and other escapes stay as sent
		// Encoded slashes and backslashes: refused, or read as "/".
		{in: "/a%2Fb", clean: refused, decoded: "/a/b"},
		{in: "/a%2fb", clean: refused, decoded: "/a/b"},
		{in: "/.well-known/..%2Fadmin", clean: refused, decoded: "/admin"},
		{in: "/.well-known/..%5Cadmin", clean: refused, decoded: "/admin"},
		{in: `/.well-known/..\admin`, clean: refused, decoded: "/admin"},
		{in: "/a%%32Fb", clean: refused, decoded: "/a/b"},  // %32 decodes to "2", forming %2F
		{in: "/a%252Fb", clean: refused, decoded: refused}, // a double encoding: refused either way
		{in: "/a%255cb", clean: refused, decoded: refused},
		{in: "/a%2525", clean: "/a%2525"},
		// ";" parameters: the bare reading drops them per segment.
		{in: "/api/v2/vault;a/s", clean: "/api/v2/vault;a/s", bare: "/api/v2/vault/s"},
		{in: "/public/..;/admin", clean: "/public/..;/admin", bare: "/admin"},
		{in: "/items;jsessionid=1", clean: "/items;jsessionid=1", bare: "/items"},
		{in: "/a%3Bx/b", clean: "/a%3Bx/b", bare: "/a/b"},
		{in: "/a;x;y/b;z/", clean: "/a;x;y/b;z/", bare: "/a/b/"},
	} {
		for _, decode := range []bool{false, true} {
			want, wantBare := tt.clean, tt.bare
			if decode && tt.decoded != "" {
				want, wantBare = tt.decoded, ""
			}
			if wantBare == "" {
				wantBare = want
			}
			f, ok := normalizePath(tt.in, decode)
			got, gotBare := f.clean, f.bare
			if !ok {
				got, gotBare = refused, refused
			}
			if want == refused {
				wantBare = refused
			}
			if got != want || gotBare != wantBare {
				t.Errorf("normalizePath(%q, decode %v) = %q, %q; want %q, %q", tt.in, decode, got, gotBare, want, wantBare)
			}
		}
	}
	if n := testing.AllocsPerRun(100, func() { normalizePath("/api/v2/orgs/o1/projects?limit=10", false) }); n != 0 {
		t.Errorf("normalizePath of a clean path allocates %v times", n)
	}
}

func TestCanonicalHost(t *testing.T) {
	for in, want := range map[string]string{
		"api.example.com": "api.example.com", "api.example.com.": "api.example.com",
		"api.example.com.:443": "api.example.com", "api.example.com..": "api.example.com",
		"[::1]:80": "::1", "": "",
	} {
		if got := canonicalHost(in); got != want {
			t.Errorf("canonicalHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPattern(t *testing.T) {
	for _, tt := range []struct {
		pattern, path string
		ok            bool
		org           string
	}{
		{"/api/v2/orgs/{org}/projects/*", "/api/v2/orgs/o1/projects/p1", true, "o1"},
		{"/api/v2/orgs/{org}/projects/*", "/api/v2/orgs/o1/projects/p1/", true, "o1"},
		{"/api/v2/orgs/{org}/projects/*", "/api/v2/orgs/o1/projects", false, ""},
		{"/api/v2/orgs/{org}/projects/*", "/api/v2/orgs/o1/projects/p1/tasks", false, ""},
		{"/api/v2/orgs/{org}/**", "/api/v2/orgs/o1", true, "o1"},
		{"/api/v2/orgs/{org}/**", "/api/v2/orgs/o1/a/b/c", true, "o1"},
		{"/api/v2/orgs/{org}/**", "/api/v2/orgs", false, ""},
		{"/api/*/me", "/api/v2/me", true, ""},
		{"/", "/", true, ""},
		{"/", "/a", false, ""},
		{"/a", "/", false, ""},
	} {
		p, err := compilePattern(tt.pattern)
		if err != nil {
			t.Fatalf("compilePattern(%q): %v", tt.pattern, err)
		}
		org, ok := p.match(tt.path, "org", false)
		if ok != tt.ok || org != tt.org {
			t.Errorf("%q.match(%q) = %q, %v; want %q, %v", tt.pattern, tt.path, org, ok, tt.org, tt.ok)
		}
	}
	for _, bad := range []string{"api", "/a/**/b", "/a/{}", "/a/{x}/{x}", "/a/b*", "/a/{x"} {
		if _, err := compilePattern(bad); err == nil {
			t.Errorf("compilePattern(%q) accepted", bad)
		}
	}
}

func TestGrants(t *testing.T) {
	for _, tt := range []struct {
		held []string
		want string
		ok   bool
	}{
		{[]string{"vault:read"}, "vault:read", true},
		{[]string{"vault:read"}, "vault:write", false},
		{[]string{"vault:*"}, "vault:write", true},
		{[]string{"vault:*"}, "chat:write", false},
		{[]string{"*"}, "anything:at:all", true},
		{[]string{"vault"}, "vault:read", false},
		{nil, "a", false},
	} {
		if got := grants(tt.held, tt.want); got != tt.ok {
			t.Errorf("grants(%v, %q) = %v", tt.held, tt.want, got)
		}
	}
}

// FuzzCleanPath: cleaning never panics, always yields an absolute path
// without dot segments or doubled slashes, and is idempotent, so a rule
// sees one spelling of each path.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/a/../b", "//x", "/%2e%2e/", "/a?b", "", "%", "/%61%2F", "/a;b/..;/c", `/a\b`, "/%252f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		for _, decode := range []bool{false, true} {
			fm, ok := normalizePath(p, decode)
			if !ok {
				continue
			}
			for _, c := range []string{fm.clean, fm.bare} {
				if c == "" || c[0] != '/' {
					t.Fatalf("normalizePath(%q) = %q: not absolute", p, c)
				}
				again, ok := normalizePath(c, decode)
				if !ok || again.clean != c {
					t.Fatalf("normalizePath not idempotent: %q -> %q -> %q (%v)", p, c, again.clean, ok)
				}
				if strings.Contains(c, "\\") || strings.Contains(strings.ToLower(c), "%2f") || strings.Contains(strings.ToLower(c), "%5c") {
					t.Fatalf("normalizePath(%q) = %q: an encoded separator survived", p, c)
				}
			}
		}
	})
}

func TestHostOnly(t *testing.T) {
	for in, want := range map[string]string{
		"a.com": "a.com", "a.com:8443": "a.com", "[::1]:80": "::1", "[::1]": "::1", "::1": "::1", "": "",
	} {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzRouteMatch: any pattern and any path are matched without a panic; a
// captured org is one whole, non-empty segment of the cleaned path.
func FuzzRouteMatch(f *testing.F) {
	f.Add("/api/v2/orgs/{org}/projects/*", "/api/v2/orgs/o1/projects/p1")
	f.Add("/a/**", "/a/b/c/")
	f.Add("/{org}", "//x/../y")
	f.Add("/", "")
	f.Fuzz(func(t *testing.T, pat, path string) {
		p, err := compilePattern(pat)
		if err != nil {
			return
		}
		clean := cleanPath(path)
		if clean == "" {
			return // refused before any rule is matched
		}
		org, ok := p.match(clean, "org", false)
		if !ok {
			if org != "" {
				t.Fatalf("no match but org %q", org)
			}
			return
		}
		if org != "" && !strings.Contains(clean+"/", "/"+org+"/") {
			t.Fatalf("org %q is not a segment of %q", org, clean)
		}
		if org != "" && strings.Contains(org, "/") {
			t.Fatalf("org %q spans segments", org)
		}
	})
}
