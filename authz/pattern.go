package authz

import (
	"fmt"
	"path"
	"strings"
)

// cleanPath returns the path a route rule is matched against: the query
// removed, unreserved percent-encodings decoded, "//" merged and "." and
// ".." segments resolved, the way Envoy's normalize_path and merge_slashes
// do. Matching the normalised form means "/a/../admin" and "/%61dmin" meet
// the rules for "/admin" even when Envoy was not told to normalise. An
// encoded slash (%2F) is kept encoded: it is not a segment boundary. A path
// that is already clean is returned without allocating.
func cleanPath(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	if i := strings.IndexByte(p, '#'); i >= 0 {
		p = p[:i]
	}
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	if !needsCleaning(p) {
		return p
	}
	// Decoding can form a new escape ("%7%61" becomes "%7a"), so repeat
	// until nothing changes; each pass that changes shortens the path.
	for strings.IndexByte(p, '%') >= 0 {
		d := decodeUnreserved(p)
		if d == p {
			break
		}
		p = d
	}
	trailing := strings.HasSuffix(p, "/") && len(p) > 1
	p = path.Clean(p)
	if trailing && p != "/" {
		p += "/"
	}
	return p
}

func needsCleaning(p string) bool {
	return strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") || strings.IndexByte(p, '%') >= 0
}

// decodeUnreserved decodes %XX only where XX is an RFC 3986 unreserved
// character (ALPHA, DIGIT, "-", ".", "_", "~"); decoding anything else would
// change what the path means to the backend.
func decodeUnreserved(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			if c, ok := unhex2(p[i+1], p[i+2]); ok && isUnreserved(c) {
				b.WriteByte(c)
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

func unhex2(a, b byte) (byte, bool) {
	hi, ok1 := unhex(a)
	lo, ok2 := unhex(b)
	return hi<<4 | lo, ok1 && ok2
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// pattern is a compiled path pattern such as "/api/v2/orgs/{org}/projects/*":
// a literal segment matches itself, "{name}" and "*" match exactly one
// non-empty segment, and a final "**" matches the rest of the path (zero or
// more segments).
type pattern struct {
	segs []patternSeg
	rest bool // ends in "**"
}

type patternSeg struct {
	literal string
	param   string // name of a {param}; empty for literals and "*"
	any     bool   // "*" or {param}
}

func compilePattern(p string) (pattern, error) {
	if !strings.HasPrefix(p, "/") {
		return pattern{}, fmt.Errorf("path pattern %q must start with /", p)
	}
	var out pattern
	trimmed := strings.TrimSuffix(p[1:], "/") // a trailing slash is ignored on match too
	if trimmed == "" {
		return out, nil
	}
	parts := strings.Split(trimmed, "/")
	seen := map[string]bool{}
	for i, s := range parts {
		switch {
		case s == "**":
			if i != len(parts)-1 {
				return pattern{}, fmt.Errorf("path pattern %q: ** must be the last segment", p)
			}
			out.rest = true
		case s == "*":
			out.segs = append(out.segs, patternSeg{any: true})
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			name := s[1 : len(s)-1]
			if name == "" || strings.ContainsAny(name, "{}*/") {
				return pattern{}, fmt.Errorf("path pattern %q: bad parameter %q", p, s)
			}
			if seen[name] {
				return pattern{}, fmt.Errorf("path pattern %q: parameter {%s} twice", p, name)
			}
			seen[name] = true
			out.segs = append(out.segs, patternSeg{param: name, any: true})
		case strings.ContainsAny(s, "{}*"):
			return pattern{}, fmt.Errorf("path pattern %q: segment %q mixes text with a wildcard", p, s)
		default:
			out.segs = append(out.segs, patternSeg{literal: s})
		}
	}
	return out, nil
}

func (p pattern) hasParam(name string) bool {
	for _, s := range p.segs {
		if s.param == name {
			return true
		}
	}
	return false
}

// match reports whether a cleaned path matches, and returns the value of
// the parameter named want (empty want: none) as a substring of path. A
// single trailing slash is ignored: "/a/b/" matches "/a/*".
func (p pattern) match(path, want string) (string, bool) {
	rest := strings.TrimSuffix(path[1:], "/")
	value := ""
	for _, s := range p.segs {
		if rest == "" {
			return "", false
		}
		seg := rest
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			seg, rest = rest[:j], rest[j+1:]
		} else {
			rest = ""
		}
		switch {
		case s.any:
			if s.param != "" && s.param == want {
				value = seg
			}
		case seg != s.literal:
			return "", false
		}
	}
	if !p.rest && rest != "" {
		return "", false
	}
	return value, true
}
