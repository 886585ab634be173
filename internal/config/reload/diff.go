package reload

import (
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"unicode"

	"github.com/keygate/keygate/authz"
)

// policyChanges says, as slog attributes, what replacing prev by next
// changes: the rules added, removed and changed (by name, with the settings
// that differ), whether the rules both have are now tried in another order
// (the first match decides, so that alone can open a route), and, in group
// "policy", each policy-wide setting that differs, old -> new. The watch
// cannot tell a truncated file from a meant one; this line lets the
// operator.
func policyChanges(prev, next authz.Policy) []any {
	old, oldOrder := rulesByLabel(prev.Rules)
	cur, curOrder := rulesByLabel(next.Rules)
	added, removed, changed := []string{}, []string{}, []string{}
	var keptOld, keptCur []string
	for _, l := range oldOrder {
		if _, ok := cur[l]; ok {
			keptOld = append(keptOld, l)
		} else {
			removed = append(removed, l)
		}
	}
	for _, l := range curOrder {
		r, ok := old[l]
		if !ok {
			added = append(added, l)
			continue
		}
		keptCur = append(keptCur, l)
		var fields []string
		for _, d := range fieldDiffs(r, cur[l]) {
			fields = append(fields, d.name)
		}
		if len(fields) > 0 {
			changed = append(changed, l+"("+strings.Join(fields, ",")+")")
		}
	}
	attrs := []any{"added", added, "removed", removed, "changed", changed}
	if !slices.Equal(keptOld, keptCur) {
		attrs = append(attrs, "reordered", true)
	}
	var pol []any
	for _, d := range fieldDiffs(prev, next) {
		if d.name == "deny_unmatched" {
			// As the config file names and spells it.
			pol = append(pol, "unmatched", unmatched(prev.DenyUnmatched)+" -> "+unmatched(next.DenyUnmatched))
		} else {
			pol = append(pol, d.name, setting(d.old)+" -> "+setting(d.new))
		}
	}
	if len(pol) > 0 {
		attrs = append(attrs, slog.Group("policy", pol...))
	}
	return attrs
}

// rulesByLabel names each rule by its name, or an unnamed one by its
// matchers, which do not change when rules before it come or go; a label
// taken twice gets "#2", "#3".
func rulesByLabel(rules []authz.Rule) (map[string]authz.Rule, []string) {
	byLabel := make(map[string]authz.Rule, len(rules))
	order := make([]string, 0, len(rules))
	for _, r := range rules {
		l := r.Name
		if l == "" {
			var m []string
			prefix := r.PathPrefix
			if prefix != "" {
				prefix += "*"
			}
			for _, s := range []string{strings.Join(r.Methods, "+"), r.Host, r.Path, prefix, r.PathPattern} {
				if s != "" {
					m = append(m, s)
				}
			}
			l = "unnamed(" + strings.Join(m, ",") + ")"
		}
		for n, base := 2, l; ; n++ {
			if _, dup := byLabel[l]; !dup {
				break
			}
			l = fmt.Sprintf("%s#%d", base, n)
		}
		byLabel[l] = r
		order = append(order, l)
	}
	return byLabel, order
}

type fieldDiff struct {
	name     string // snake_case, as in the config file
	old, new reflect.Value
}

// fieldDiffs lists the exported fields, but Rules, in which two values of
// one struct type differ. Reflection, so that a setting added to authz later
// is not silently left out of the log; an empty list equals an absent one.
func fieldDiffs[T any](a, b T) []fieldDiff {
	x, y := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []fieldDiff
	for i := range x.NumField() {
		f := x.Type().Field(i)
		if !f.IsExported() || f.Name == "Rules" {
			continue
		}
		u, v := x.Field(i), y.Field(i)
		if u.Kind() == reflect.Slice && u.Len() == 0 && v.Len() == 0 {
			continue
		}
		if !reflect.DeepEqual(u.Interface(), v.Interface()) {
			out = append(out, fieldDiff{name: snake(f.Name), old: u, new: v})
		}
	}
	return out
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

func unmatched(deny bool) string {
	if deny {
		return "deny"
	}
	return "allow_with_key"
}

// setting shows a policy value; "none" for an empty one, which the config
// file spells by leaving it out.
func setting(v reflect.Value) string {
	if (v.Kind() == reflect.String || v.Kind() == reflect.Slice) && v.Len() == 0 {
		return "none"
	}
	return fmt.Sprint(v.Interface())
}
