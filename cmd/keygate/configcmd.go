package main

import (
	"context"
	"fmt"

	"github.com/keygate/keygate/internal/config"
)

const configUsage = `Usage:
  keygate config validate FILE   check a config file; print every problem with its line
`

// runConfig checks config files with the same code serve loads them with,
// so a file that validates is a file serve accepts.
func runConfig(_ context.Context, args []string, c *cli) error {
	if len(args) == 0 || args[0] != "validate" {
		fmt.Fprint(c.stderr, configUsage)
		return fmt.Errorf("%w: want config validate FILE", errUsage)
	}
	if len(args) != 2 {
		fmt.Fprint(c.stderr, configUsage)
		return fmt.Errorf("%w: config validate takes one FILE", errUsage)
	}
	cfg, err := config.Load(args[1])
	if err != nil {
		for _, e := range config.Unjoin(err) {
			fmt.Fprintln(c.stderr, e)
		}
		return fmt.Errorf("config %s is not valid", args[1])
	}
	fmt.Fprintf(c.stdout, "%s: ok (%d routes)\n", args[1], len(cfg.Routes))
	return nil
}
