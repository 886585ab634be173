package main

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/keygate/keygate/internal/config"
	"github.com/keygate/keygate/internal/connlimit"
)

// The listeners' connection caps default to shares of the open-file limit
// that leave a reserve free even with all three listeners full: the store,
// the etcd and Redis clients, the logs and the config and token reads must
// still open files while the listeners are flooded.
const (
	fdReserve        = 64   // plus a tenth of the limit
	unknownFileLimit = 4096 // where the OS does not say (not Linux)
	// maxServeConns bounds the derived gRPC and HTTP caps by memory rather
	// than by descriptors: containers often run with a hard limit of a
	// million or more, and each connection holds buffers from its first
	// byte (a gRPC one 64 KiB, an idle HTTP one some 16 KiB), so a cap of a
	// third of a million would let a flood take gigabytes. At this bound a
	// full gRPC listener holds about 512 MiB.
	maxServeConns = 8192
	minServeConns = 16
	// The admin API needs few connections (the CLI, a metrics scraper,
	// probes), but those few must always fit.
	minAdminConns = 16
	maxAdminConns = 1024
	// Prometheus scrapes over one kept-alive connection; a few scrapers
	// and a curl fit many times over, and a listener anyone may reach
	// holds no more descriptors than this.
	defaultMetricsConns = 32
)

// connCaps are the most connections each listener holds open at once.
type connCaps struct{ grpc, http, admin, metrics int }

// defaultConnCaps splits what the reserve leaves of fileLimit (0: unknown)
// between the listeners: gRPC and HTTP 40% each, admin 20%. The metrics
// listener's small fixed cap comes out of the reserve.
func defaultConnCaps(fileLimit uint64) connCaps {
	if fileLimit == 0 {
		fileLimit = unknownFileLimit
	}
	// Linux caps the limit at fs.nr_open; this keeps the arithmetic far
	// from overflowing on any other system.
	fileLimit = min(fileLimit, 1<<32)
	var rest uint64
	if r := fdReserve + fileLimit/10; fileLimit > r {
		rest = fileLimit - r
	}
	share := func(percent uint64, lo, hi int) int {
		return int(min(max(rest*percent/100, uint64(lo)), uint64(hi)))
	}
	return connCaps{
		grpc:  share(40, minServeConns, maxServeConns),
		http:  share(40, minServeConns, maxServeConns),
		admin: share(20, minAdminConns, maxAdminConns),
	}
}

// connectionCaps raises the open-file limit, takes the caps the config
// sets and derives the others, and logs them. It warns when the caps, all
// reached at once, would leave less than the reserve of the limit free: a
// flood on one listener could then starve the rest of the process.
func connectionCaps(cfg *config.Config, log *slog.Logger) connCaps {
	fileLimit, err := raiseFileLimit()
	if err != nil {
		log.Warn("open-file limit", "error", err)
	}
	caps := defaultConnCaps(fileLimit)
	caps.metrics = defaultMetricsConns
	for _, set := range []struct {
		cap *int
		n   int
	}{{&caps.grpc, cfg.Listen.MaxConnections.GRPC}, {&caps.http, cfg.Listen.MaxConnections.HTTP}, {&caps.admin, cfg.Listen.MaxConnections.Admin}, {&caps.metrics, cfg.Listen.MaxConnections.Metrics}} {
		if set.n > 0 {
			*set.cap = set.n
		}
	}
	log.Info("connection limits", "open_files", fileLimitText(fileLimit),
		"grpc", caps.grpc, "http", caps.http, "admin", caps.admin, "metrics", caps.metrics)
	if fileLimit > 0 {
		reserve := fdReserve + fileLimit/10
		if sum := uint64(caps.grpc) + uint64(caps.http) + uint64(caps.admin); sum+reserve > fileLimit {
			log.Warn("the listeners' connection caps leave less than the reserve of the open-file limit free: a flood on one listener can starve the others and the store; raise the limit (ulimit -n, LimitNOFILE) or lower listen.max_connections",
				"open_files", fileLimit, "caps_total", sum, "reserve", reserve)
		}
	}
	return caps
}

func fileLimitText(n uint64) string {
	if n == 0 {
		return "unknown"
	}
	return fmt.Sprint(n)
}

// listenCapped listens on addr with at most limit connections open at once.
func listenCapped(addr string, limit int, log *slog.Logger) (*connlimit.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	capped, err := connlimit.New(ln, limit, log)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return capped, nil
}
