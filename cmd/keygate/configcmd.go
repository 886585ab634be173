package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/config"
)

func newConfigCmd(c *cli) *cobra.Command {
	return newGroupCmd(c, "config", "check config files", "Check config files with the code serve loads them with.",
		&cobra.Command{
			Use:   "validate FILE",
			Short: "check a config file; print every problem with its line",
			Long: "Check a config file with the same code serve loads it with, so a file that\n" +
				"validates is a file serve accepts; print every problem with its line.",
			Args: usageArgs(cobra.ExactArgs(1)),
			RunE: func(_ *cobra.Command, args []string) error { return runConfigValidate(args[0], c) },
		})
}

// runConfigValidate checks a config file.
func runConfigValidate(file string, c *cli) error {
	cfg, err := config.Load(file)
	if err != nil {
		for _, e := range config.Unjoin(err) {
			fmt.Fprintln(c.stderr, e)
		}
		return fmt.Errorf("config %s is not valid", file)
	}
	fmt.Fprintf(c.stdout, "%s: ok (%d routes)\n", file, len(cfg.Routes))
	return nil
}
