package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/keystore"
)

const storeLong = `Copy keys between a bbolt file and the configured store.

Usage:
  keygate store migrate --from-bbolt FILE [--config FILE] [--etcd ENDPOINTS]
      copy a bbolt file into the configured store (etcd, for replicas)
  keygate store migrate --to-bbolt FILE [--config FILE] [--etcd ENDPOINTS]
      copy the configured store into a new bbolt file (back from etcd)

The configured store is the config file's (store.path or store.etcd), or
the etcd at --etcd. It must be empty when copied into. Stop the server that
uses the bbolt file first: it holds the file's lock, and it holds recent
credit spending and last-used times in memory until it flushes them.`

func newStoreCmd(c *cli) *cobra.Command {
	migrate := &cobra.Command{
		Use:   "migrate (--from-bbolt FILE | --to-bbolt FILE) [--config FILE] [--etcd ENDPOINTS]",
		Short: "copy keys between a bbolt file and etcd",
		Long:  storeLong,
		Args:  usageArgs(cobra.NoArgs),
	}
	fs := migrate.Flags()
	cfgFile := fs.String("config", c.getenv("KEYGATE_CONFIG"), "YAML config `file` naming the store (env KEYGATE_CONFIG)")
	etcd := fs.String("etcd", c.getenv("KEYGATE_ETCD_ENDPOINTS"), "etcd `endpoints`, comma-separated, overriding the config's (env KEYGATE_ETCD_ENDPOINTS)")
	from := fs.String("from-bbolt", "", "copy this bbolt `file` into the configured store")
	to := fs.String("to-bbolt", "", "copy the configured store into this new bbolt `file`")
	migrate.RunE = func(cmd *cobra.Command, _ []string) error {
		if (*from == "") == (*to == "") {
			cmd.SetOut(c.stderr)
			_ = cmd.Usage()
			return fmt.Errorf("%w: give exactly one of --from-bbolt and --to-bbolt", errUsage)
		}
		return runStoreMigrate(cmd.Context(), *cfgFile, *etcd, *from, *to, c)
	}
	return newGroupCmd(c, "store", "copy keys between a bbolt file and etcd", storeLong, migrate)
}

// runStoreMigrate moves a store between backends; keystore.Copy does the
// work.
func runStoreMigrate(ctx context.Context, cfgFile, etcd, from, to string, c *cli) error {
	cfg, err := config.Load(cfgFile)
	if err != nil {
		return err
	}
	if etcd != "" {
		cfg.Store.Etcd.Endpoints = strings.Split(etcd, ",")
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	file := from + to
	if !cfg.UsesEtcd() && cfg.Store.Path == file {
		return fmt.Errorf("%w: %s is the configured store itself", errUsage, file)
	}
	bolt, err := keystore.OpenBolt(file, from != "", 0)
	if err != nil {
		return err
	}
	defer bolt.Close()
	configured, err := cfg.OpenBackend(keystore.Options{ReadOnly: to != ""}, log)
	if err != nil {
		return err
	}
	defer configured.Close()
	dst, src := configured, bolt
	if to != "" {
		dst, src = bolt, configured
	}
	st, err := keystore.Copy(ctx, dst, src)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "copied %d tenants, %d orgs, %d users, %d keys (%d records) from %s to %s\n", st.Tenants, st.Orgs, st.Users, st.Keys, st.Records, src, dst)
	return nil
}
