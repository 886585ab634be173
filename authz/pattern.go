package authz

import (
	"fmt"
	"path"
	"strings"
)

// A request path as the route rules see it. Route rules must match the
// resource the backend will serve, and backends read one path in several
// ways: some decode %2F into a slash or treat "\" as one, some (Tomcat,
// Spring, Jetty) drop ";params" from each segment, some fold case. The
// normalisation below picks one canonical form, refuses what cannot be
// read one way only, and lets the caller compare the two readings of ";"
// (see pathForms), so that no spelling a backend reads as the same resource
// is decided more permissively than the canonical one.

// pathForms are the two readings of a request path.
type pathForms struct {
	// clean is the path with the query dropped, unreserved %XX escapes
	// decoded, "//" merged and "." and ".." resolved, the way Envoy's
	// normalize_path and merge_slashes do.
	clean string
	// bare is clean computed after every ";params" (also "%3B") was cut
	// from its segment, as Tomcat reads "/a;x/../b". It equals clean when
	// the path has no parameters; when the two route differently the
	// request is ambiguous and refused.
	bare string
}

// normalizePath returns the readings of p, or ok false for a path that is
// refused whatever the rules: a backslash, or an encoded slash or
// backslash ("%2F", "%5C", and their double encodings "%252F", "%255C"),
// which some backends turn into a separator and others do not. With
// decodeSlashes (for backends known to decode them) "\", "%2F" and "%5C"
// are read as "/" instead; double encodings are refused either way.
func normalizePath(p string, decodeSlashes bool) (_ pathForms, ok bool) {
	// Two IndexByte calls: IndexAny walks a short path rune by rune.
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
		return pathForms{clean: p, bare: p}, true
	}
	if strings.IndexByte(p, '\\') >= 0 {
		if !decodeSlashes {
			return pathForms{}, false
		}
		p = strings.ReplaceAll(p, "\\", "/")
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
	if strings.IndexByte(p, '%') >= 0 {
		var refused bool
		if p, refused = escapedSlashes(p, decodeSlashes); refused {
			return pathForms{}, false
		}
	}
	f := pathForms{clean: cleanDots(p)}
	f.bare = f.clean
	if strings.IndexByte(p, ';') >= 0 || strings.Contains(p, "%3B") || strings.Contains(p, "%3b") {
		f.bare = cleanDots(stripParams(p))
	}
	return f, true
}

// cleanPath is the clean reading of p, or "" for a path normalizePath
// refuses (for checking configured paths).
func cleanPath(p string) string {
	f, ok := normalizePath(p, false)
	if !ok {
		return ""
	}
	return f.clean
}

// needsCleaning reports whether p holds anything normalizePath changes or
// refuses: an escape, a parameter, a backslash, "//", or a dot segment.
// One pass, since it runs on every request.
func needsCleaning(p string) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%', ';', '\\':
			return true
		case '/':
			rest := p[i+1:]
			if rest != "" && rest[0] == '/' || dotSegment(rest) {
				return true
			}
		}
	}
	return false
}

// dotSegment reports whether s starts with a "." or ".." segment.
func dotSegment(s string) bool {
	switch {
	case s == "." || s == "..":
		return true
	case strings.HasPrefix(s, "./"):
		return true
	}
	return strings.HasPrefix(s, "../")
}

// cleanDots merges slashes and resolves "." and ".."; a trailing slash is
// kept, since "/a/" and "/a" can be different resources.
func cleanDots(p string) string {
	trailing := strings.HasSuffix(p, "/") && len(p) > 1
	p = path.Clean(p)
	if trailing && p != "/" {
		p += "/"
	}
	return p
}

// escapedSlashes finds encoded slashes and backslashes in p (after the
// unreserved escapes were decoded). It reports refused for a double
// encoding, and for a single one unless decode, in which case they become
// "/".
func escapedSlashes(p string, decode bool) (_ string, refused bool) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) {
			if decode {
				b.WriteByte(p[i])
			}
			continue
		}
		c, ok := unhex2(p[i+1], p[i+2])
		switch {
		case ok && c == '%' && i+4 < len(p):
			if d, ok := unhex2(p[i+3], p[i+4]); ok && (d == '/' || d == '\\') {
				return "", true
			}
		case ok && (c == '/' || c == '\\'):
			if !decode {
				return "", true
			}
			b.WriteByte('/')
			i += 2
			continue
		}
		if decode {
			b.WriteByte(p[i])
		}
	}
	if !decode {
		return p, false
	}
	return b.String(), false
}

// stripParams cuts ";params" (or "%3Bparams") from every segment.
func stripParams(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for _, seg := range strings.SplitAfter(p, "/") {
		slash := strings.HasSuffix(seg, "/")
		body := strings.TrimSuffix(seg, "/")
		if i := paramStart(body); i >= 0 {
			body = body[:i]
		}
		b.WriteString(body)
		if slash {
			b.WriteByte('/')
		}
	}
	return b.String()
}

func paramStart(seg string) int {
	i := strings.IndexByte(seg, ';')
	for j := 0; j+2 < len(seg); j++ {
		if seg[j] == '%' && seg[j+1] == '3' && (seg[j+2] == 'B' || seg[j+2] == 'b') {
			if i < 0 || j < i {
				i = j
			}
			break
		}
	}
	return i
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
// single trailing slash is ignored: "/a/b/" matches "/a/*". With fold,
// literal segments match in any case.
func (p pattern) match(path, want string, fold bool) (string, bool) {
	if path == "" {
		return "", false
	}
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
		case fold && !strings.EqualFold(seg, s.literal), !fold && seg != s.literal:
			return "", false
		}
	}
	if !p.rest && rest != "" {
		return "", false
	}
	return value, true
}
