package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/config"
)

// With every listener at its derived cap, the reserve of the file limit
// stays free, down to limits too small to hold the minimums; the admin
// listener always gets its few connections; memory, not descriptors,
// bounds the caps of large limits.
func TestDefaultConnCaps(t *testing.T) {
	for _, tt := range []struct {
		limit uint64
		want  connCaps
	}{
		{256, connCaps{grpc: 66, http: 66, admin: 33}},
		{1024, connCaps{grpc: 343, http: 343, admin: 171}},
		{20000, connCaps{grpc: 7174, http: 7174, admin: 1024}},
		{1 << 20, connCaps{grpc: maxServeConns, http: maxServeConns, admin: maxAdminConns}},
		{1 << 62, connCaps{grpc: maxServeConns, http: maxServeConns, admin: maxAdminConns}},
		{100, connCaps{grpc: minServeConns, http: minServeConns, admin: minAdminConns}},
		{0, defaultConnCaps(unknownFileLimit)},
	} {
		got := defaultConnCaps(tt.limit)
		if got != tt.want {
			t.Errorf("defaultConnCaps(%d) = %+v, want %+v", tt.limit, got, tt.want)
		}
	}
	for limit := uint64(160); limit <= 1<<16; limit = limit*5/4 + 1 {
		c := defaultConnCaps(limit)
		if sum := uint64(c.grpc + c.http + c.admin); sum+fdReserve+limit/10 > limit {
			t.Errorf("limit %d: caps %+v leave less than the reserve free", limit, c)
		}
		if c.admin < minAdminConns {
			t.Errorf("limit %d: admin cap %d", limit, c.admin)
		}
	}
}

// The config's caps win over the derived ones, field by field, and caps
// that would eat into the reserve are warned about.
func TestConnectionCapsFromConfig(t *testing.T) {
	cfg, err := config.Parse("keygate.yaml", []byte("listen:\n  max_connections: {grpc: 5000, admin: 8}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	caps := connectionCaps(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	limit, _ := raiseFileLimit()
	if want := defaultConnCaps(limit).http; caps.grpc != 5000 || caps.admin != 8 || caps.http != want {
		t.Errorf("caps %+v, want grpc 5000, admin 8 and the derived http %d", caps, want)
	}
	if !strings.Contains(logs.String(), `msg="connection limits"`) || !strings.Contains(logs.String(), "grpc=5000 http=") {
		t.Errorf("log: %s", &logs)
	}
	if limit > 0 && limit < 5000 && !strings.Contains(logs.String(), "leave less than the reserve") {
		t.Errorf("caps over the file limit %d and no warning: %s", limit, &logs)
	}
}

func TestListenConfigRefusesNegativeValues(t *testing.T) {
	_, err := config.Parse("keygate.yaml", []byte("listen:\n  max_connections:\n    grpc: -1\n    http: 0\n    admin: -5\n  idle_timeout: -1s\n"))
	if err == nil {
		t.Fatal("negative caps and idle timeout accepted")
	}
	for _, want := range []string{
		"keygate.yaml:3: listen.max_connections.grpc: must not be negative",
		"keygate.yaml:5: listen.max_connections.admin: must not be negative",
		"keygate.yaml:6: listen.idle_timeout: must not be negative",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v\nlacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "max_connections.http") {
		t.Errorf("0 (derived) refused: %v", err)
	}
	cfg, err := config.Parse("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(cfg.Listen.IdleTimeout); got != 2*time.Minute {
		t.Errorf("default idle timeout %v, want 2m", got)
	}
}
