// Command keygate runs the Keygate ext_authz server (`keygate serve`) and
// manages tenants, orgs, keys and users through a running server's admin
// API (`keygate tenants|orgs|keys|users|admin-tokens ...`).
//
// It wires configuration, listeners, signals and shutdown; every decision is
// made in the authz and keystore packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	switch {
	case err == nil:
	case errors.Is(err, errDenied):
		os.Exit(exitCode(err))
	default:
		fmt.Fprintln(os.Stderr, "keygate:", err)
		os.Exit(exitCode(err))
	}
}

// cli is what every subcommand is given: its output streams and the
// environment, injected so that tests run commands in-process.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// started is set once a command's flags and arguments were accepted.
	started bool
}

// errUsage marks a command line that could not be understood (exit 2).
var errUsage = errors.New("usage")

// Exit codes, documented in the root command's help.
const (
	exitOK           = 0
	exitFailure      = 1
	exitUsage        = 2
	exitDenied       = 3
	exitNotFound     = 4
	exitConflict     = 5
	exitUnauthorized = 6
)

func exitCode(err error) int {
	var ae *apiError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUsage):
		return exitUsage
	case errors.Is(err, errDenied):
		return exitDenied
	case errors.As(err, &ae):
		switch ae.Status {
		case http.StatusNotFound:
			return exitNotFound
		case http.StatusConflict:
			return exitConflict
		case http.StatusUnauthorized, http.StatusForbidden:
			return exitUnauthorized
		}
	}
	return exitFailure
}

const rootLong = `keygate: API-key authorization for Envoy and Istio (ext_authz)

Management commands (tenants, orgs, keys, users, admin-tokens) talk to a running
server's admin API: --admin-url or KEYGATE_ADMIN_URL (default
http://127.0.0.1:9003); the token from --admin-token-file, else
KEYGATE_ADMIN_TOKEN, else KEYGATE_ADMIN_TOKEN_FILE, else the first file that
exists of: the one serve generated beside the store KEYGATE_STORE (or the
config KEYGATE_CONFIG) names, ./keygate.admin-token,
~/.config/keygate/admin-token. Flags win over the environment, which wins
over defaults. They print a table, or with -o/--output json one JSON object per
command, or yaml.

Exit codes:
  0  success
  1  failure
  2  usage: the command line could not be understood
  3  keygate check: the request would be denied
  4  admin API: not found (404)
  5  admin API: conflict (409)
  6  admin API: unauthorized or forbidden (401, 403)`

// version and revision may be stamped at build time with -ldflags
// "-X main.version=... -X main.revision=...": `make release` stamps its
// version, the Dockerfile both (its build context has no .git to read a
// commit from). Unstamped, buildinfo reads them from the module and VCS.
var version, revision string

// build is what `keygate version` and keygate_build_info report.
func build() buildinfo.Info { return buildinfo.Get(version, revision) }

// newRootCmd builds the command tree; a fresh tree for every run, so that
// flag defaults read the environment given.
func newRootCmd(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:     "keygate",
		Short:   "API-key authorization for Envoy and Istio (ext_authz)",
		Long:    rootLong,
		Version: build().String(),
		// Only reached without a command: "keygate" alone.
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SetOut(c.stderr)
			_ = cmd.Help()
			return fmt.Errorf("%w: no command", errUsage)
		},
		Args:          cobra.NoArgs,
		SilenceErrors: true,
		// run prints the usage of a command line it could not
		// understand; the failure of a command that ran needs none.
		SilenceUsage:     true,
		PersistentPreRun: func(*cobra.Command, []string) { c.started = true },
	}
	root.SetVersionTemplate("keygate {{.Version}}\n")
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %w", errUsage, err) })
	root.AddCommand(
		newServeCmd(c),
		newTenantsCmd(c),
		newOrgsCmd(c),
		newKeysCmd(c),
		newUsersCmd(c),
		newCreditsCmd(c),
		newAdminTokensCmd(c),
		newAuditCmd(c),
		newConfigCmd(c),
		newCheckCmd(c),
		newStoreCmd(c),
		newHealthCmd(c),
		&cobra.Command{
			Use:   "version",
			Short: "print the version",
			Args:  usageArgs(cobra.NoArgs),
			RunE: func(*cobra.Command, []string) error {
				_, err := fmt.Fprintln(c.stdout, "keygate", build())
				return err
			},
		},
	)
	return root
}

// usageArgs marks the errors of an argument check as usage errors.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return fmt.Errorf("%w: %s: %w", errUsage, cmd.CommandPath(), err)
		}
		return nil
	}
}

// newGroupCmd makes a command that only holds subcommands ("keygate keys"):
// alone it is a usage error, "help" prints its help, and an unknown
// subcommand is a usage error.
func newGroupCmd(c *cli, use, short, long string, subs ...*cobra.Command) *cobra.Command {
	g := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && args[0] == "help" {
				return cmd.Help()
			}
			cmd.SetOut(c.stderr)
			_ = cmd.Usage()
			if len(args) == 0 {
				return fmt.Errorf("%w: %s: missing subcommand", errUsage, cmd.CommandPath())
			}
			return fmt.Errorf("%w: %s: unknown subcommand %q", errUsage, cmd.CommandPath(), args[0])
		},
	}
	g.AddCommand(subs...)
	return g
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	c := &cli{stdout: stdout, stderr: stderr, getenv: getenv}
	root := newRootCmd(c)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return nil
	}
	// Errors before a command ran are cobra's: unknown commands, bad
	// arguments.
	if !c.started {
		if cmd != nil {
			cmd.SetOut(stderr)
			_ = cmd.Usage()
		}
		if !errors.Is(err, errUsage) {
			err = fmt.Errorf("%w: %w", errUsage, err)
		}
	}
	return err
}
