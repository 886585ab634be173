// Package connlimit owns one thing: how many connections a listener holds
// open at once. Keygate gives each of its listeners (gRPC, HTTP, admin) its
// own cap, below the process's open-file limit, so that a flood of
// connections on one of them cannot take the file descriptors the others,
// the store and the logs need.
//
// When a listener is full, a new connection is accepted and closed at once
// (with a reset where the connection allows it) instead of being left in the
// kernel's accept queue. Left there, a flood would fill the queue with
// clients that wait until their own timeouts, and a legitimate client
// arriving after it would wait behind them; closed at once, every client
// learns immediately, the descriptor is returned within the same Accept, and
// the listener serves again as soon as one of its connections ends.
// Rejections are counted (Rejected) and logged at most once per interval,
// never once per connection, so that a flood cannot also flood the log.
package connlimit

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// DefaultLogEvery is how often, at most, a full listener says so in the log.
const DefaultLogEvery = 10 * time.Second

// Listener is a net.Listener that holds at most Limit connections open at
// once. Its methods are safe for concurrent use.
type Listener struct {
	net.Listener
	limit    int64
	log      *slog.Logger // nil: no log
	logEvery time.Duration

	active   atomic.Int64
	rejected atomic.Uint64
	// lastLog (unix nanoseconds) and loggedRejected (the count at that log
	// line) keep the log to one line per logEvery under any flood.
	lastLog        atomic.Int64
	loggedRejected atomic.Uint64
}

// New caps l at limit open connections. log, if not nil, receives one
// warning per DefaultLogEvery at most while connections are being refused.
func New(l net.Listener, limit int, log *slog.Logger) (*Listener, error) {
	if l == nil {
		return nil, errors.New("connlimit: no listener")
	}
	if limit < 1 {
		return nil, fmt.Errorf("connlimit: limit %d for %s: must be at least 1", limit, l.Addr())
	}
	return &Listener{Listener: l, limit: int64(limit), log: log, logEvery: DefaultLogEvery}, nil
}

// Limit is the most connections held open at once.
func (l *Listener) Limit() int { return int(l.limit) }

// Active is how many accepted connections are open now.
func (l *Listener) Active() int { return int(l.active.Load()) }

// Rejected is how many connections have been closed at once because the
// listener was full, since New.
func (l *Listener) Rejected() uint64 { return l.rejected.Load() }

// Accept waits for a connection that fits under the limit. Connections
// arriving while the listener is full are closed here and never returned.
// Errors of the underlying listener are returned as they are (a server's
// Accept loop knows which of them to retry).
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.take() {
			return l.wrap(c), nil
		}
		l.reject(c)
	}
}

// take claims a slot if one is free. The count never goes above the
// limit, not even for an instant, so Active (and the metric that reports
// it) never shows more connections than the limit allows.
func (l *Listener) take() bool {
	for {
		n := l.active.Load()
		if n >= l.limit {
			return false
		}
		if l.active.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// reject closes c at once. A zero linger turns the close into a reset: the
// client sees the refusal immediately (not as an orderly end it might wait
// on), and this side keeps no TIME_WAIT state per refused connection.
func (l *Listener) reject(c net.Conn) {
	if lc, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = lc.SetLinger(0)
	}
	_ = c.Close()
	n := l.rejected.Add(1)
	if l.log == nil {
		return
	}
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if last != 0 && now-last < int64(l.logEvery) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	since := n - l.loggedRejected.Swap(n)
	l.log.Warn("connection limit reached: new connections are closed at once",
		"addr", l.Addr().String(), "limit", l.limit, "rejected", since, "rejected_total", n)
}

// wrap returns c counted against the limit until its first Close. A TCP
// connection keeps its own methods (CloseWrite, which net/http uses to end
// a response cleanly; ReadFrom and WriteTo; SyscallConn): only Close is
// replaced.
func (l *Listener) wrap(c net.Conn) net.Conn {
	if tc, ok := c.(*net.TCPConn); ok {
		return &tcpConn{TCPConn: tc, l: l}
	}
	return &conn{Conn: c, l: l}
}

// release gives back a slot, once per connection however often it is
// closed (net/http and grpc-go may both close a connection on shutdown).
func (l *Listener) release(done *atomic.Bool) {
	if done.CompareAndSwap(false, true) {
		l.active.Add(-1)
	}
}

type conn struct {
	net.Conn
	l      *Listener
	closed atomic.Bool
}

// Close closes the connection before its slot is given back, so that the
// count never runs ahead of the descriptors actually open.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.l.release(&c.closed)
	return err
}

type tcpConn struct {
	*net.TCPConn
	l      *Listener
	closed atomic.Bool
}

func (c *tcpConn) Close() error {
	err := c.TCPConn.Close()
	c.l.release(&c.closed)
	return err
}
