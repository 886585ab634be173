package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/keystore"
)

const storeLong = `Back up the running server's store; copy keys between a bbolt file and the
configured store.

Usage:
  keygate store backup FILE [--force] [--admin-url URL] [--admin-token-file FILE]
      write a consistent copy of the running server's store (bbolt or etcd)
      to FILE, a bbolt file, while it serves (bootstrap admin token only)
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
	return newGroupCmd(c, "store", "back up the store; copy keys between a bbolt file and etcd", storeLong, migrate, newStoreBackupCmd(c))
}

func newStoreBackupCmd(c *cli) *cobra.Command {
	m := newMgmtCommand(c, "backup FILE [--force]", "write a consistent copy of the running server's store to FILE")
	force := m.fs.Bool("force", false, "replace FILE if it exists")
	return m.runs(func(ctx context.Context, args []string) error {
		pos, err := m.parse(args, "FILE")
		if err != nil {
			return err
		}
		file := pos[0]
		if !*force {
			if _, err := os.Lstat(file); err == nil {
				return fmt.Errorf("%s: %s exists; give --force to replace it", m.name(), file)
			}
		}
		ac, err := m.client()
		if err != nil {
			return err
		}
		n, err := backupTo(ctx, ac, file, *force)
		if err != nil {
			return err
		}
		if m.raw() {
			return m.printValue(struct {
				File  string `json:"file"`
				Bytes int64  `json:"bytes"`
			}{file, n})
		}
		fmt.Fprintf(c.stdout, "backed up the store to %s (%d bytes)\n", file, n)
		return nil
	})
}

// backupTo writes the server's copy of its store to file: into a temporary
// file beside it, checked whole (the length the server announced, bbolt's
// consistency check, the schema) and synced before it takes the name, so
// that FILE is never a partial copy.
func backupTo(ctx context.Context, ac *adminClient, file string, force bool) (n int64, err error) {
	dir := filepath.Dir(file)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ac.base+"/v1/store/backup", nil)
	if err != nil {
		return 0, fmt.Errorf("admin API request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+ac.token.Reveal())
	// A large store takes longer than one admin request may: only the
	// caller's context bounds the copy.
	hc := *ac.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return 0, fmt.Errorf("admin API at %s: %w (is keygate serve running? see --admin-url)", ac.base, err)
		}
		return 0, fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxAdminResponse))
		return 0, errorAnswer(resp.StatusCode, raw)
	}
	n, err = io.Copy(tmp, resp.Body)
	if err != nil {
		return n, fmt.Errorf("backup: read the copy: %w", err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("backup: the copy was cut short: %d of %d bytes", n, resp.ContentLength)
	}
	if err := tmp.Sync(); err != nil {
		return n, fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return n, fmt.Errorf("backup: %w", err)
	}
	if err := keystore.VerifyBackup(ctx, tmp.Name()); err != nil {
		return n, fmt.Errorf("backup: the copy is not whole: %w", err)
	}
	if force {
		err = os.Rename(tmp.Name(), file)
	} else {
		// A link fails if file appeared meanwhile, where a rename would
		// replace it.
		if err = os.Link(tmp.Name(), file); err == nil {
			err = os.Remove(tmp.Name())
		}
	}
	if err != nil {
		return n, fmt.Errorf("backup: %w", err)
	}
	done = true
	return n, syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("backup: sync %s: %w", dir, err)
	}
	return nil
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
	// The configured store first: a bbolt store a server holds fails here,
	// before a new file is created that would then be left empty.
	configured, err := cfg.OpenBackend(keystore.Options{ReadOnly: to != ""}, log)
	if err != nil {
		if errors.Is(err, keystore.ErrLocked) && to != "" {
			return fmt.Errorf("%w (to copy a running server's store, use keygate store backup %s)", err, to)
		}
		return err
	}
	defer configured.Close()
	created := false
	if to != "" {
		_, statErr := os.Stat(to)
		created = errors.Is(statErr, os.ErrNotExist)
	}
	bolt, err := keystore.OpenBolt(file, from != "", 0)
	if err != nil {
		return err
	}
	defer bolt.Close()
	dst, src := configured, bolt
	if to != "" {
		dst, src = bolt, configured
	}
	st, err := keystore.Copy(ctx, dst, src)
	if err != nil {
		if created {
			// Nothing of it is worth keeping, and a half-written file
			// in the way fails the next try as not empty.
			bolt.Close()
			os.Remove(to)
		}
		return err
	}
	fmt.Fprintf(c.stdout, "copied %d tenants, %d orgs, %d users, %d keys (%d records) from %s to %s\n", st.Tenants, st.Orgs, st.Users, st.Keys, st.Records, src, dst)
	return nil
}
