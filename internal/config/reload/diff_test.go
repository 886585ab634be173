package reload

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/keygate/keygate/authz"
)

// TestReloadDiffNamesChanges checks the reload log's account of a policy
// change on its own: unnamed rules go by their matchers (not their place,
// which shifts when a rule before them comes or goes), an empty list equals
// an absent one, and a new order of the same rules is reported, since the
// first match decides.
func TestReloadDiffNamesChanges(t *testing.T) {
	prev := authz.Policy{Rules: []authz.Rule{
		{Name: "health", Path: "/healthz", Public: true},
		{Name: "admin", PathPattern: "/admin/**", Scopes: []string{"admin"}},
		{Methods: []string{"GET"}, PathPattern: "/a/**"},
		{PathPrefix: "/b"},
		{PathPrefix: "/b", Cost: 3}, // unreachable, but a rule all the same
	}}
	next := authz.Policy{
		Rules: []authz.Rule{
			{Name: "admin", PathPattern: "/admin/**", Public: true},
			{Name: "health", Path: "/healthz", Public: true, Environments: []string{}},
			{Methods: []string{"GET"}, PathPattern: "/a/**", Cost: 2},
			{PathPrefix: "/b"},
			{Name: "reports", PathPattern: "/reports/**", Scopes: []string{"reports"}},
		},
		DenyUnmatched: true,
		OrgHeader:     "x-org-id",
		Environments:  []string{"live"},
	}
	var out strings.Builder
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	log.Info("routes and policy reloaded", policyChanges(prev, next)...)
	want := `level=INFO msg="routes and policy reloaded" added=[reports] removed=[unnamed(/b*)#2] ` +
		`changed="[admin(public,scopes) unnamed(GET,/a/**)(cost)]" reordered=true ` +
		`policy.unmatched="allow_with_key -> deny" policy.org_header="none -> x-org-id" policy.environments="none -> [live]"` + "\n"
	if out.String() != want {
		t.Errorf("log line\n%s\nwant\n%s", out.String(), want)
	}

	out.Reset()
	log.Info("routes and policy reloaded", policyChanges(next, next)...)
	if want := `level=INFO msg="routes and policy reloaded" added=[] removed=[] changed=[]` + "\n"; out.String() != want {
		t.Errorf("no change logged as\n%s\nwant\n%s", out.String(), want)
	}
}
