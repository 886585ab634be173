package admin

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate/authz/ratelimit"
)

// decode reads one JSON object from the body into v. With optional, an
// empty body leaves v as it is.
//
// encoding/json alone is too lenient for an API whose bodies grant access:
// it matches field names case-insensitively ("NAME" fills name) and lets
// the last of duplicate keys win, so a body can mean one thing to Keygate
// and another to a proxy, WAF or audit tool that reads it first. The body
// is therefore checked by checkFields before it is decoded: every name
// exactly as a json tag spells it, no key twice in any object, no data
// after the object.
func decode(r *http.Request, v any, optional bool) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("could not read the request body")
	}
	return decodeJSON(body, v, optional)
}

// decodeJSON is decode on a body already read: the parser of untrusted
// input, fuzzed on its own (FuzzDecode).
func decodeJSON(body []byte, v any, optional bool) error {
	if optional && len(bytes.Trim(body, jsonSpace)) == 0 {
		return nil
	}
	if err := checkFields(body, reflect.TypeOf(v)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	// Redundant after checkFields, and kept so: a type checkFields misreads
	// still cannot gain a field.
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			te.Field = jsonPath(reflect.TypeOf(v), te.Field)
		}
		return decodeError(err)
	}
	return nil
}

// jsonPath drops from an UnmarshalTypeError's field path the Go names of
// embedded structs ("KeySpec.scopes"), which a client never wrote.
func jsonPath(t reflect.Type, field string) string {
	var out []string
	for _, seg := range strings.Split(field, ".") {
		t = target(t)
		if t == nil || t.Kind() != reflect.Struct {
			out = append(out, seg)
			t = nil
			continue
		}
		if sf, ok := t.FieldByName(seg); ok && sf.Anonymous && sf.Tag.Get("json") == "" {
			t = sf.Type
			continue
		}
		out = append(out, seg)
		t = structFields(t)[seg]
	}
	return strings.Join(out, ".")
}

// jsonSpace is the whitespace JSON allows between tokens (RFC 8259).
const jsonSpace = " \t\r\n"

// maxDepth bounds how deep objects and arrays nest. Admin bodies are at
// most three levels deep; the bound keeps a 1 MiB body of "[" from
// costing a recursion per byte.
const maxDepth = 32

// maxNameInError bounds how much of a field name an error quotes back.
const maxNameInError = 64

// checkFields walks the JSON value in body against type t, refusing a
// field name that is not exactly one of a struct's json names, a key that
// appears twice in one object (a struct's or a map's), nesting deeper than
// maxDepth, and data after the value. Values are not type-checked: the
// decode that follows reports those errors.
func checkFields(body []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	// Numbers stay text: converting each to a float64 costs time and could
	// fail on a number the typed decode would refuse with a better message.
	dec.UseNumber()
	w := walker{dec: dec}
	if err := w.value(t, ""); err != nil {
		if errors.Is(err, io.EOF) {
			if w.tokens == 0 {
				return badRequest("request body is empty; want a JSON object")
			}
			// Token reports a body cut off inside a value as io.EOF.
			return decodeError(io.ErrUnexpectedEOF)
		}
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("unexpected data after the JSON object")
	}
	return nil
}

type walker struct {
	dec    *json.Decoder
	depth  int
	tokens int
}

// value checks the next value against t, which is nil when any JSON is
// acceptable to the names-and-duplicates check (an interface, a type with
// its own UnmarshalJSON, or a value of the wrong JSON kind, which the
// typed decode then refuses).
func (w *walker) value(t reflect.Type, path string) error {
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	w.tokens++
	t = target(t)
	d, ok := tok.(json.Delim)
	if !ok {
		if tok == nil && path == "" && t != nil && t.Kind() == reflect.Struct {
			// encoding/json would take null for "no fields"; the documented
			// body is an object.
			return badRequest("want a JSON object, not null")
		}
		return nil
	}
	if w.depth++; w.depth > maxDepth {
		return badRequest("JSON nested deeper than %d levels", maxDepth)
	}
	defer func() { w.depth-- }()
	if d == '[' {
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for w.dec.More() {
			if err := w.value(elem, path+"[]"); err != nil {
				return err
			}
		}
		_, err := w.dec.Token()
		return err
	}

	var (
		fields map[string]reflect.Type
		elem   reflect.Type
	)
	switch {
	case t == nil:
	case t.Kind() == reflect.Struct:
		fields = structFields(t)
	case t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	seen := map[string]struct{}{}
	for w.dec.More() {
		tok, err := w.dec.Token()
		if err != nil {
			return err
		}
		w.tokens++
		name, _ := tok.(string) // the decoder allows only strings as keys
		at := name
		if path != "" {
			at = path + "." + name
		}
		if _, dup := seen[name]; dup {
			return badRequest("duplicate field %q", shorten(at))
		}
		seen[name] = struct{}{}
		ft := elem
		if fields != nil {
			var known bool
			if ft, known = fields[name]; !known {
				return badRequest("unknown field %q", shorten(at))
			}
		}
		if err := w.value(ft, at); err != nil {
			return err
		}
	}
	_, err = w.dec.Token()
	return err
}

func shorten(name string) string {
	if len(name) <= maxNameInError {
		return name
	}
	return name[:maxNameInError] + "..."
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// target is the type whose names a JSON value is checked against: t
// without pointers, or nil for a type that decodes itself (time.Time) or
// takes anything (an interface).
func target(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() == reflect.Interface {
		return nil
	}
	if p := reflect.PointerTo(t); p.Implements(jsonUnmarshaler) || p.Implements(textUnmarshaler) {
		return nil
	}
	return t
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

// structFields maps the JSON names of struct t to their types, by
// encoding/json's rules: a json tag's name or else the Go name, exported
// fields only, "-" skipped, the fields of embedded structs promoted, and
// of several fields with one name the shallowest (then the only tagged
// one) wins, while a tie hides them all.
func structFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	type candidate struct {
		typ    reflect.Type
		depth  int
		tagged bool
	}
	all := map[string][]candidate{}
	var walk func(t reflect.Type, depth int, path []reflect.Type)
	walk = func(t reflect.Type, depth int, path []reflect.Type) {
		for _, p := range path {
			if p == t {
				return // an embedding cycle through pointers
			}
		}
		path = append(path, t)
		for i := range t.NumField() {
			sf := t.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			ft := sf.Type
			if sf.Anonymous {
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if name == "" && ft.Kind() == reflect.Struct {
					walk(ft, depth+1, path)
					continue
				}
				if !sf.IsExported() {
					continue
				}
			} else if !sf.IsExported() {
				continue
			}
			tagged := name != ""
			if !tagged {
				name = sf.Name
			}
			all[name] = append(all[name], candidate{sf.Type, depth, tagged})
		}
	}
	walk(t, 0, nil)

	out := make(map[string]reflect.Type, len(all))
	for name, cs := range all {
		minDepth := cs[0].depth
		for _, c := range cs {
			minDepth = min(minDepth, c.depth)
		}
		var shallow, tagged []candidate
		for _, c := range cs {
			if c.depth == minDepth {
				shallow = append(shallow, c)
				if c.tagged {
					tagged = append(tagged, c)
				}
			}
		}
		switch {
		case len(shallow) == 1:
			out[name] = shallow[0].typ
		case len(tagged) == 1:
			out[name] = tagged[0].typ
		}
	}
	fieldCache.Store(t, out)
	return out
}

// decodeError describes a JSON error without quoting the body, which may
// hold a raw key.
func decodeError(err error) error {
	var (
		ae  *apiError
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &ae), errors.As(err, &mbe):
		return err
	case errors.Is(err, io.EOF):
		return badRequest("request body is empty; want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body ends in the middle of a JSON value")
	case errors.As(err, &se):
		return badRequest("malformed JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		if te.Field == "" {
			return badRequest("want a JSON object, not %s", te.Value)
		}
		return badRequest("field %q: a JSON %s is not allowed here", te.Field, te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for this case; checkFields
		// refuses these first, so this is only a second line.
		return badRequest("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	var lse *ratelimit.SpecError
	if errors.As(err, &lse) {
		return badRequest("%s", lse.Error())
	}
	var pe *time.ParseError
	if errors.As(err, &pe) {
		return badRequest("a time is not in RFC 3339 form (e.g. 2030-01-02T15:04:05Z)")
	}
	return badRequest("invalid request body")
}
