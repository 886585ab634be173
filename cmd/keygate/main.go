// Command keygate runs the Keygate ext_authz server (`keygate serve`) and
// manages tenants, orgs and keys through a running server's admin API
// (`keygate tenants|orgs|keys ...`).
//
// It wires configuration, listeners, signals and shutdown; every decision is
// made in the authz and keystore packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
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
}

// errUsage marks a command line that could not be understood (exit 2).
var errUsage = errors.New("usage")

func exitCode(err error) int {
	switch {
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errDenied):
		return 3
	}
	return 1
}

const usage = `keygate: API-key authorization for Envoy and Istio (ext_authz)

Usage:
  keygate serve [--config FILE]        run the server
  keygate tenants create|list|get      manage tenants
  keygate orgs create|list|get         manage organizations
  keygate keys create|list|get|update|revoke|rotate|delete|import
                                       manage API keys
  keygate config validate FILE         check a config file
  keygate check [flags]                would this request be allowed? (offline)
  keygate store migrate --from-bbolt FILE | --to-bbolt FILE
                                       copy keys between a bbolt file and etcd
  keygate health [--addr HOST:PORT]     probe the local gRPC health (container HEALTHCHECK)
  keygate version

Management commands talk to a running server's admin API: --admin-url or
KEYGATE_ADMIN_URL (default http://127.0.0.1:9003), token from
KEYGATE_ADMIN_TOKEN, --admin-token-file or ./keygate.admin-token.
Run "keygate COMMAND --help" for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	c := &cli{stdout: stdout, stderr: stderr, getenv: getenv}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return runServe(ctx, rest, c)
	case "tenants":
		return runTenants(ctx, rest, c)
	case "orgs":
		return runOrgs(ctx, rest, c)
	case "keys":
		return runKeys(ctx, rest, c)
	case "config":
		return runConfig(ctx, rest, c)
	case "check":
		return runCheck(ctx, rest, c)
	case "store":
		return runStore(ctx, rest, c)
	case "health":
		return runHealth(ctx, rest, c)
	case "version":
		fmt.Fprintln(stdout, "keygate", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
}
