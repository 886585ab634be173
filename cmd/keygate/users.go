package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
)

const usersLong = `Manage users through the admin API: the user_id keys carry, within a
tenant, with limits all of the user's keys share (so a customer cannot
multiply its budget by creating keys). A user without a record gets the
configured per-user limits (rate_limits.user).

Usage:
  keygate users set TENANT USER [--name N] [--metadata k=v,...]
                    [--limit NAME=REQUESTS/WINDOW[,algorithm=token_bucket][,burst=N] ...]
  keygate users get TENANT USER
  keygate users list TENANT [--limit N] [--cursor C] [--all]
  keygate users delete TENANT USER

"users set" replaces the whole record: give every field to keep. Each
--limit replaces the configured per-user limit of that name or adds one;
--limit per_day=0 turns the per_day default off for this user.

Every subcommand also takes --admin-url, --admin-token-file and
-o/--output table|json|yaml. Run "keygate users SUBCOMMAND --help" for details.`

// limitHelp describes --limit, for users and keys alike.
const limitHelp = "named `limit` NAME=REQUESTS/WINDOW, e.g. per_minute=100/1m or per_day=10000/1d; add ,algorithm=token_bucket,burst=N for bursts; NAME=0 turns that default off (repeatable)"

// putUserRequest is the body of PUT /v1/tenants/T/users/U.
type putUserRequest struct {
	Name     string                     `json:"name,omitempty"`
	Metadata map[string]string          `json:"metadata,omitempty"`
	Limits   map[string]ratelimit.Limit `json:"limits,omitempty"`
}

func newUsersCmd(c *cli) *cobra.Command {
	return newGroupCmd(c, "users", "manage users and their shared limits", usersLong,
		usersSet(c), usersGet(c), usersList(c), usersDelete(c))
}

func usersSet(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "set TENANT USER", "create or replace a user's record")
	name := m.fs.String("name", "", "display `name`")
	metadata := metadataFlag{}
	m.fs.Var(metadata, "metadata", "free-form `key=value` pairs, comma-separated or repeated")
	limits := limitFlag{}
	m.fs.Var(limits, "limit", limitHelp)
	return m.runs(func(ctx context.Context, args []string) error {
		pos, err := m.parse(args, "TENANT", "USER")
		if err != nil {
			return err
		}
		body := putUserRequest{Name: *name}
		if len(metadata) > 0 {
			body.Metadata = map[string]string(metadata)
		}
		if len(limits) > 0 {
			body.Limits = map[string]ratelimit.Limit(limits)
		}
		return show(ctx, m, "PUT", pathOf("v1", "tenants", pos[0], "users", pos[1]), nil, body, printUser)
	})
}

func usersGet(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "get TENANT USER", "show a user")
	return m.runs(func(ctx context.Context, args []string) error {
		pos, err := m.parse(args, "TENANT", "USER")
		if err != nil {
			return err
		}
		return show(ctx, m, "GET", pathOf("v1", "tenants", pos[0], "users", pos[1]), nil, nil, printUser)
	})
}

func usersList(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "list TENANT", "list a tenant's users")
	limit := m.fs.Int("limit", 0, "page `size`, 1 to 1000 (default 50)")
	cursor := m.fs.String("cursor", "", "next_cursor of the previous page")
	all := m.fs.Bool("all", false, "follow next_cursor through every page")
	return m.runs(func(ctx context.Context, args []string) error {
		pos, err := m.parse(args, "TENANT")
		if err != nil {
			return err
		}
		if m.isSet("limit") && *limit < 1 {
			return m.usageErr("--limit must be at least 1")
		}
		ac, err := m.client()
		if err != nil {
			return err
		}
		q := url.Values{}
		if *limit > 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		out, err := listPages(ctx, ac, pathOf("v1", "tenants", pos[0], "users"), q, *cursor, *all, "users")
		if err != nil {
			return err
		}
		if m.raw() {
			return m.printValue(out)
		}
		users, err := decodePage[keystore.User](out, "users")
		if err != nil {
			return err
		}
		if err := printUsers(c.stdout, users); err != nil {
			return err
		}
		if out.HasMore {
			fmt.Fprintf(c.stderr, "More users: add --cursor %s (or --all).\n", out.NextCursor)
		}
		return nil
	})
}

func usersDelete(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "delete TENANT USER", "delete a user's record (the user's keys keep working, under the default per-user limits)")
	return m.runs(func(ctx context.Context, args []string) error {
		pos, err := m.parse(args, "TENANT", "USER")
		if err != nil {
			return err
		}
		ac, err := m.client()
		if err != nil {
			return err
		}
		if _, err := ac.call(ctx, "DELETE", pathOf("v1", "tenants", pos[0], "users", pos[1]), nil, nil, nil); err != nil {
			return err
		}
		if m.raw() {
			return m.printValue(struct {
				TenantID string `json:"tenant_id"`
				ID       string `json:"id"`
				Deleted  bool   `json:"deleted"`
			}{pos[0], pos[1], true})
		}
		_, err = fmt.Fprintf(c.stdout, "Deleted user %s of tenant %s.\n", cell(pos[1]), cell(pos[0]))
		return err
	})
}

// limitFlag collects repeated --limit NAME=SPEC flags into a set of named
// limits; a name given twice is refused rather than silently replaced.
type limitFlag map[string]ratelimit.Limit

func (f limitFlag) String() string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(f)) {
		out = append(out, name+"="+formatLimit(f[name]))
	}
	return strings.Join(out, " ")
}

func (f limitFlag) Type() string { return "NAME=REQ/WINDOW" }

func (f limitFlag) Set(s string) error {
	name, l, err := parseLimit(s)
	if err != nil {
		return err
	}
	if _, dup := f[name]; dup {
		return fmt.Errorf("limit %q given twice", name)
	}
	f[name] = l
	return nil
}

// parseLimit reads NAME=REQUESTS/WINDOW[,algorithm=A][,burst=N], or NAME=0
// for "turn the default of this name off". It checks what the server
// would, so that a typo fails before anything is sent.
func parseLimit(s string) (string, ratelimit.Limit, error) {
	name, spec, ok := strings.Cut(s, "=")
	if !ok {
		return "", ratelimit.Limit{}, fmt.Errorf("%q: want NAME=REQUESTS/WINDOW, e.g. per_minute=100/1m", s)
	}
	if err := ratelimit.ValidName(name); err != nil {
		return "", ratelimit.Limit{}, err
	}
	parts := strings.Split(spec, ",")
	rate, opts := parts[0], parts[1:]
	if rate == "0" {
		if len(opts) > 0 {
			return "", ratelimit.Limit{}, fmt.Errorf("limit %q: 0 turns the limit off and takes no options", name)
		}
		return name, ratelimit.Limit{}, nil
	}
	reqs, window, ok := strings.Cut(rate, "/")
	if !ok {
		return "", ratelimit.Limit{}, fmt.Errorf("limit %q: %q: want REQUESTS/WINDOW, e.g. 100/1m, or 0 to turn it off", name, rate)
	}
	n, err := strconv.Atoi(reqs)
	if err != nil || n < 1 {
		return "", ratelimit.Limit{}, fmt.Errorf("limit %q: requests %q: want a whole number of at least 1 (or NAME=0 to turn the limit off)", name, reqs)
	}
	w, err := ratelimit.ParseWindow(window)
	if err != nil {
		return "", ratelimit.Limit{}, fmt.Errorf("limit %q: %w", name, err)
	}
	l := ratelimit.Limit{Requests: n, Window: w}
	seen := map[string]bool{}
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		if seen[k] {
			return "", ratelimit.Limit{}, fmt.Errorf("limit %q: %s given twice", name, k)
		}
		seen[k] = true
		switch k {
		case "algorithm":
			if l.Algorithm, err = ratelimit.ParseAlgorithm(v); err != nil {
				return "", ratelimit.Limit{}, fmt.Errorf("limit %q: %w", name, err)
			}
		case "burst":
			if l.Burst, err = strconv.Atoi(v); err != nil || l.Burst < 1 {
				return "", ratelimit.Limit{}, fmt.Errorf("limit %q: burst %q: want a whole number of at least 1", name, v)
			}
		default:
			return "", ratelimit.Limit{}, fmt.Errorf("limit %q: option %q: want algorithm=sliding_window|token_bucket or burst=N", name, o)
		}
	}
	if l.Burst != 0 && l.Algorithm != ratelimit.TokenBucket {
		return "", ratelimit.Limit{}, fmt.Errorf("limit %q: burst applies to algorithm=token_bucket only", name)
	}
	if err := l.Validate(); err != nil {
		return "", ratelimit.Limit{}, fmt.Errorf("limit %q: %w", name, err)
	}
	return name, l, nil
}

// formatLimit shows a limit as operators write it: "100 per 1m
// (sliding_window)", "600 per 1m (token_bucket, burst 50)", or "off".
func formatLimit(l ratelimit.Limit) string {
	if l.Requests == 0 {
		return "off"
	}
	s := fmt.Sprintf("%d per %s (%s", l.Requests, ratelimit.FormatWindow(l.Window), l.Algorithm)
	if l.Burst > 0 {
		s += ", burst " + strconv.Itoa(l.Burst)
	}
	return s + ")"
}

// limitLines is a set of limits one per line, in name order.
func limitLines(limits map[string]ratelimit.Limit) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(limits)) {
		out = append(out, name+": "+formatLimit(limits[name]))
	}
	return out
}

// printUser shows one user, a field per line and a line per limit.
func printUser(w io.Writer, u keystore.User) error {
	tw := newTable(w)
	row := func(label, value string) { fmt.Fprintf(tw, "%s\t%s\n", label, value) }
	row("Tenant", cell(u.TenantID))
	row("User", cell(u.ID))
	row("Name", cell(u.Name))
	if len(u.Metadata) > 0 {
		var kv []string
		for _, name := range slices.Sorted(maps.Keys(u.Metadata)) {
			kv = append(kv, name+"="+u.Metadata[name])
		}
		row("Metadata", cell(strings.Join(kv, ",")))
	}
	// Shown even when empty: "defaults" tells an operator that the
	// configured per-user limits apply unchanged.
	lines := limitLines(u.Limits)
	if len(lines) == 0 {
		lines = []string{"defaults"}
	}
	for i, l := range lines {
		label := ""
		if i == 0 {
			label = "Limits"
		}
		row(label, cell(l))
	}
	row("Created", fmtTime(u.CreatedAt))
	row("Updated", fmtTime(u.UpdatedAt))
	return tw.Flush()
}

// printUsers lists users one per line.
func printUsers(w io.Writer, us []keystore.User) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "USER\tNAME\tLIMITS\tUPDATED")
	for _, u := range us {
		limits := strings.Join(limitLines(u.Limits), "; ")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cell(u.ID), cell(u.Name), cell(limits), fmtTime(u.UpdatedAt))
	}
	return tw.Flush()
}
