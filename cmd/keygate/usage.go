package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/keystore"
)

// keyUsageAnswer is the answer of GET /v1/keys/ID/usage.
type keyUsageAnswer struct {
	KeyID       string                 `json:"key_id"`
	Granularity string                 `json:"granularity"`
	Data        []keystore.UsageBucket `json:"data"`
}

// keysUsage shows a key's usage per hour or day, with a bar per bucket.
func keysUsage(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "usage ID [--from T] [--to T] [--granularity hour|day]", "show a key's usage per hour or day")
	period := newUsageFlags(m)
	return m.runs(func(ctx context.Context, args []string) error {
		pos, err := m.parse(args, "ID")
		if err != nil {
			return err
		}
		q, err := period.query(m)
		if err != nil {
			return err
		}
		return show(ctx, m, "GET", pathOf("v1", "keys", pos[0], "usage"), q, nil, printKeyUsage)
	})
}

// usageFlags are a usage series' --from, --to and --granularity.
type usageFlags struct{ from, to, gran *string }

func newUsageFlags(m *mgmtCommand) usageFlags {
	return usageFlags{
		from: m.fs.String("from", "", "start `time`, RFC 3339 or a date such as 2026-11-01 (default: 24 hours or 30 days before --to)"),
		to:   m.fs.String("to", "", "end `time`, exclusive, RFC 3339 or a date (default: now)"),
		gran: m.fs.String("granularity", "hour", "bucket `size`: hour or day"),
	}
}

// query is the series' query string.
func (u usageFlags) query(m *mgmtCommand) (url.Values, error) {
	if *u.gran != "hour" && *u.gran != "day" {
		return nil, m.usageErr("--granularity %q: want hour or day", *u.gran)
	}
	q := url.Values{"granularity": {*u.gran}}
	for name, v := range map[string]string{"from": *u.from, "to": *u.to} {
		if v != "" {
			q.Set(name, v)
		}
	}
	return q, nil
}

// barWidth is the longest bar of the usage chart, in cells.
const barWidth = 40

// printKeyUsage prints one line per bucket: its counts and a bar of its
// requests (allowed and refused) scaled to the busiest bucket, drawn in
// eighths of a cell so that small differences still show.
func printKeyUsage(w io.Writer, u keyUsageAnswer) error {
	layout, head := "2006-01-02 15:04", "HOUR (UTC)"
	if u.Granularity == "day" {
		layout, head = "2006-01-02", "DAY (UTC)"
	}
	var most, sum int64
	var tot keystore.UsageCounts
	for _, b := range u.Data {
		most = max(most, requests(b.UsageCounts))
		tot.Allowed += b.Allowed
		tot.Denied401 += b.Denied401
		tot.Denied403 += b.Denied403
		tot.Denied429 += b.Denied429
		tot.Credits += b.Credits
	}
	tw := newTable(w)
	fmt.Fprintf(tw, "%s\tALLOWED\t401\t403\t429\tCREDITS\tREQUESTS\n", head)
	for _, b := range u.Data {
		n := requests(b.UsageCounts)
		sum += n
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", b.Start.UTC().Format(layout),
			b.Allowed, b.Denied401, b.Denied403, b.Denied429, b.Credits, bar(n, most))
	}
	fmt.Fprintf(tw, "TOTAL\t%d\t%d\t%d\t%d\t%d\t%d\n", tot.Allowed, tot.Denied401, tot.Denied403, tot.Denied429, tot.Credits, sum)
	return tw.Flush()
}

func requests(c keystore.UsageCounts) int64 {
	return c.Allowed + c.Denied401 + c.Denied403 + c.Denied429
}

var eighths = []rune(" ▏▎▍▌▋▊▉")

// bar draws n of most in up to barWidth cells; any n above zero shows.
func bar(n, most int64) string {
	if n <= 0 || most <= 0 {
		return ""
	}
	e := max(n*barWidth*8/most, 1)
	s := strings.Repeat("█", int(e/8))
	if r := e % 8; r > 0 {
		s += string(eighths[r])
	}
	return s
}
