package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/keystore"
)

// errDenied makes `keygate check` exit 3 when the request would be refused,
// so scripts can branch on it; the decision itself is already printed.
var errDenied = errors.New("request would be denied")

// checkStdin is where --key-stdin reads; tests replace it.
var checkStdin io.Reader = os.Stdin

type headerFlag []string

func (h *headerFlag) String() string     { return strings.Join(*h, "; ") }
func (h *headerFlag) Set(v string) error { *h = append(*h, v); return nil }
func (h *headerFlag) Type() string       { return "string" }

// checkFlags are the flags of `keygate check`.
type checkFlags struct {
	configFile, storePath, method, path, host, peer, output string
	keyStdin                                                bool
	headers, settings                                       headerFlag
}

func newCheckCmd(c *cli) *cobra.Command {
	var f checkFlags
	cmd := &cobra.Command{
		Use:   "check [flags]",
		Short: "would this request be allowed? (offline)",
		Long: `Answer offline whether a request would be allowed, and with which headers,
by running the real engine over a config and a store opened read-only.
Exits 3 when the request would be denied.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return runCheck(cmd.Context(), &f, c) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.configFile, "config", c.getenv("KEYGATE_CONFIG"), "config `file` (env KEYGATE_CONFIG; none: defaults)")
	fs.StringVar(&f.storePath, "store", c.getenv("KEYGATE_STORE"), "store `path` (default: the config's, else ./keygate.db)")
	fs.StringVar(&f.method, "method", "GET", "request `method`")
	fs.StringVar(&f.path, "path", "/", "request `path`, with any query")
	fs.StringVar(&f.host, "host", "", "request `host`")
	fs.StringVar(&f.peer, "peer", "127.0.0.1", "client `address` as Envoy would report it")
	fs.BoolVar(&f.keyStdin, "key-stdin", false, "read the key from standard input and send it in the first configured credential source")
	fs.StringVarP(&f.output, "output", "o", "table", "output `format`: table, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	fs.Var(&f.headers, "header", "request header as `'name: value'` (repeatable)")
	fs.Var(&f.settings, "setting", "Envoy context_extensions entry as `key=value` (repeatable)")
	return cmd
}

// runCheck answers offline whether a request would be allowed, and with
// which headers, by running the real engine over a config and a store. The
// store is opened read-only, so it works beside a stopped server or on a
// copy of a live store; nothing is written (no last-used time).
func runCheck(ctx context.Context, f *checkFlags, c *cli) error {
	switch f.output {
	case "table", "json", "yaml":
	default:
		return fmt.Errorf("%w: check: --output %q: want table, json or yaml", errUsage, f.output)
	}
	cfg, err := config.Load(f.configFile)
	if err != nil {
		return err
	}
	if f.storePath != "" {
		cfg.Store.Path = f.storePath
	}
	req := authz.Request{Method: strings.ToUpper(f.method), Path: f.path, Host: f.host, Peer: f.peer, Headers: map[string]string{}, Settings: map[string]string{}}
	for _, h := range f.headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("%w: --header %q: want 'name: value'", errUsage, h)
		}
		// Joined like Envoy joins a repeated header.
		authz.AddHeader(req.Headers, strings.TrimSpace(name), strings.TrimSpace(value))
	}
	for _, s := range f.settings {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("%w: --setting %q: want key=value", errUsage, s)
		}
		req.Settings[k] = v
	}
	format, err := cfg.Format()
	if err != nil {
		return err
	}
	acfg := cfg.AuthzConfig(format)
	if f.keyStdin {
		line, err := bufio.NewReader(checkStdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read key: %w", err)
		}
		src := authz.DefaultSources[0]
		if len(acfg.Sources) > 0 {
			src = acfg.Sources[0]
		}
		key := strings.TrimSpace(line)
		if src == authz.SourceAuthorization {
			key = "Bearer " + key
		}
		req.Headers[src] = key
	}

	opts := cfg.StoreOptions(format)
	opts.ReadOnly = true
	store, err := cfg.OpenStore(opts, slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		// The hint only where it is the cause: a missing or foreign file is
		// not held by anyone.
		if errors.Is(err, keystore.ErrLocked) {
			return fmt.Errorf("%w (a running keygate holds its store: check against a copy, or stop it)", err)
		}
		return err
	}
	defer store.Close()
	if acfg.Policy, err = cfg.AuthzPolicy(); err != nil {
		return err
	}
	engine, err := authz.New(acfg, store)
	if err != nil {
		return err
	}
	d, derr := engine.Decide(ctx, &req)
	if err := printDecision(c.stdout, f.output, d, derr); err != nil {
		return err
	}
	// A reply (the introspection answer) is Keygate's own 200, not a
	// refusal.
	if d.Kind == authz.KindDeny {
		return errDenied
	}
	return nil
}

// checkResult is what `keygate check --output json` prints.
type checkResult struct {
	Allow           bool              `json:"allow"`
	Kind            string            `json:"kind"` // allow, deny or reply
	Status          int               `json:"status"`
	Reason          authz.Reason      `json:"reason"`
	WouldDeny       authz.Reason      `json:"would_deny,omitempty"`
	Route           string            `json:"route"`
	DecisionID      string            `json:"decision_id"`
	APIKeyID        string            `json:"api_key_id,omitempty"`
	UpstreamSet     map[string]string `json:"upstream_set,omitempty"`
	UpstreamRemove  []string          `json:"upstream_remove,omitempty"`
	ResponseHeaders map[string]string `json:"response_headers,omitempty"`
	Body            string            `json:"body,omitempty"`
	Error           string            `json:"error,omitempty"`
}

func printDecision(w io.Writer, output string, d authz.Decision, derr error) error {
	r := checkResult{
		Allow: d.Allow(), Kind: kindName(d.Kind), Status: d.Status, Reason: d.Reason, WouldDeny: d.WouldDeny,
		Route: d.Route, DecisionID: authz.FormatID(d.ID), UpstreamRemove: d.Remove, Body: d.Body,
	}
	if d.Credential != nil {
		r.APIKeyID = d.Credential.ID
	}
	if derr != nil {
		r.Error = derr.Error()
	}
	toMap := func(hs []authz.Header) map[string]string {
		if len(hs) == 0 {
			return nil
		}
		m := map[string]string{}
		for _, h := range hs {
			m[h.Name] = h.Value
		}
		return m
	}
	r.UpstreamSet, r.ResponseHeaders = toMap(d.Set), toMap(d.ResponseHeaders)
	switch output {
	case "json":
		return json.NewEncoder(w).Encode(r)
	case "yaml":
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		return printYAML(w, b)
	}
	verdict := strings.ToUpper(r.Kind)
	fmt.Fprintf(w, "%s %d %s (route %s, decision %s)\n", verdict, d.Status, d.Reason, d.Route, r.DecisionID)
	if d.WouldDeny != "" {
		fmt.Fprintf(w, "shadow mode: would deny with %s\n", d.WouldDeny)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	for _, h := range d.Set {
		fmt.Fprintf(w, "  set upstream     %s: %s\n", h.Name, h.Value)
	}
	for _, n := range d.Remove {
		fmt.Fprintf(w, "  remove upstream  %s\n", n)
	}
	for _, h := range d.ResponseHeaders {
		fmt.Fprintf(w, "  response header  %s: %s\n", h.Name, h.Value)
	}
	if d.Body != "" {
		fmt.Fprintf(w, "  body             %s\n", d.Body)
	}
	return nil
}

func kindName(k authz.Kind) string {
	switch k {
	case authz.KindAllow:
		return "allow"
	case authz.KindReply:
		return "reply"
	}
	return "deny"
}
