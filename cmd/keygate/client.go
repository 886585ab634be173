package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/keygate/keygate/internal/admintoken"
	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/internal/secret"
)

// Defaults of the management commands, shared with serve's: the admin
// listener's default address (the token file serve generates beside the
// default store is admintoken.DefaultFile).
const (
	defaultAdminURL     = "http://127.0.0.1:9003"
	adminRequestTimeout = 30 * time.Second
	// maxAdminResponse bounds what the CLI reads from the server: a full
	// page of 1000 keys with metadata is well below it.
	maxAdminResponse = 64 << 20
)

// mgmtCommand is one management subcommand being run: its flags, including
// the ones every such subcommand shares, and the streams it writes to.
type mgmtCommand struct {
	c   *cli
	cmd *cobra.Command
	fs  *pflag.FlagSet

	adminURL  string
	tokenFile string
	output    string
}

// newMgmtCommand makes the command "keygate <group> <use>"; use is its
// usage line within its group, e.g. "get ID". Its RunE is the caller's.
func newMgmtCommand(c *cli, use, short string) *mgmtCommand {
	m := &mgmtCommand{c: c, cmd: &cobra.Command{Use: use, Short: short, Args: cobra.ArbitraryArgs}}
	fs := m.cmd.Flags()
	fs.StringVar(&m.adminURL, "admin-url", envOr(c, "KEYGATE_ADMIN_URL", defaultAdminURL), "admin API base `URL` (env KEYGATE_ADMIN_URL)")
	fs.StringVar(&m.tokenFile, "admin-token-file", envOr(c, admintoken.EnvFile, admintoken.DefaultFile),
		"`file` holding the admin token, read when KEYGATE_ADMIN_TOKEN is not set (env KEYGATE_ADMIN_TOKEN_FILE)")
	fs.StringVarP(&m.output, "output", "o", "table", "output `format`: table, json or yaml")
	_ = m.cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	m.fs = fs
	return m
}

// runs sets the command's action and returns the command.
func (m *mgmtCommand) runs(f func(ctx context.Context, args []string) error) *cobra.Command {
	m.cmd.RunE = func(cmd *cobra.Command, args []string) error { return f(cmd.Context(), args) }
	return m.cmd
}

func (m *mgmtCommand) name() string { return m.cmd.CommandPath() }

func (m *mgmtCommand) usage() {
	m.cmd.SetOut(m.c.stderr)
	_ = m.cmd.Usage()
}

func envOr(c *cli, name, def string) string {
	if v := c.getenv(name); v != "" {
		return v
	}
	return def
}

// parse checks that exactly the positional arguments named in want were
// given (cobra has parsed the flags, wherever they were), and the output
// format.
func (m *mgmtCommand) parse(pos []string, want ...string) ([]string, error) {
	if len(pos) != len(want) {
		m.usage()
		if len(pos) < len(want) {
			return nil, fmt.Errorf("%w: %s: missing %s", errUsage, m.name(), want[len(pos)])
		}
		return nil, fmt.Errorf("%w: %s: unexpected argument %q", errUsage, m.name(), pos[len(want)])
	}
	for i, p := range pos {
		if p == "" {
			return nil, fmt.Errorf("%w: %s: empty %s", errUsage, m.name(), want[i])
		}
	}
	switch m.output {
	case "table", "json", "yaml":
	default:
		return nil, fmt.Errorf("%w: %s: --output %q: want table, json or yaml", errUsage, m.name(), m.output)
	}
	return pos, nil
}

// required reports a usage error unless every named flag was set.
func (m *mgmtCommand) required(names ...string) error {
	for _, n := range names {
		if !m.isSet(n) {
			m.usage()
			return fmt.Errorf("%w: %s: missing --%s", errUsage, m.name(), n)
		}
	}
	return nil
}

// isSet reports whether the flag was given on the command line, which for
// updates is what "change this field" means.
func (m *mgmtCommand) isSet(name string) bool {
	return m.fs.Changed(name)
}

func (m *mgmtCommand) usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", errUsage, m.name(), fmt.Sprintf(format, args...))
}

// raw reports whether the answer is printed as it came (json, yaml) rather
// than as a table.
func (m *mgmtCommand) raw() bool { return m.output != "table" }

// printRaw prints an admin API answer in the output format.
func (m *mgmtCommand) printRaw(raw []byte) error {
	if m.output == "yaml" {
		return printYAML(m.c.stdout, raw)
	}
	return printRaw(m.c.stdout, raw)
}

// printValue prints output the CLI assembles itself in the output format.
func (m *mgmtCommand) printValue(v any) error {
	if m.output == "yaml" {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		return printYAML(m.c.stdout, b)
	}
	return printValue(m.c.stdout, v)
}

// client returns an admin API client for the flags given.
func (m *mgmtCommand) client() (*adminClient, error) {
	u, err := url.Parse(m.adminURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, m.usageErr("--admin-url %q: want an http or https URL such as %s", m.adminURL, defaultAdminURL)
	}
	token, err := m.token()
	if err != nil {
		return nil, err
	}
	return &adminClient{
		base:  strings.TrimRight(u.String(), "/"),
		token: token,
		http:  &http.Client{Timeout: adminRequestTimeout},
	}, nil
}

// token finds the admin token. A --admin-token-file given on this command
// line wins, since it is the most specific choice; otherwise
// KEYGATE_ADMIN_TOKEN, then KEYGATE_ADMIN_TOKEN_FILE, then the first token
// file that exists of tokenFiles.
func (m *mgmtCommand) token() (secret.Value, error) {
	files := []string{m.tokenFile}
	if !m.isSet("admin-token-file") {
		if t := strings.TrimSpace(m.c.getenv(admintoken.EnvToken)); t != "" {
			return secret.New(t), nil
		}
		if m.c.getenv(admintoken.EnvFile) == "" {
			files = tokenFiles(m.c.getenv)
		}
	}
	var raw []byte
	var err error
	for _, f := range files {
		if raw, err = os.ReadFile(f); !errors.Is(err, os.ErrNotExist) {
			m.tokenFile = f
			break
		}
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		return secret.Value{}, fmt.Errorf("no admin token: set KEYGATE_ADMIN_TOKEN, or give a token file with --admin-token-file "+
			"or KEYGATE_ADMIN_TOKEN_FILE (none of %s exists)", strings.Join(files, ", "))
	case err != nil:
		return secret.Value{}, fmt.Errorf("read admin token: %w", err)
	}
	t := strings.TrimSpace(string(raw))
	if t == "" {
		return secret.Value{}, fmt.Errorf("no admin token: %s is empty; set KEYGATE_ADMIN_TOKEN or write the token to the file", m.tokenFile)
	}
	return secret.New(t), nil
}

// tokenFiles are where the CLI looks for the token serve generated, when
// it is told of none: beside the store KEYGATE_STORE names, or else the one
// the config file (KEYGATE_CONFIG) names; beside the default store; and in
// the user's config directory (~/.config/keygate/admin-token), for a CLI
// run from elsewhere.
func tokenFiles(getenv func(string) string) []string {
	var out []string
	if store := getenv("KEYGATE_STORE"); store != "" {
		out = append(out, admintoken.File(store))
	} else if path := getenv("KEYGATE_CONFIG"); path != "" {
		if cfg, err := config.Load(path); err == nil && cfg.Store.Path != "" {
			out = append(out, admintoken.File(cfg.Store.Path))
		}
	}
	if !slices.Contains(out, admintoken.DefaultFile) {
		out = append(out, admintoken.DefaultFile)
	}
	if dir, err := os.UserConfigDir(); err == nil {
		out = append(out, filepath.Join(dir, "keygate", "admin-token"))
	}
	return out
}

// adminClient calls the admin HTTP API.
type adminClient struct {
	base  string
	token secret.Value
	http  *http.Client
}

// apiError is an error answer of the admin API.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("admin API: %d %s: %s", e.Status, e.Code, e.Message)
	if e.Status == http.StatusUnauthorized {
		msg += " (check KEYGATE_ADMIN_TOKEN or --admin-token-file)"
	}
	return msg
}

// do sends a request with body (nil: none) as JSON and returns the response
// body of a 2xx answer; any other answer is an *apiError.
func (ac *adminClient) do(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := ac.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("admin API request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+ac.token.Reveal())
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := ac.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("admin API at %s: %w (is keygate serve running? see --admin-url)", ac.base, err)
		}
		// The URL in err carries no secret: ids only, the token is a header.
		return nil, fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminResponse+1))
	if err != nil {
		return nil, fmt.Errorf("admin API %s %s: read response: %w", method, path, err)
	}
	if len(raw) > maxAdminResponse {
		return nil, fmt.Errorf("admin API %s %s: response larger than %d bytes", method, path, maxAdminResponse)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return raw, nil
	}
	return nil, errorAnswer(resp.StatusCode, raw)
}

// errorAnswer is the *apiError of a non-2xx answer with body raw.
func errorAnswer(status int, raw []byte) *apiError {
	e := &apiError{Status: status}
	var eb struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	if json.Unmarshal(raw, &eb) == nil && eb.Error != "" {
		e.Code, e.Message = eb.Code, eb.Error
	} else {
		// Not the admin API's error shape: something else answers at
		// --admin-url (a proxy, another service).
		e.Code = strings.ReplaceAll(strings.ToLower(http.StatusText(status)), " ", "_")
		e.Message = snippet(raw)
	}
	return e
}

// call is do that also decodes the answer into out (when not nil); the raw
// body is still returned, for --output json and yaml.
func (ac *adminClient) call(ctx context.Context, method, path string, query url.Values, body, out any) ([]byte, error) {
	raw, err := ac.do(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("admin API %s %s: decode response: %w", method, path, err)
		}
	}
	return raw, nil
}

// snippet shortens a foreign error body to one line for an error message.
func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		return "(empty response)"
	}
	return s
}

func pathOf(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(p))
	}
	return b.String()
}

// show calls the admin API and prints its answer: the response body as it
// came with --output json (or as YAML), else what table makes of it decoded as T.
func show[T any](ctx context.Context, m *mgmtCommand, method, path string, query url.Values, body any, table func(io.Writer, T) error) error {
	ac, err := m.client()
	if err != nil {
		return err
	}
	var v T
	raw, err := ac.call(ctx, method, path, query, body, &v)
	if err != nil {
		return err
	}
	if m.raw() {
		return m.printRaw(raw)
	}
	return table(m.c.stdout, v)
}
