package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// problems collects everything wrong with a file, each with its place: the
// dotted field ("keys.prefix", "routes[2].scopes") and its line.
type problems struct {
	file  string
	lines map[string]int // the line of every key, by field; see indexLines
	errs  []problem
	// zeroed are the fields whose values did not decode: the decoder left
	// them at their zero, so a problem of meaning found in one of them (or
	// in a field holding one) follows from the type error already
	// reported, and would only mislead (a window of 0s, when the file says
	// "nope").
	zeroed []string
}

type problem struct {
	line  int    // 0: no place in the file
	col   int    // of a type error, for fields sharing a line ({a: 1, b: 2})
	field string // empty: the file as a whole
	err   error
}

// add records a problem of meaning with field, at the line of the field or
// of its nearest ancestor in the file (a field left at its default has
// none of its own).
func (p *problems) add(field string, err error) {
	if err == nil {
		return
	}
	for _, z := range p.zeroed {
		if within(z, field) || within(field, z) {
			return
		}
	}
	line := 0
	for f := field; f != ""; {
		if l, ok := p.lines[f]; ok {
			line = l
			break
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	p.errs = append(p.errs, problem{line: line, field: field, err: err})
}

// within reports whether field is outer or inside it ("a.b[0].c" is
// within "a.b").
func within(field, outer string) bool {
	if !strings.HasPrefix(field, outer) {
		return false
	}
	rest := field[len(outer):]
	return rest == "" || rest[0] == '.' || rest[0] == '['
}

// err returns every problem in the order of the file (by line number, not
// as text, where line 11 would come before line 2; then left to right),
// each as "file:line: field: message".
func (p *problems) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	place := p.file
	if place == "" {
		place = "config"
	}
	type placed struct {
		problem
		msg error // the problem with its place
	}
	all := make([]placed, len(p.errs))
	for i, e := range p.errs {
		at := place
		if e.line > 0 {
			at = fmt.Sprintf("%s:%d", place, e.line)
		}
		all[i] = placed{e, fmt.Errorf("%s: %w", at, e.err)}
		if e.field != "" {
			all[i].msg = fmt.Errorf("%s: %s: %w", at, e.field, e.err)
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if a.line != b.line {
			return a.line < b.line
		}
		if a.col != b.col {
			return a.col < b.col
		}
		return a.msg.Error() < b.msg.Error()
	})
	errs := make([]error, len(all))
	for i, e := range all {
		errs[i] = e.msg
	}
	return errors.Join(errs...)
}

// indexLines records the line of every mapping key and sequence item, by
// its dotted path ("keys.prefix", "routes[2].scopes").
func indexLines(n *yaml.Node, prefix string, out map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexLines(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if prefix != "" {
				k = prefix + "." + k
			}
			out[k] = n.Content[i].Line
			indexLines(n.Content[i+1], k, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			k := prefix + "[" + strconv.Itoa(i) + "]"
			out[k] = c.Line
			indexLines(c, k, out)
		}
	}
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// typeProblems records the decoder's type errors (te) at their fields. The
// decoder says only "line 3: cannot unmarshal ...", and a line can hold
// several fields ({requests: 100, window: nope}), so the document is
// walked beside the Go types it decodes into, and every value is decoded
// on its own: an error is then that field's. A type error the walk does
// not explain (one of the decoder's rarer checks) is still reported, at
// its line.
func (p *problems) typeProblems(root *yaml.Node, te *yaml.TypeError) {
	w := typeWalk{p: p, lines: map[int]bool{}}
	w.value(root, reflect.TypeFor[Config](), "")
	for _, e := range te.Errors {
		line, msg := 0, e
		if m := yamlLine.FindStringSubmatch(e); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		if line == 0 || !w.lines[line] {
			p.errs = append(p.errs, problem{line: line, err: errors.New(msg)})
		}
	}
}

type typeWalk struct {
	p     *problems
	lines map[int]bool // lines with a problem recorded
}

func (w *typeWalk) add(line, col int, field string, err error) {
	w.p.errs = append(w.p.errs, problem{line, col, field, err})
	w.lines[line] = true
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// value checks n as the decoder would decode it into a t at field.
func (w *typeWalk) value(n *yaml.Node, t reflect.Type, field string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 1 {
			w.value(n.Content[0], t, field)
		}
		return
	}
	if n.ShortTag() == "!!null" {
		return // left at its zero, as the decoder does
	}
	custom := reflect.PointerTo(t).Implements(unmarshalerType)
	switch {
	case !custom && t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		w.mapping(n, field, nil, func(name string) (reflect.Type, bool) {
			f, ok := yamlField(t, name)
			return f.Type, ok
		})
	case !custom && t.Kind() == reflect.Map && t.Elem().Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		w.mapping(n, field, nil, func(string) (reflect.Type, bool) { return t.Elem(), true })
	case !custom && t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			w.value(c, t.Elem(), field+"["+strconv.Itoa(i)+"]")
		}
	default:
		// A value of its own (a string, a number, a list of strings, a
		// Duration), or a node of the wrong kind for t: the decoder's
		// message for it, which is now this field's alone.
		err := n.Decode(reflect.New(t).Interface())
		var te *yaml.TypeError
		switch {
		case errors.As(err, &te):
			for _, e := range te.Errors {
				line, msg := n.Line, e
				if m := yamlLine.FindStringSubmatch(e); m != nil {
					line, _ = strconv.Atoi(m[1])
					msg = m[2]
				}
				w.add(line, n.Column, field, errors.New(msg))
			}
		case err != nil:
			w.add(n.Line, n.Column, field, err)
		}
		if err != nil {
			w.p.zeroed = append(w.p.zeroed, field)
		}
	}
}

// mapping checks the keys of a mapping decoded into a struct or a map
// (fieldType finds a key's type; false: unknown) and their values. done
// holds the keys already decoded, for the mappings merged in with "<<",
// whose keys give way to the merging mapping's own.
func (w *typeWalk) mapping(n *yaml.Node, field string, done map[string]bool, fieldType func(string) (reflect.Type, bool)) {
	own := map[string]int{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.value(k, reflect.TypeFor[string](), field) // the decoder's message for a key that is no name
			continue
		}
		name := k.Value
		path := name
		if field != "" {
			path = field + "." + name
		}
		if first, dup := own[name]; dup {
			// The decoder decodes none of a mapping with a repeated key.
			w.add(k.Line, k.Column, path, fmt.Errorf("mapping key %q already defined at line %d", name, first))
			w.p.zeroed = append(w.p.zeroed, field)
			continue
		}
		own[name] = k.Line
		if done != nil {
			if done[name] {
				continue
			}
			done[name] = true
		}
		t, ok := fieldType(name)
		if !ok {
			w.add(k.Line, k.Column, path, errors.New("unknown field"))
			continue
		}
		w.value(v, t, path)
	}
	if len(merges) == 0 {
		return
	}
	if done == nil {
		done = map[string]bool{}
		for name := range own {
			done[name] = true
		}
	}
	for _, m := range merges {
		for m.Kind == yaml.AliasNode && m.Alias != nil {
			m = m.Alias
		}
		list := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			list = m.Content
		}
		for _, src := range list {
			for src.Kind == yaml.AliasNode && src.Alias != nil {
				src = src.Alias
			}
			if src.Kind == yaml.MappingNode {
				w.mapping(src, field, done, fieldType)
			}
		}
	}
}

// yamlField finds the field of struct t that YAML key name decodes into.
func yamlField(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" && f.Type.Kind() == reflect.Struct {
			// The decoder reads an inline struct's keys as the outer one's.
			if inner, ok := yamlField(f.Type, name); ok {
				return inner, true
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if tag == "" {
			tag = strings.ToLower(f.Name)
		}
		if tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}
