package authz

import (
	"strings"
	"testing"
)

func TestCleanPath(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/a/b", "/a/b"},
		{"/a/b?x=1&key=ak_live_x", "/a/b"},
		{"", "/"},
		{"a", "/a"},
		{"//admin", "/admin"},
		{"/public/../admin", "/admin"},
		{"/a/./b/", "/a/b/"},
		{"/a/b/..", "/a"},
		{"/../../etc", "/etc"},
		{"/%61dmin", "/admin"},
		{"/%2e%2e/admin", "/admin"},
		{"/a%2Fb", "/a%2Fb"}, // an encoded slash is not a separator
		{"/a%zz", "/a%zz"},
		{"/A/B", "/A/B"}, // paths are case-sensitive, as in Envoy
		{"/a#frag", "/a"},
	} {
		if got := cleanPath(tt.in); got != tt.want {
			t.Errorf("cleanPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { cleanPath("/api/v2/orgs/o1/projects?limit=10") }); n != 0 {
		t.Errorf("cleanPath of a clean path allocates %v times", n)
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
		org, ok := p.match(tt.path, "org")
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
	for _, s := range []string{"/a/../b", "//x", "/%2e%2e/", "/a?b", "", "%", "/%61%2F"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		c := cleanPath(p)
		if c == "" || c[0] != '/' {
			t.Fatalf("cleanPath(%q) = %q: not absolute", p, c)
		}
		if again := cleanPath(c); again != c {
			t.Fatalf("cleanPath not idempotent: %q -> %q -> %q", p, c, again)
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
		org, ok := p.match(clean, "org")
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
