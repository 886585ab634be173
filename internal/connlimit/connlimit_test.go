package connlimit

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/syncbuf"
)

// serve caps a loopback listener at limit and hands out what Accept
// returns until the test ends.
func serve(t *testing.T, limit int, log *slog.Logger, logEvery time.Duration) (*Listener, <-chan net.Conn) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(inner, limit, log)
	if err != nil {
		t.Fatal(err)
	}
	l.logEvery = logEvery
	accepted := make(chan net.Conn, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		close(accepted)
		for c := range accepted {
			c.Close()
		}
	})
	return l, accepted
}

func dial(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refusedAt dials l and reports whether the connection was closed by the
// server at once: a reset can already fail the connect, when the server
// accepted and closed it before the client looked at the outcome.
func refusedAt(t *testing.T, l net.Listener) bool {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return closedByServer(t, c, 5*time.Second)
}

// closedByServer reports whether the server closed c (EOF or reset) within
// wait, rather than holding it open.
func closedByServer(t *testing.T, c net.Conn, wait time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return false
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return true
	default:
		t.Fatalf("read: %v", err)
		return false
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func receive(t *testing.T, accepted <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-accepted:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

// A full listener closes new connections at once, counts them, and serves
// again as soon as one of its connections is closed; closing a connection
// twice gives back one slot, not two.
func TestFullListenerRefusesAtOnceAndRecovers(t *testing.T) {
	l, accepted := serve(t, 2, nil, DefaultLogEvery)
	dial(t, l)
	dial(t, l)
	a, _ := receive(t, accepted), receive(t, accepted)
	if got := l.Active(); got != 2 {
		t.Fatalf("Active = %d, want 2", got)
	}

	start := time.Now()
	if !refusedAt(t, l) {
		t.Fatal("a connection past the limit was held open")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("refusal took %v, want at once", took)
	}
	waitFor(t, "Rejected() == 1", func() bool { return l.Rejected() == 1 })
	if got := l.Active(); got != 2 {
		t.Fatalf("Active = %d after a refusal, want 2", got)
	}

	for range 3 {
		a.Close()
	}
	if got := l.Active(); got != 1 {
		t.Fatalf("Active = %d after closing one connection three times, want 1", got)
	}
	held := dial(t, l)
	receive(t, accepted)
	if closedByServer(t, held, 200*time.Millisecond) {
		t.Fatal("a connection under the limit was closed")
	}
	if !refusedAt(t, l) {
		t.Fatal("a freed slot was given out twice")
	}
	waitFor(t, "Rejected() == 2", func() bool { return l.Rejected() == 2 })
}

// Many clients at once, connections closed twice from two goroutines:
// never more than the limit open, every connection either served or
// refused, every slot back at the end.
func TestConcurrentFloodStaysUnderLimit(t *testing.T) {
	const limit, clients, per = 8, 20, 15
	l, accepted := serve(t, limit, nil, DefaultLogEvery)
	var open, peak, served atomic.Int64
	var handlers sync.WaitGroup
	stop := make(chan struct{})
	loop := make(chan struct{})
	go func() {
		defer close(loop)
		for {
			var c net.Conn
			select {
			case c = <-accepted:
			case <-stop:
				return
			}
			n := open.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			if a := l.Active(); a > limit {
				t.Errorf("Active = %d, over the limit %d", a, limit)
			}
			served.Add(1)
			handlers.Go(func() {
				time.Sleep(time.Millisecond) // held long enough for others to pile up
				open.Add(-1)
				var both sync.WaitGroup
				for range 2 {
					both.Go(func() { c.Close() })
				}
				both.Wait()
			})
		}
	}()

	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range per {
				c, err := net.Dial("tcp", l.Addr().String())
				if errors.Is(err, syscall.ECONNRESET) {
					continue // refused before the connect returned
				}
				if err != nil {
					t.Error(err)
					return
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err = c.Read(make([]byte, 1))
				if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("read: %v, want the server to close the connection", err)
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	waitFor(t, "every connection served or refused", func() bool {
		return served.Load()+int64(l.Rejected()) == clients*per
	})
	waitFor(t, "every slot given back", func() bool { return l.Active() == 0 })
	if p := peak.Load(); p > limit {
		t.Errorf("%d connections open at once, limit %d", p, limit)
	}
	t.Logf("%d served, %d refused, peak %d open", served.Load(), l.Rejected(), peak.Load())
	close(stop)
	<-loop
	handlers.Wait()
}

// A flood of refusals writes one log line per interval, with the count
// since the last line, not one line per connection.
func TestRefusalsLoggedOncePerInterval(t *testing.T) {
	var buf syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	l, accepted := serve(t, 1, log, time.Hour)
	dial(t, l)
	receive(t, accepted)
	for range 20 {
		if !refusedAt(t, l) {
			t.Fatal("a connection past the limit was held open")
		}
	}
	waitFor(t, "20 refusals", func() bool { return l.Rejected() == 20 })
	if n := strings.Count(buf.String(), "connection limit reached"); n != 1 {
		t.Fatalf("%d log lines for 20 refusals within the interval, want 1:\n%s", n, &buf)
	}

	l.lastLog.Store(time.Now().Add(-2 * time.Hour).UnixNano()) // the interval has passed
	refusedAt(t, l)
	waitFor(t, "a second log line", func() bool { return strings.Count(buf.String(), "connection limit reached") == 2 })
	last := buf.String()[strings.LastIndex(buf.String(), "level=WARN"):]
	if !strings.Contains(last, " limit=1 rejected=20 rejected_total=21") {
		t.Errorf("second line %q does not count the refusals since the first", last)
	}
}

func TestNewRefusesBadArguments(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	for _, limit := range []int{0, -1} {
		if _, err := New(inner, limit, nil); err == nil || !strings.Contains(err.Error(), "at least 1") {
			t.Errorf("New(limit %d) = %v, want an error", limit, err)
		}
	}
	if _, err := New(nil, 1, nil); err == nil {
		t.Error("New(nil listener) did not fail")
	}
}

// net/http ends a refused request with CloseWrite so that the client reads
// the error before the connection goes; sendfile and socket options need
// ReadFrom and SyscallConn. The wrapper must not hide them.
func TestTCPConnectionKeepsItsMethods(t *testing.T) {
	l, accepted := serve(t, 1, nil, DefaultLogEvery)
	dial(t, l)
	c := receive(t, accepted)
	if _, ok := c.(interface{ CloseWrite() error }); !ok {
		t.Error("no CloseWrite")
	}
	if _, ok := c.(io.ReaderFrom); !ok {
		t.Error("no ReadFrom")
	}
	if _, ok := c.(syscall.Conn); !ok {
		t.Error("no SyscallConn")
	}
}

// fakeListener returns one connection over and over without allocating.
type fakeListener struct {
	net.Listener
	c net.Conn
}

func (f fakeListener) Accept() (net.Conn, error) { return f.c, nil }

type fakeConn struct{ net.Conn }

func (fakeConn) Close() error { return nil }

// The wrapper is the only allocation of an accepted connection.
func TestAcceptAllocatesOnlyTheWrapper(t *testing.T) {
	l, err := New(fakeListener{c: &fakeConn{}}, 1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		c, _ := l.Accept()
		c.Close()
	})
	if allocs > 1 {
		t.Errorf("%v allocations per accepted connection, want 1", allocs)
	}
}
