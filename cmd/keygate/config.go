package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

// config is the YAML file of `keygate serve --config`. Every field is
// optional; its zero value means the default in the comment, which are
// DESIGN.md's embedded defaults.
type config struct {
	Store struct {
		Path                 string   `yaml:"path"`                   // ./keygate.db
		CacheMaxBytes        int64    `yaml:"cache_max_bytes"`        // 64 MiB
		NegativeCacheEntries int64    `yaml:"negative_cache_entries"` // 100000; -1 disables
		LastUsedFlush        duration `yaml:"last_used_flush"`        // 10s
	} `yaml:"store"`
	Listen struct {
		GRPC  string `yaml:"grpc"`  // 127.0.0.1:9001
		Admin string `yaml:"admin"` // 127.0.0.1:9003
	} `yaml:"listen"`
	Admin struct {
		// TokenFile holds the admin bearer token. Empty: KEYGATE_ADMIN_TOKEN,
		// else (admin on loopback only) a token generated beside the store.
		TokenFile string `yaml:"token_file"`
	} `yaml:"admin"`
	Keys struct {
		Prefix        string   `yaml:"prefix"`         // ak
		Sources       []string `yaml:"sources"`        // authorization, x-api-key, x-api-token
		AcceptForeign bool     `yaml:"accept_foreign"` // false
		MaxOrgKeys    int      `yaml:"max_org_keys"`   // 5; -1: no limit
		Tiers         []string `yaml:"tiers"`          // standard, enterprise
	} `yaml:"keys"`
	Errors struct {
		Format          string `yaml:"format"`            // simple | problem
		ProblemTypeBase string `yaml:"problem_type_base"` // urn:keygate:error:
		Realm           string `yaml:"realm"`             // keygate
	} `yaml:"errors"`
	Headers struct {
		Tenant      string `yaml:"tenant"`
		Org         string `yaml:"org"`
		User        string `yaml:"user"`
		KeyID       string `yaml:"key_id"`
		KeyName     string `yaml:"key_name"`
		Environment string `yaml:"environment"`
		Tier        string `yaml:"tier"`
		Scopes      string `yaml:"scopes"`
	} `yaml:"headers"`
	Log struct {
		Level  string `yaml:"level"`  // info
		Format string `yaml:"format"` // text | json
	} `yaml:"log"`
	ShutdownTimeout duration `yaml:"shutdown_timeout"` // 15s
}

// duration reads "10s"-style YAML values.
type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = duration(v)
	return nil
}

const (
	defaultStorePath   = "./keygate.db"
	defaultGRPCListen  = "127.0.0.1:9001"
	defaultAdminListen = "127.0.0.1:9003"
)

// loadConfig reads path (none: defaults only). Unknown fields are errors, so
// a typo does not silently fall back to a default.
func loadConfig(path string) (*config, error) {
	cfg := &config{}
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if cfg.Store.Path == "" {
		cfg.Store.Path = defaultStorePath
	}
	if cfg.Listen.GRPC == "" {
		cfg.Listen.GRPC = defaultGRPCListen
	}
	if cfg.Listen.Admin == "" {
		cfg.Listen.Admin = defaultAdminListen
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = duration(15 * time.Second)
	}
	return cfg, nil
}

// format returns the configured key format.
func (c *config) format() (apikey.Format, error) {
	p := c.Keys.Prefix
	if p == "" {
		p = apikey.DefaultPrefix
	}
	f, err := apikey.NewFormat(p)
	if err != nil {
		return apikey.Format{}, fmt.Errorf("config keys.prefix: %w", err)
	}
	return f, nil
}

func (c *config) storeOptions(f apikey.Format) keystore.Options {
	return keystore.Options{
		Format:               f,
		MaxOrgKeys:           c.Keys.MaxOrgKeys,
		Tiers:                c.Keys.Tiers,
		CacheMaxBytes:        c.Store.CacheMaxBytes,
		NegativeCacheEntries: c.Store.NegativeCacheEntries,
		LastUsedFlush:        time.Duration(c.Store.LastUsedFlush),
	}
}

func (c *config) authzConfig(f apikey.Format) authz.Config {
	h := c.Headers
	return authz.Config{
		Format:            f,
		Sources:           c.Keys.Sources,
		AcceptForeignKeys: c.Keys.AcceptForeign,
		Headers: authz.IdentityHeaders{
			Tenant: h.Tenant, Org: h.Org, User: h.User, KeyID: h.KeyID, KeyName: h.KeyName,
			Environment: h.Environment, Tier: h.Tier, Scopes: h.Scopes,
		},
		Errors: authz.ErrorStyle{
			Format:          c.Errors.Format,
			ProblemTypeBase: c.Errors.ProblemTypeBase,
			Realm:           c.Errors.Realm,
		},
	}
}

func (c *config) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if c.Log.Level != "" {
		if err := level.UnmarshalText([]byte(c.Log.Level)); err != nil {
			return nil, fmt.Errorf("config log.level: %w", err)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.Log.Format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("config log.format %q: want text or json", c.Log.Format)
}

// isLoopback reports whether a listen address only accepts local
// connections. An empty host listens on every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// defaultTokenFile is where serve keeps a generated admin token and where the
// CLI looks for one: beside the store, "./keygate.admin-token" for the
// default store.
func defaultTokenFile(storePath string) string {
	return strings.TrimSuffix(storePath, filepath.Ext(storePath)) + ".admin-token"
}
