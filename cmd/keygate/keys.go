package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
)

const keysLong = `Manage API keys through the admin API.

Usage:
  keygate keys create --tenant ID [--org ID] [--user ID] --name NAME [--scopes a,b]
                      [--env live|test] [--tier TIER] [--expires-in 720h] [--slot NAME]
                      [--metadata k=v,k2=v2] [--credits N] [--allowed-ips CIDR,IP]
                      [--refill daily:AMOUNT | monthly:DAY:AMOUNT]
                      [--limit NAME=REQ/WINDOW[,algorithm=token_bucket][,burst=N] ...]
  keygate keys list [--tenant ID] [--org ID] [--status S] [--limit N] [--cursor C] [--all]
  keygate keys get ID
  keygate keys update ID [--name N] [--scopes a,b] [--tier T] [--status active|inactive]
                         [--expires-in D | --expires-at RFC3339 | --no-expiry]
                         [--allowed-ips CIDR,IP | --clear-allowed-ips]
                         [--refill daily:AMOUNT | monthly:DAY:AMOUNT | --no-refill]
                         [--limit NAME=REQ/WINDOW ... | --clear-limits]
  keygate keys revoke ID
  keygate keys rotate ID [--grace 1h]
  keygate keys credits ID (--add N | --set N)
  keygate keys delete ID
  keygate keys usage ID [--from T] [--to T] [--granularity hour|day]
  keygate keys import --tenant ID [--org ID] --name NAME --key-stdin [--env E] [--tier T]
                      [--scopes a,b] [--display-prefix P] [--allowed-ips CIDR,IP]
                      [--limit NAME=REQ/WINDOW ...]
      (or --key-sha256 HEX for a key known only by its hash; --key RAW also
      works but leaves the secret in shell history)

A key's --limit replaces its tier's limit of that name or adds one;
--limit per_day=0 turns the tier's per_day off for this key.

Every subcommand also takes --admin-url, --admin-token-file and
-o/--output table|json|yaml. Run "keygate keys SUBCOMMAND --help" for details.`

// keyStdin is where "keys import --key-stdin" reads the key; a variable so
// that tests can supply one.
var keyStdin io.Reader = os.Stdin

// maxImportKeyLen bounds what --key-stdin reads; the server accepts keys of
// at most 256 bytes.
const maxImportKeyLen = 4096

// The request bodies the key commands send, with the admin API's exact
// field names (it refuses any other). Optional fields are left out when not
// given; pointers tell "not given" from an empty value.
type (
	// keySpecRequest is the part of a key's settings create and import
	// share.
	keySpecRequest struct {
		TenantID     string            `json:"tenant_id"`
		OrgID        string            `json:"org_id,omitempty"`
		UserID       string            `json:"user_id,omitempty"`
		Name         string            `json:"name"`
		Environment  string            `json:"environment,omitempty"`
		Tier         string            `json:"tier,omitempty"`
		Scopes       *[]string         `json:"scopes,omitempty"`
		ExpiresIn    string            `json:"expires_in,omitempty"`
		Metadata     map[string]string `json:"metadata,omitempty"`
		AllowedCIDRs []string          `json:"allowed_cidrs,omitempty"`
		// Limits are the key's own named limits.
		Limits map[string]ratelimit.Limit `json:"limits,omitempty"`
	}
	// createKeyRequest is the body of POST /v1/keys.
	createKeyRequest struct {
		keySpecRequest
		Slot             string           `json:"slot,omitempty"`
		CreditsRemaining *int64           `json:"credits_remaining,omitempty"`
		Refill           *keystore.Refill `json:"refill,omitempty"`
	}
	// importKeyRequest is the body of POST /v1/keys/import.
	importKeyRequest struct {
		keySpecRequest
		Key           string `json:"key,omitempty"`
		KeySHA256     string `json:"key_sha256,omitempty"`
		DisplayPrefix string `json:"display_prefix,omitempty"`
	}
	// updateKeyRequest is the body of PATCH /v1/keys/ID.
	updateKeyRequest struct {
		Name         *string          `json:"name,omitempty"`
		Scopes       *[]string        `json:"scopes,omitempty"`
		Tier         *string          `json:"tier,omitempty"`
		Status       *string          `json:"status,omitempty"`
		ExpiresIn    string           `json:"expires_in,omitempty"`
		ExpiresAt    *time.Time       `json:"expires_at,omitempty"`
		ClearExpiry  bool             `json:"clear_expiry,omitempty"`
		AllowedCIDRs *[]string        `json:"allowed_cidrs,omitempty"`
		Refill       *keystore.Refill `json:"refill,omitempty"`
		ClearRefill  bool             `json:"clear_refill,omitempty"`
		// Limits replaces the key's own limits; an empty map clears them.
		Limits *map[string]ratelimit.Limit `json:"limits,omitempty"`
	}
	// creditsRequest is the body of POST /v1/keys/ID/credits: one of the
	// two.
	creditsRequest struct {
		Add *int64 `json:"add,omitempty"`
		Set *int64 `json:"set,omitempty"`
	}
	// rotateRequest is the body of POST /v1/keys/ID/rotate.
	rotateRequest struct {
		GracePeriod string `json:"grace_period,omitempty"`
	}
)

func newKeysCmd(c *cli) *cobra.Command {
	return newGroupCmd(c, "keys", "manage API keys", keysLong,
		keysCreate(c), keysList(c), keysGet(c), keysUpdate(c), keysRevoke(c),
		keysRotate(c), keysCredits(c), keysDelete(c), keysImport(c), keysUsage(c))
}

// keysCredits refills (--add, negative to take away) or sets a key's
// prepaid balance.
func keysCredits(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "credits ID (--add N | --set N)", "add to or set a key's prepaid credits")
	add := m.fs.Int64("add", 0, "credits to add (negative to remove, down to zero)")
	set := m.fs.Int64("set", 0, "balance to set; makes an unmetered key metered")
	return m.runs(func(ctx context.Context, args []string) error {
		return keyCommand(ctx, m, args, "POST", []string{"credits"}, func() (any, error) {
			switch {
			case m.isSet("add") == m.isSet("set"):
				return nil, m.usageErr("give exactly one of --add and --set")
			case m.isSet("add"):
				return creditsRequest{Add: add}, nil
			}
			return creditsRequest{Set: set}, nil
		})
	})
}

// commaList parses "a,b" flags; an empty value is an empty list, which for
// update means "no scopes".
func commaList(s string) []string {
	out := []string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// metadataFlag collects --metadata k=v,k2=v2, repeatable.
type metadataFlag map[string]string

func (m metadataFlag) String() string {
	var kv []string
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	return strings.Join(kv, ",")
}

func (m metadataFlag) Type() string { return "k=v,..." }

func (m metadataFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return fmt.Errorf("%q: want key=value", p)
		}
		m[strings.TrimSpace(k)] = v
	}
	return nil
}

// specFlags are the key settings create and import share.
type specFlags struct {
	tenant, org, user, name string
	scopes, env, tier       string
	expiresIn               time.Duration
	metadata                metadataFlag
	allowedIPs              string
	limits                  limitFlag
}

func addSpecFlags(m *mgmtCommand) *specFlags {
	f := &specFlags{metadata: metadataFlag{}, limits: limitFlag{}}
	m.fs.StringVar(&f.tenant, "tenant", "", "`ID` of the tenant the key belongs to (required)")
	m.fs.StringVar(&f.org, "org", "", "org `ID` for an org-level key (default: a tenant-level key)")
	m.fs.StringVar(&f.user, "user", "", "user `ID` the key acts for, sent upstream as x-user-id")
	m.fs.StringVar(&f.name, "name", "", "key `name` (required)")
	m.fs.StringVar(&f.scopes, "scopes", "", "comma-separated `scopes`, e.g. vault:read,vault:write")
	m.fs.StringVar(&f.env, "env", "", "key `environment`: live or test (default live)")
	m.fs.StringVar(&f.tier, "tier", "", "rate-limit `tier`, e.g. standard or enterprise (default: the first configured)")
	m.fs.DurationVar(&f.expiresIn, "expires-in", 0, "lifetime, e.g. 720h (default: no expiry)")
	m.fs.Var(f.metadata, "metadata", "free-form `key=value` pairs, comma-separated or repeated")
	m.fs.StringVar(&f.allowedIPs, "allowed-ips", "", allowedIPsHelp)
	m.fs.Var(f.limits, "limit", limitHelp)
	return f
}

const allowedIPsHelp = "comma-separated client `networks` the key works from, CIDRs or addresses, e.g. 10.0.0.0/8,2001:db8::1 (default: any)"

// parseAllowedIPs parses --allowed-ips. An empty value is refused rather than
// taken as "no restriction": it is what an unset shell variable gives, and
// silently opening a key to every address is the wrong way to fail.
func parseAllowedIPs(m *mgmtCommand, value, clearHint string) ([]string, error) {
	l := commaList(value)
	if len(l) == 0 {
		return nil, m.usageErr("--allowed-ips is empty%s", clearHint)
	}
	return l, nil
}

// request is the spec as the admin API takes it, with only the fields
// given.
func (f *specFlags) request(m *mgmtCommand) (keySpecRequest, error) {
	if err := m.required("tenant", "name"); err != nil {
		return keySpecRequest{}, err
	}
	b := keySpecRequest{TenantID: f.tenant, Name: f.name, OrgID: f.org, UserID: f.user, Environment: f.env, Tier: f.tier}
	if m.isSet("scopes") {
		l := commaList(f.scopes)
		b.Scopes = &l
	}
	if m.isSet("expires-in") {
		if f.expiresIn <= 0 {
			return keySpecRequest{}, m.usageErr("--expires-in must be positive")
		}
		b.ExpiresIn = f.expiresIn.String()
	}
	if len(f.metadata) > 0 {
		b.Metadata = map[string]string(f.metadata)
	}
	if len(f.limits) > 0 {
		b.Limits = map[string]ratelimit.Limit(f.limits)
	}
	if m.isSet("allowed-ips") {
		l, err := parseAllowedIPs(m, f.allowedIPs, " (leave it out to allow any address)")
		if err != nil {
			return keySpecRequest{}, err
		}
		b.AllowedCIDRs = l
	}
	return b, nil
}

func keysCreate(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "create --tenant ID --name NAME", "create a key; its secret is shown once")
	spec := addSpecFlags(m)
	slot := m.fs.String("slot", "", "slot `name` holding one key: creating a key in it revokes the slot's previous key")
	credits := m.fs.Int64("credits", 0, "prepaid request `credits` (default: unmetered)")
	refill := m.fs.String("refill", "", refillHelp+" (default: --credits, or the amount)")
	return m.runs(func(ctx context.Context, args []string) error {
		if _, err := m.parse(args); err != nil {
			return err
		}
		var schedule *keystore.Refill
		if m.isSet("refill") {
			r, err := parseRefill(m, *refill)
			if err != nil {
				return err
			}
			schedule = &r
		}
		spec, err := spec.request(m)
		if err != nil {
			return err
		}
		body := createKeyRequest{keySpecRequest: spec, Slot: *slot, Refill: schedule}
		if m.isSet("credits") {
			body.CreditsRemaining = credits
		}
		return show(ctx, m, "POST", pathOf("v1", "keys"), nil, body, printCreatedKeyNow)
	})
}

// rawPage is a listing page with its keys kept as sent, so that --output
// json passes on fields this build does not know.
type rawPage struct {
	Data       []json.RawMessage `json:"data"`
	NextCursor string            `json:"next_cursor,omitempty"`
	HasMore    bool              `json:"has_more"`
}

// listPages lists path from cursor: one page, or with all every page after
// it, following next_cursor; what names the listing in errors ("keys").
func listPages(ctx context.Context, ac *adminClient, path string, q url.Values, cursor string, all bool, what string) (rawPage, error) {
	out := rawPage{Data: []json.RawMessage{}}
	next := cursor
	for {
		if next != "" {
			q.Set("cursor", next)
		}
		var p rawPage
		if _, err := ac.call(ctx, "GET", path, q, nil, &p); err != nil {
			return rawPage{}, err
		}
		out.Data = append(out.Data, p.Data...)
		out.HasMore, out.NextCursor = p.HasMore, p.NextCursor
		if !all || !p.HasMore {
			return out, nil
		}
		// A cursor that does not move would loop forever.
		if p.NextCursor == "" || p.NextCursor == next {
			return rawPage{}, fmt.Errorf("admin API: list %s: has_more without a new next_cursor", what)
		}
		next = p.NextCursor
	}
}

// decodePage decodes a listing's entries.
func decodePage[T any](p rawPage, what string) ([]T, error) {
	out := make([]T, 0, len(p.Data))
	for _, r := range p.Data {
		var v T
		if err := json.Unmarshal(r, &v); err != nil {
			return nil, fmt.Errorf("admin API: list %s: decode: %w", what, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func keysList(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "list", "list keys")
	tenant := m.fs.String("tenant", "", "only keys of the tenant with this `ID`")
	org := m.fs.String("org", "", "only keys of the org with this `ID`")
	status := m.fs.String("status", "", "only keys in this `state`: active, inactive, revoked or expired")
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
		ac, err := m.client()
		if err != nil {
			return err
		}
		q := url.Values{}
		for name, v := range map[string]string{"tenant_id": *tenant, "org_id": *org, "status": *status} {
			if v != "" {
				q.Set(name, v)
			}
		}
		if *limit > 0 {
			q.Set("limit", fmt.Sprint(*limit))
		}
		out, err := listPages(ctx, ac, pathOf("v1", "keys"), q, *cursor, *all, "keys")
		if err != nil {
			return err
		}
		if m.raw() {
			return m.printValue(out)
		}
		keys, err := decodePage[keystore.Key](out, "keys")
		if err != nil {
			return err
		}
		if err := printKeys(c.stdout, keys, time.Now()); err != nil {
			return err
		}
		if out.HasMore {
			fmt.Fprintf(c.stderr, "More keys: add --cursor %s (or --all).\n", out.NextCursor)
		}
		return nil
	})
}

// keyCommand runs a command on one key id whose answer is a key.
func keyCommand(ctx context.Context, m *mgmtCommand, args []string, method string, suffix []string, body func() (any, error)) error {
	pos, err := m.parse(args, "ID")
	if err != nil {
		return err
	}
	var b any
	if body != nil {
		if b, err = body(); err != nil {
			return err
		}
	}
	return show(ctx, m, method, pathOf(append([]string{"v1", "keys", pos[0]}, suffix...)...), nil, b, printKeyNow)
}

func keysGet(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "get ID", "show a key")
	return m.runs(func(ctx context.Context, args []string) error {
		return keyCommand(ctx, m, args, "GET", nil, nil)
	})
}

func keysRevoke(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "revoke ID", "revoke a key")
	return m.runs(func(ctx context.Context, args []string) error {
		return keyCommand(ctx, m, args, "POST", []string{"revoke"}, nil)
	})
}

func keysUpdate(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "update ID", "change a key's settings")
	name := m.fs.String("name", "", "new `name`")
	scopes := m.fs.String("scopes", "", "new comma-separated `scopes` (replaces them all; \"\" removes them)")
	tier := m.fs.String("tier", "", "new rate-limit `tier`")
	status := m.fs.String("status", "", "`status`: active or inactive (revoke with \"keys revoke\")")
	expiresIn := m.fs.Duration("expires-in", 0, "expire this long from now, e.g. 720h")
	expiresAt := m.fs.String("expires-at", "", "expire at this RFC 3339 `time`, e.g. 2030-01-02T15:04:05Z")
	noExpiry := m.fs.Bool("no-expiry", false, "remove the expiry")
	ips := m.fs.String("allowed-ips", "", "comma-separated client `networks` the key works from, CIDRs or addresses (replaces the list)")
	clearIPs := m.fs.Bool("clear-allowed-ips", false, "remove the IP allowlist: the key works from any address")
	refill := m.fs.String("refill", "", refillHelp+" (replaces the schedule; the first refill is at the next boundary)")
	noRefill := m.fs.Bool("no-refill", false, "remove the refill schedule (the balance stays)")
	limits := limitFlag{}
	m.fs.Var(limits, "limit", limitHelp+"; replaces the key's limits")
	clearLimits := m.fs.Bool("clear-limits", false, "remove the key's own limits: its tier's apply unchanged")
	return m.runs(func(ctx context.Context, args []string) error {
		return keyCommand(ctx, m, args, "PATCH", nil, func() (any, error) {
			var b updateKeyRequest
			n := 0
			for _, f := range []string{"expires-in", "expires-at", "no-expiry"} {
				if m.isSet(f) {
					n++
				}
			}
			if n > 1 {
				return nil, m.usageErr("give at most one of --expires-in, --expires-at and --no-expiry")
			}
			if m.isSet("allowed-ips") && *clearIPs {
				return nil, m.usageErr("give --allowed-ips or --clear-allowed-ips, not both")
			}
			switch {
			case m.isSet("refill") && *noRefill:
				return nil, m.usageErr("give --refill or --no-refill, not both")
			case m.isSet("refill"):
				r, err := parseRefill(m, *refill)
				if err != nil {
					return nil, err
				}
				b.Refill = &r
			case *noRefill:
				b.ClearRefill = true
			}
			if m.isSet("name") {
				b.Name = name
			}
			if m.isSet("scopes") {
				l := commaList(*scopes)
				b.Scopes = &l
			}
			if m.isSet("tier") {
				b.Tier = tier
			}
			if m.isSet("status") {
				b.Status = status
			}
			switch {
			case m.isSet("allowed-ips"):
				l, err := parseAllowedIPs(m, *ips, " (use --clear-allowed-ips to allow any address)")
				if err != nil {
					return nil, err
				}
				b.AllowedCIDRs = &l
			case *clearIPs:
				b.AllowedCIDRs = &[]string{}
			}
			switch {
			case m.isSet("limit") && *clearLimits:
				return nil, m.usageErr("give --limit or --clear-limits, not both")
			case m.isSet("limit"):
				l := map[string]ratelimit.Limit(limits)
				b.Limits = &l
			case *clearLimits:
				b.Limits = &map[string]ratelimit.Limit{}
			}
			switch {
			case m.isSet("expires-in"):
				if *expiresIn <= 0 {
					return nil, m.usageErr("--expires-in must be positive")
				}
				b.ExpiresIn = expiresIn.String()
			case m.isSet("expires-at"):
				t, err := time.Parse(time.RFC3339, *expiresAt)
				if err != nil {
					return nil, m.usageErr("--expires-at %q: want an RFC 3339 time such as 2030-01-02T15:04:05Z", *expiresAt)
				}
				b.ExpiresAt = &t
			case *noExpiry:
				b.ClearExpiry = true
			}
			if b == (updateKeyRequest{}) {
				m.usage()
				return nil, m.usageErr("nothing to update: give at least one flag")
			}
			return b, nil
		})
	})
}

const refillHelp = "credit refill `schedule`: daily:AMOUNT (at 00:00 UTC) or monthly:DAY:AMOUNT (00:00 UTC on DAY, 1 to 31, in shorter months their last day); sets the balance to AMOUNT"

// parseRefill parses --refill: "daily:AMOUNT" or "monthly:DAY:AMOUNT". The
// server checks the ranges; this only gives a usage error for a shape it
// cannot send.
func parseRefill(m *mgmtCommand, v string) (keystore.Refill, error) {
	bad := func() (keystore.Refill, error) {
		return keystore.Refill{}, m.usageErr("--refill %q: want daily:AMOUNT or monthly:DAY:AMOUNT, e.g. monthly:1:100000", v)
	}
	parts := strings.Split(v, ":")
	var r keystore.Refill
	var err error
	switch {
	case len(parts) == 2 && parts[0] == keystore.RefillDaily:
		r.Interval = keystore.RefillDaily
		r.Amount, err = strconv.ParseInt(parts[1], 10, 64)
	case len(parts) == 3 && parts[0] == keystore.RefillMonthly:
		r.Interval = keystore.RefillMonthly
		if r.Day, err = strconv.Atoi(parts[1]); err != nil || r.Day < 1 || r.Day > 31 {
			return bad()
		}
		r.Amount, err = strconv.ParseInt(parts[2], 10, 64)
	default:
		return bad()
	}
	if err != nil || r.Amount < 0 {
		return bad()
	}
	return r, nil
}

func keysRotate(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "rotate ID [--grace 1h]", "replace a key with a new one; its secret is shown once")
	grace := m.fs.Duration("grace", 0, "keep the old key working this long, e.g. 1h (default: revoke it at once)")
	return m.runs(func(ctx context.Context, args []string) error {
		pos, err := m.parse(args, "ID")
		if err != nil {
			return err
		}
		if *grace < 0 {
			return m.usageErr("--grace must not be negative")
		}
		ac, err := m.client()
		if err != nil {
			return err
		}
		var body any
		if *grace > 0 {
			body = rotateRequest{GracePeriod: grace.String()}
		}
		var k keystore.CreatedKey
		raw, err := ac.call(ctx, "POST", pathOf("v1", "keys", pos[0], "rotate"), nil, body, &k)
		if err != nil {
			return err
		}
		if m.raw() {
			return m.printRaw(raw)
		}
		if err := printCreatedKey(c.stdout, k, time.Now()); err != nil {
			return err
		}
		if *grace > 0 {
			_, err = fmt.Fprintf(c.stdout, "The old key %s keeps working for %s.\n", cell(pos[0]), *grace)
		} else {
			_, err = fmt.Fprintf(c.stdout, "The old key %s is revoked.\n", cell(pos[0]))
		}
		return err
	})
}

func keysDelete(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "delete ID", "delete a key")
	return m.runs(func(ctx context.Context, args []string) error {
		pos, err := m.parse(args, "ID")
		if err != nil {
			return err
		}
		ac, err := m.client()
		if err != nil {
			return err
		}
		if _, err := ac.call(ctx, "DELETE", pathOf("v1", "keys", pos[0]), nil, nil, nil); err != nil {
			return err
		}
		if m.raw() {
			return m.printValue(struct {
				ID      string `json:"id"`
				Deleted bool   `json:"deleted"`
			}{pos[0], true})
		}
		_, err = fmt.Fprintf(c.stdout, "Deleted key %s.\n", cell(pos[0]))
		return err
	})
}

func keysImport(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "import (--tenant ID --name NAME (--key-stdin | --key-sha256 HEX | --key RAW) | --file KEYS.jsonl)", "import an existing key, or many from an NDJSON file")
	spec := addSpecFlags(m)
	key := m.fs.String("key", "", "the raw `key` (prefer --key-stdin: this leaves the key in shell history)")
	keySHA := m.fs.String("key-sha256", "", "hex SHA-256 of the key, for systems that kept only hashes")
	keyFromStdin := m.fs.Bool("key-stdin", false, "read the raw key from standard input")
	display := m.fs.String("display-prefix", "", "`prefix` shown in listings for a --key-sha256 import")
	file := m.fs.String("file", "", "import every line of this NDJSON `file` (- for standard input), each an import object as the admin API takes it; exit 1 if any line fails")
	return m.runs(func(ctx context.Context, args []string) error {
		if _, err := m.parse(args); err != nil {
			return err
		}
		if m.isSet("file") {
			return keysImportFile(ctx, m, *file)
		}
		n := 0
		for _, f := range []string{"key", "key-sha256", "key-stdin"} {
			if m.isSet(f) {
				n++
			}
		}
		if n != 1 {
			m.usage()
			return m.usageErr("give exactly one of --key-stdin, --key-sha256 and --key")
		}
		spec, err := spec.request(m)
		if err != nil {
			return err
		}
		body := importKeyRequest{keySpecRequest: spec, DisplayPrefix: *display}
		switch {
		case m.isSet("key"):
			body.Key = *key
		case m.isSet("key-sha256"):
			body.KeySHA256 = strings.ToLower(strings.TrimSpace(*keySHA))
		case *keyFromStdin:
			raw, err := io.ReadAll(io.LimitReader(keyStdin, maxImportKeyLen+1))
			if err != nil {
				return fmt.Errorf("read key from standard input: %w", err)
			}
			if len(raw) > maxImportKeyLen {
				return fmt.Errorf("read key from standard input: more than %d bytes", maxImportKeyLen)
			}
			k := strings.TrimSpace(string(raw))
			if k == "" {
				return fmt.Errorf("read key from standard input: no key given")
			}
			body.Key = k
		default:
			return m.usageErr("--key-stdin=false: give the key another way")
		}
		return show(ctx, m, "POST", pathOf("v1", "keys", "import"), nil, body, printKeyNow)
	})
}
