package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/keystore"
)

const auditLong = `Read the admin audit log through the admin API: every admin write and
every refused admin request, oldest first.

Usage:
  keygate audit list [--since T] [--until T] [--target ID] [--action A]
                     [--limit N] [--cursor C] [--all]

--since and --until take an RFC 3339 time (2026-11-30T12:00:00Z) or a
duration that long ago (24h). --action keys.revoke selects one action;
--action keys every action on keys.

Every subcommand also takes --admin-url, --admin-token-file and
-o/--output table|json|yaml.`

func newAuditCmd(c *cli) *cobra.Command {
	return newGroupCmd(c, "audit", "read the admin audit log", auditLong, auditList(c))
}

func auditList(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "list", "list audit log entries")
	since := m.fs.String("since", "", "only entries at or after this `time` (RFC 3339, or a duration ago such as 24h)")
	until := m.fs.String("until", "", "only entries before this `time` (RFC 3339, or a duration ago)")
	target := m.fs.String("target", "", "only entries naming this `ID` (a key, tenant, org, user or admin token)")
	action := m.fs.String("action", "", "only entries of this `action` (keys.revoke), or of every action on a kind of record (keys)")
	limit := m.fs.Int("limit", 0, "page `size`, 1 to 1000 (default 50)")
	cursor := m.fs.String("cursor", "", "next_cursor of the previous page")
	all := m.fs.Bool("all", false, "follow next_cursor through every page")
	return m.runs(func(ctx context.Context, args []string) error {
		if _, err := m.parse(args); err != nil {
			return err
		}
		if m.isSet("limit") && *limit < 1 {
			return m.usageErr("--limit must be at least 1")
		}
		q := url.Values{}
		now := time.Now()
		for _, f := range []struct{ flag, param, v string }{{"since", "since", *since}, {"until", "until", *until}} {
			if f.v == "" {
				continue
			}
			t, err := auditTime(f.v, now)
			if err != nil {
				return m.usageErr("--%s: %v", f.flag, err)
			}
			q.Set(f.param, t.UTC().Format(time.RFC3339Nano))
		}
		for name, v := range map[string]string{"target": *target, "action": *action} {
			if v != "" {
				q.Set(name, v)
			}
		}
		if *limit > 0 {
			q.Set("limit", fmt.Sprint(*limit))
		}
		ac, err := m.client()
		if err != nil {
			return err
		}
		out, err := listPages(ctx, ac, pathOf("v1", "audit"), q, *cursor, *all, "audit")
		if err != nil {
			return err
		}
		if m.raw() {
			return m.printValue(out)
		}
		entries, err := decodePage[keystore.AuditEntry](out, "audit")
		if err != nil {
			return err
		}
		if err := printAudit(c.stdout, entries); err != nil {
			return err
		}
		if out.HasMore {
			fmt.Fprintf(c.stderr, "More entries: add --cursor %s (or --all).\n", out.NextCursor)
		}
		return nil
	})
}

// auditTime reads an RFC 3339 time, or a duration meaning that long
// before now, which is what one asks of a log ("the last day").
func auditTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time such as 2026-11-30T12:00:00Z or a duration ago such as 24h", s)
	}
	return now.Add(-d), nil
}

func printAudit(w io.Writer, es []keystore.AuditEntry) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tACTION\tOUTCOME\tSTATUS\tTOKEN\tTARGETS\tCLIENT\tREQUEST ID")
	for _, e := range es {
		token := e.TokenName
		if e.TokenID != "" {
			token += " (" + e.TokenID + ")"
		}
		var targets []string
		for _, k := range slices.Sorted(maps.Keys(e.Targets)) {
			targets = append(targets, k+"="+e.Targets[k])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", fmtTime(e.Time), cell(e.Action), cell(e.Outcome), e.Status,
			cell(token), cell(strings.Join(targets, ",")), cell(e.ClientAddr), cell(e.RequestID))
	}
	return tw.Flush()
}
