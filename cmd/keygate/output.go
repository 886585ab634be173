package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keygate/keygate/keystore"
)

// printRaw writes an API answer as one line of JSON: scripts read exactly
// one object per command.
func printRaw(w io.Writer, raw []byte) error {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return fmt.Errorf("admin API answer is not JSON: %w", err)
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// printValue writes v as one line of JSON, for output the CLI assembles
// itself (deletes, --all listings).
func printValue(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// printYAML writes a JSON answer as a YAML document, fields in the order
// they came.
func printYAML(w io.Writer, raw []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("admin API answer is not JSON: %w", err)
	}
	blockStyle(&doc)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// blockStyle drops the flow style and quoting JSON parsed as YAML has, so
// that the output reads as YAML; the encoder still quotes a string that
// would read as another type ("true", "42").
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// cell keeps a value on its table line: the server validates names, but a
// tab, newline or terminal escape from anywhere would garble the table.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return '?'
		}
		return r
	}, s)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimePtr(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return fmtTime(*t)
}

func printTenants(w io.Writer, ts []keystore.Tenant) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tCREATED")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", cell(t.ID), cell(t.Name), fmtTime(t.CreatedAt))
	}
	return tw.Flush()
}

func printOrgs(w io.Writer, orgs []keystore.Org) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tTENANT\tNAME\tCREATED")
	for _, o := range orgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cell(o.ID), cell(o.TenantID), cell(o.Name), fmtTime(o.CreatedAt))
	}
	return tw.Flush()
}

// printKeys lists keys one per line. STATUS is the state a client would
// see now (expired, or revoked at the end of a grace period), not only the
// stored status.
func printKeys(w io.Writer, ks []keystore.Key, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tENV\tTIER\tSTATUS\tORG\tEXPIRES")
	for _, k := range ks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(k.ID), cell(k.Name), cell(k.DisplayPrefix),
			cell(k.Environment), cell(k.Tier), cell(string(k.StateAt(now))), cell(k.OrgID), fmtTimePtr(k.ExpiresAt, "never"))
	}
	return tw.Flush()
}

// printKey shows one key, a field per line.
func printKey(w io.Writer, k keystore.Key, now time.Time) error {
	tw := newTable(w)
	row := func(label, value string) { fmt.Fprintf(tw, "%s\t%s\n", label, value) }
	row("ID", cell(k.ID))
	row("Name", cell(k.Name))
	row("Prefix", cell(k.DisplayPrefix))
	row("Tenant", cell(k.TenantID))
	row("Org", cell(k.OrgID))
	if k.UserID != "" {
		row("User", cell(k.UserID))
	}
	row("Environment", cell(k.Environment))
	row("Tier", cell(k.Tier))
	row("Scopes", cell(strings.Join(k.Scopes, ",")))
	// Shown even when empty: "any" tells an operator auditing a key that
	// it is not locked to a network, which a missing line would not.
	allowed := "any"
	if len(k.AllowedCIDRs) > 0 {
		allowed = strings.Join(k.AllowedCIDRs, ",")
	}
	row("Allowed IPs", cell(allowed))
	// Only the key's own limits: its tier's are in the server's config.
	for i, l := range limitLines(k.Limits) {
		label := ""
		if i == 0 {
			label = "Limits"
		}
		row(label, cell(l))
	}
	state := string(k.StateAt(now))
	if string(k.Status) != state {
		state += " (stored: " + string(k.Status) + ")"
	}
	row("Status", cell(state))
	if k.Slot != "" {
		row("Slot", cell(k.Slot))
	}
	if k.Imported {
		row("Imported", "yes")
	}
	row("Created", fmtTime(k.CreatedAt))
	row("Expires", fmtTimePtr(k.ExpiresAt, "never"))
	row("Last used", fmtTimePtr(k.LastUsedAt, "never"))
	if k.RevokedAt != nil {
		// A rotation's grace period sets a revocation time still ahead.
		label := "Revoked at"
		if k.RevokedAt.After(now) {
			label = "Revokes at"
		}
		row(label, fmtTime(*k.RevokedAt))
	}
	if k.RotatedTo != "" {
		row("Rotated to", cell(k.RotatedTo))
	}
	if len(k.Metadata) > 0 {
		var kv []string
		for _, name := range slices.Sorted(maps.Keys(k.Metadata)) {
			kv = append(kv, name+"="+k.Metadata[name])
		}
		row("Metadata", cell(strings.Join(kv, ",")))
	}
	if k.CreditsRemaining != nil {
		row("Credits", strconv.FormatInt(*k.CreditsRemaining, 10))
	}
	if k.Refill != nil {
		row("Refill", cell(fmtRefill(*k.Refill)))
		row("Last refill", fmtTimePtr(k.LastRefillAt, "never"))
	}
	if len(k.CreditsReserved) > 0 {
		// Slices held by processes, a crashed one's included: what an
		// operator settles with --set or --add.
		var held []string
		for _, holder := range slices.Sorted(maps.Keys(k.CreditsReserved)) {
			held = append(held, holder+"="+strconv.FormatInt(k.CreditsReserved[holder], 10))
		}
		row("Credits reserved", cell(strings.Join(held, ",")))
	}
	return tw.Flush()
}

// fmtRefill writes a schedule as "monthly on day 1 to 100000" or "daily to
// 500".
func fmtRefill(r keystore.Refill) string {
	to := " to " + strconv.FormatInt(r.Amount, 10)
	if r.Interval == keystore.RefillMonthly {
		return "monthly on day " + strconv.Itoa(max(r.Day, 1)) + to
	}
	return r.Interval + to
}

// printCreatedKey shows a new key and its secret, which the server returns
// this once and cannot show again.
func printCreatedKey(w io.Writer, k keystore.CreatedKey, now time.Time) error {
	if err := printKey(w, k.Key, now); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nAPI key (shown once, it will not be shown again; store it now):\n%s\n", cell(k.Secret.Reveal()))
	return err
}

// list is the admin API's envelope of a plain list.
type list[T any] struct {
	Data []T `json:"data"`
}

func printTenant(w io.Writer, t keystore.Tenant) error { return printTenants(w, []keystore.Tenant{t}) }

func printOrg(w io.Writer, o keystore.Org) error { return printOrgs(w, []keystore.Org{o}) }

func printKeyNow(w io.Writer, k keystore.Key) error { return printKey(w, k, time.Now()) }

func printCreatedKeyNow(w io.Writer, k keystore.CreatedKey) error {
	return printCreatedKey(w, k, time.Now())
}
