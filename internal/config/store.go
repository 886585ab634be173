package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/etcdstore"
)

// etcdConfig is store.etcd: with endpoints set, the keys live in etcd,
// shared by every replica, instead of in store.path.
type etcdConfig struct {
	Endpoints    []string `yaml:"endpoints"`     // none: the bbolt file
	Prefix       string   `yaml:"prefix"`        // /keygate/
	DialTimeout  Duration `yaml:"dial_timeout"`  // 5s
	ReplicaTTL   Duration `yaml:"replica_ttl"`   // 10s
	ReplicaID    string   `yaml:"replica_id"`    // host name and a random suffix
	Username     string   `yaml:"username"`      // none
	PasswordFile string   `yaml:"password_file"` // none
	CAFile       string   `yaml:"ca_file"`       // system roots (https endpoints)
	CertFile     string   `yaml:"cert_file"`     // no client certificate
	KeyFile      string   `yaml:"key_file"`
}

// UsesEtcd reports whether the store is etcd rather than the bbolt file.
func (c *Config) UsesEtcd() bool { return len(c.Store.Etcd.Endpoints) > 0 }

// StoreName names the store for logs: the file, or etcd's endpoints.
func (c *Config) StoreName() string {
	if c.UsesEtcd() {
		return "etcd " + strings.Join(c.Store.Etcd.Endpoints, ",")
	}
	return c.Store.Path
}

func (c *Config) validateStore(p *problems) {
	e := c.Store.Etcd
	if !c.UsesEtcd() {
		if e.Prefix != "" || e.DialTimeout != 0 || e.ReplicaTTL != 0 || e.ReplicaID != "" || e.Username != "" ||
			e.PasswordFile != "" || e.CAFile != "" || e.CertFile != "" || e.KeyFile != "" {
			p.add("store.etcd.endpoints", errors.New("set endpoints to use etcd (the other etcd settings need them)"))
		}
		return
	}
	for i, ep := range e.Endpoints {
		if err := validEndpoint(ep); err != nil {
			p.add(fmt.Sprintf("store.etcd.endpoints[%d]", i), err)
		}
	}
	if e.DialTimeout < 0 {
		p.add("store.etcd.dial_timeout", errors.New("must not be negative"))
	}
	if e.ReplicaTTL != 0 && time.Duration(e.ReplicaTTL) < 2*time.Second {
		p.add("store.etcd.replica_ttl", errors.New("must be at least 2s (etcd's shortest lease)"))
	}
	if strings.Contains(e.ReplicaID, "/") {
		p.add("store.etcd.replica_id", errors.New("must not contain '/'"))
	}
	if e.PasswordFile != "" && e.Username == "" {
		p.add("store.etcd.password_file", errors.New("needs username"))
	}
	if _, err := c.etcdTLS(); err != nil {
		p.add("store.etcd", err)
	}
	if e.PasswordFile != "" {
		if _, err := os.ReadFile(e.PasswordFile); err != nil {
			p.add("store.etcd.password_file", err)
		}
	}
}

// validEndpoint accepts what etcd's client does: a URL with scheme http or
// https, or host:port.
func validEndpoint(ep string) error {
	if !strings.Contains(ep, "://") {
		_, _, err := net.SplitHostPort(ep)
		return err
	}
	u, err := url.Parse(ep)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("endpoint %q: want an http:// or https:// URL, or host:port", ep)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return fmt.Errorf("endpoint %q: %w", ep, err)
	}
	return nil
}

func (c *Config) etcdTLS() (*tls.Config, error) {
	e := c.Store.Etcd
	https := false
	for _, ep := range e.Endpoints {
		https = https || strings.HasPrefix(ep, "https://")
	}
	if !https && e.CAFile == "" && e.CertFile == "" && e.KeyFile == "" {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CAFile != "" {
		pem, err := os.ReadFile(e.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate", e.CAFile)
		}
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		return nil, errors.New("set both cert_file and key_file, or neither")
	}
	if e.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// OpenBackend opens the configured store's backend (opts.ReadOnly and
// opts.StartUnavailable apply): the bbolt file, or etcd, which must answer
// within its dial timeout unless opts.StartUnavailable.
func (c *Config) OpenBackend(opts keystore.Options, log *slog.Logger) (keystore.Backend, error) {
	if !c.UsesEtcd() {
		return keystore.OpenBoltWith(c.Store.Path, keystore.BoltOptions{ReadOnly: opts.ReadOnly, Logger: log})
	}
	e := c.Store.Etcd
	t, err := c.etcdTLS()
	if err != nil {
		return nil, fmt.Errorf("store.etcd: %w", err)
	}
	var password string
	if e.PasswordFile != "" {
		b, err := os.ReadFile(e.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("store.etcd.password_file: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	return etcdstore.Open(etcdstore.Config{
		Endpoints:   e.Endpoints,
		Prefix:      e.Prefix,
		DialTimeout: time.Duration(e.DialTimeout),
		TLS:         t,
		Username:    e.Username,
		Password:    password,
		ReplicaTTL:  time.Duration(e.ReplicaTTL),
		ReplicaID:   e.ReplicaID,
		Logger:      log,
		// A server keeps trying; a command fails at once.
		StartWithoutEtcd: opts.StartUnavailable,
	})
}

// OpenStore opens the configured store.
func (c *Config) OpenStore(opts keystore.Options, log *slog.Logger) (*keystore.Store, error) {
	if opts.Logger == nil {
		opts.Logger = log
	}
	b, err := c.OpenBackend(opts, log)
	if err != nil {
		return nil, err
	}
	s, err := keystore.New(b, opts)
	if err != nil {
		b.Close()
		return nil, err
	}
	return s, nil
}
