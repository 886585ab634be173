package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// The flood tests run the attack that once took Keygate to its open-file
// limit: thousands of connections that send one request and idle, or
// nothing at all. The server runs under a small limit, so that the flood
// is larger than the limit, and must keep answering Checks and its admin
// API throughout, then close every flooding connection by its timeouts.

const (
	floodFileLimit = 256
	// serve.go's bounds: the HTTP listeners' ReadHeaderTimeout and the gRPC
	// server's ConnectionTimeout. listen.idle_timeout is set below.
	floodHeaderTimeout    = 5 * time.Second
	floodHandshakeTimeout = 5 * time.Second
	floodIdleTimeout      = 5 * time.Second
	// floodSlack allows for a loaded machine.
	floodSlack = 5 * time.Second
)

const floodConfig = `reload_interval: -1s
listen:
  idle_timeout: 5s
rate_limits:
  tiers:
    standard: {requests: 1000000, window: 1m}
`

var connLimitsLine = regexp.MustCompile(`msg="connection limits" open_files=(\S+) grpc=(\d+) http=(\d+) admin=(\d+)`)

type floodServer struct {
	*server
	pid  int
	caps connCaps
	key  string
}

// startFloodServer runs keygate serve with its open-file limit lowered to
// floodFileLimit, and a key to check.
func startFloodServer(t *testing.T) floodServer {
	t.Helper()
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("needs /proc to count the server's open files")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	writeFile(t, cfg, floodConfig)
	sh := fmt.Sprintf(`ulimit -Sn %d && ulimit -Hn %d && exec "$0" serve`, floodFileLimit, floodFileLimit)
	s := startServerCmd(t, dir, exec.Command("sh", "-c", sh, keygateBin), "KEYGATE_CONFIG="+cfg)
	f := floodServer{server: s, pid: s.cmd.Process.Pid}

	var m []string
	waitUntil(t, 5*time.Second, "the connection limits in the log", func() bool {
		m = connLimitsLine.FindStringSubmatch(s.logs.String())
		return m != nil
	})
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	f.caps = connCaps{grpc: atoi(m[2]), http: atoi(m[3]), admin: atoi(m[4])}
	if want := defaultConnCaps(floodFileLimit); m[1] != strconv.Itoa(floodFileLimit) || f.caps != want {
		t.Fatalf("log says open_files=%s caps %+v, want %d and %+v", m[1], f.caps, floodFileLimit, want)
	}

	tenant := s.cli(t, "tenants", "create", "--name", "Flood")
	org := s.cli(t, "orgs", "create", "--tenant", tenant["id"].(string), "--name", "Flood")
	key := s.cli(t, "keys", "create", "--tenant", tenant["id"].(string), "--org", org["id"].(string), "--user", "u", "--name", "k")
	f.key = key["key"].(string)
	return f
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openFiles counts the server's open file descriptors.
func (f floodServer) openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", f.pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// rss is the server's resident memory, as /proc says it.
func (f floodServer) rss() string {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", f.pid))
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "?"
}

// healthz asks the admin API's /healthz, within 1 s.
func (f floodServer) healthz() error {
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(f.admin + "/healthz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz: %s", resp.Status)
	}
	return nil
}

// freshHTTP sends one authorization request on a new connection, within
// 1 s; any answer (a 401 here) is the listener serving.
func (f floodServer) freshHTTP() error {
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(f.httpAddr + "/envoy/x")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("/envoy/x without a key: %s", resp.Status)
	}
	return nil
}

// checksFor calls Check back to back for d, each within 1 s, and counts
// the answers.
func checksFor(client authv3.AuthorizationClient, key string, d time.Duration) (answered, allowed, failed int, slowest time.Duration) {
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/x", Headers: map[string]string{"x-api-key": key}},
	}}}
	for end := time.Now().Add(d); time.Now().Before(end); {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		start := time.Now()
		resp, err := client.Check(ctx, req)
		cancel()
		slowest = max(slowest, time.Since(start))
		if err != nil {
			failed++
			continue
		}
		answered++
		if resp.GetOkResponse() != nil {
			allowed++
		}
	}
	return answered, allowed, failed, slowest
}

// closedByPeer reports whether err ends a read because the server closed
// or reset the connection.
func closedByPeer(err error) bool {
	return err == nil || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// floodOpen opens n connections to addr, 64 at a time, and returns those
// the server kept open and how many it refused at once. open does what an
// attacker does on a connection and reports whether it is still open.
func floodOpen(t *testing.T, addr string, n int, open func(i int, c net.Conn) bool) (held []net.Conn, refused int) {
	t.Helper()
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, 64)
	)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := net.Dial("tcp", addr)
			if errors.Is(err, syscall.ECONNRESET) {
				// Accepted and closed before the connect returned.
				mu.Lock()
				refused++
				mu.Unlock()
				return
			}
			if err != nil {
				t.Errorf("dial %s: %v", addr, err)
				return
			}
			kept := open(i, c)
			mu.Lock()
			defer mu.Unlock()
			if kept {
				held = append(held, c)
			} else {
				refused++
				c.Close()
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	return held, refused
}

// stillOpen reads c for wait: true if nothing came and the connection is
// open, false if the server closed it.
func stillOpen(t *testing.T, c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	if !closedByPeer(err) {
		t.Errorf("read: %v", err)
	}
	return false
}

// closedBy waits until each connection is closed by the server, at the
// latest at deadline, and returns when the last one was, and how many
// were not.
func closedBy(conns []net.Conn, deadline time.Time) (last time.Time, open int) {
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, c) // gRPC's settings frame comes first
			mu.Lock()
			defer mu.Unlock()
			if !closedByPeer(err) {
				open++
				return
			}
			if now := time.Now(); now.After(last) {
				last = now
			}
		})
	}
	wg.Wait()
	return last, open
}

// TestHTTPFloodStarvesNoOtherListenerE2E: 600 connections to the HTTP
// listener, more than the process may open, half sending one request and
// idling, half sending nothing. The listener holds its cap and refuses the
// rest at once; meanwhile Checks over a new gRPC connection and the admin
// API's /healthz answer within 1 s; the held connections are closed by the
// server's idle and header timeouts, and the listener serves again.
func TestHTTPFloodStarvesNoOtherListenerE2E(t *testing.T) {
	f := startFloodServer(t)
	addr := strings.TrimPrefix(f.httpAddr, "http://")
	before, rssBefore := f.openFiles(t), f.rss()

	start := time.Now()
	request := []byte("GET /envoy/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	var idling, silent atomic.Int64
	held, refused := floodOpen(t, addr, 600, func(i int, c net.Conn) bool {
		if i%2 == 1 {
			if stillOpen(t, c, 300*time.Millisecond) {
				silent.Add(1)
				return true
			}
			return false
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(request); err != nil {
			return false
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		c.SetDeadline(time.Time{})
		idling.Add(1)
		return true
	})
	opened := time.Since(start)
	during, rssDuring := f.openFiles(t), f.rss()
	if len(held) > f.caps.http {
		t.Errorf("%d connections held open, the HTTP cap is %d", len(held), f.caps.http)
	}
	if during > floodFileLimit {
		t.Errorf("%d files open, the limit is %d", during, floodFileLimit)
	}
	fullErr := f.freshHTTP()

	client := newChecker(t, f.grpcAddr).client
	answered, allowed, failed, slowest := checksFor(client, f.key, 2*time.Second)
	var health int
	for range 5 {
		if err := f.healthz(); err != nil {
			t.Errorf("admin /healthz during the HTTP flood: %v", err)
		} else {
			health++
		}
	}
	window := time.Since(start)
	if failed > 0 || answered == 0 || allowed != answered {
		t.Errorf("Checks during the HTTP flood: %d answered (%d allowed), %d failed", answered, allowed, failed)
	}
	if window >= floodIdleTimeout {
		t.Logf("the checks ended %v after the flood began, after the idle timeout: the machine is slow", window)
	}

	// The attacker still holds its connections: the server's timeouts end
	// them, and the listener serves again.
	var served time.Duration
	waitUntil(t, floodHeaderTimeout+floodSlack, "the HTTP listener to serve a fresh request", func() bool {
		if f.freshHTTP() != nil {
			return false
		}
		served = time.Since(start)
		return true
	})
	last, open := closedBy(held, start.Add(max(floodHeaderTimeout, floodIdleTimeout)+floodSlack))
	if open > 0 {
		t.Errorf("%d of the %d held HTTP connections were not closed by the server", open, len(held))
	}
	after := f.openFiles(t)
	logs := f.logs.String()
	if strings.Contains(logs, "too many open files") {
		t.Errorf("the server ran out of files:\n%s", logs)
	}
	if !strings.Contains(logs, `level=WARN msg="connection limit reached: new connections are closed at once" listener=http`) {
		t.Errorf("no warning of the refusals in the log:\n%s", logs)
	}

	t.Logf("HTTP flood: 600 connections in %v against a file limit of %d (HTTP cap %d): %d held (%d idle after one request, %d silent), %d refused at once",
		opened.Round(time.Millisecond), floodFileLimit, f.caps.http, len(held), idling.Load(), silent.Load(), refused)
	t.Logf("HTTP flood: server files open %d before, %d during, %d after; RSS %s before, %s during", before, during, after, rssBefore, rssDuring)
	t.Logf("HTTP flood: fresh HTTP request while full: %v", errOrOK(fullErr))
	t.Logf("HTTP flood: %d Checks answered (%d allowed, %d failed, slowest %v) over a new gRPC connection and %d/5 /healthz within 1 s each, all within %v of the flood's start",
		answered, allowed, failed, slowest.Round(time.Millisecond), health, window.Round(time.Millisecond))
	t.Logf("HTTP flood: a fresh HTTP request served %v after the flood began; the last held connection closed by the server after %v",
		served.Round(time.Millisecond), last.Sub(start).Round(time.Millisecond))
}

func errOrOK(err error) string {
	if err == nil {
		return "served"
	}
	return "refused (" + err.Error() + ")"
}

// TestSilentGRPCFloodClosedE2E: 2,000 TCP connections to the gRPC
// listener that never send a byte. The listener holds its cap and refuses
// the rest at once; the held ones are closed by the server within the
// connection timeout; meanwhile Checks on Envoy's established connection
// and the admin API answer.
func TestSilentGRPCFloodClosedE2E(t *testing.T) {
	f := startFloodServer(t)
	established := newChecker(t, f.grpcAddr).client
	if answered, _, _, _ := checksFor(established, f.key, 10*time.Millisecond); answered == 0 {
		t.Fatal("no Check answered before the flood")
	}
	before := f.openFiles(t)

	start := time.Now()
	held, refused := floodOpen(t, f.grpcAddr, 2000, func(_ int, c net.Conn) bool {
		// The server speaks first (its HTTP/2 settings); a refused
		// connection is reset instead.
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 64))
		return err == nil
	})
	opened := time.Since(start)
	during, rss := f.openFiles(t), f.rss()
	if len(held) > f.caps.grpc {
		t.Errorf("%d connections held open, the gRPC cap is %d", len(held), f.caps.grpc)
	}
	if during > floodFileLimit {
		t.Errorf("%d files open, the limit is %d", during, floodFileLimit)
	}

	answered, allowed, failed, slowest := checksFor(established, f.key, 2*time.Second)
	var health int
	for range 5 {
		if err := f.healthz(); err != nil {
			t.Errorf("admin /healthz during the gRPC flood: %v", err)
		} else {
			health++
		}
	}
	window := time.Since(start)
	if failed > 0 || answered == 0 || allowed != answered {
		t.Errorf("Checks during the gRPC flood: %d answered (%d allowed), %d failed", answered, allowed, failed)
	}

	last, open := closedBy(held, start.Add(floodHandshakeTimeout+floodSlack))
	if open > 0 {
		t.Errorf("%d of the %d silent gRPC connections were still open %v after the flood began", open, len(held), floodHandshakeTimeout+floodSlack)
	}
	closedAfter := last.Sub(start)
	if len(held) > 0 && closedAfter < floodHandshakeTimeout-time.Second {
		t.Errorf("the silent connections were closed after %v, before the connection timeout (%v): by what?", closedAfter, floodHandshakeTimeout)
	}

	// A new connection is served once the silent ones are gone.
	fresh := newChecker(t, f.grpcAddr).client
	if a, _, _, _ := checksFor(fresh, f.key, 10*time.Millisecond); a == 0 {
		t.Error("no Check answered on a new connection after the flood")
	}
	after := f.openFiles(t)
	if logs := f.logs.String(); strings.Contains(logs, "too many open files") {
		t.Errorf("the server ran out of files:\n%s", logs)
	}

	t.Logf("gRPC flood: 2000 silent connections in %v against a file limit of %d (gRPC cap %d, one slot Envoy's): %d held, %d refused at once",
		opened.Round(time.Millisecond), floodFileLimit, f.caps.grpc, len(held), refused)
	t.Logf("gRPC flood: server files open %d before, %d during, %d after; RSS during %s", before, during, after, rss)
	t.Logf("gRPC flood: %d Checks answered (%d allowed, %d failed, slowest %v) on the established connection and %d/5 /healthz within 1 s each, all within %v of the flood's start",
		answered, allowed, failed, slowest.Round(time.Millisecond), health, window.Round(time.Millisecond))
	t.Logf("gRPC flood: every held connection closed by the server within %v of the flood's start (connection timeout %v)",
		closedAfter.Round(time.Millisecond), floodHandshakeTimeout)
}

// TestIdleGRPCConnectionsClosedE2E: connections that complete the HTTP/2
// handshake and then send nothing, which grpc-go kept open for ever by
// default, are closed after listen.idle_timeout: a GOAWAY, then, with no
// answer to its ping, the close (grpc-go waits 5 s for the answer, then
// 1 s for the peer to read the last GOAWAY).
func TestIdleGRPCConnectionsClosedE2E(t *testing.T) {
	f := startFloodServer(t)
	// The client preface and an empty SETTINGS frame: a complete handshake.
	handshake := append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)
	const n = 40
	start := time.Now()
	held, refused := floodOpen(t, f.grpcAddr, n, func(_ int, c net.Conn) bool {
		_, err := c.Write(handshake)
		return err == nil
	})
	if len(held) != n || refused != 0 {
		t.Fatalf("%d of %d handshakes held, %d refused", len(held), n, refused)
	}
	during := f.openFiles(t)
	const goAwayWait = 6 * time.Second
	last, open := closedBy(held, start.Add(floodIdleTimeout+goAwayWait+floodSlack))
	if open > 0 {
		t.Errorf("%d of %d idle gRPC connections still open %v after they were made", open, n, floodIdleTimeout+goAwayWait+floodSlack)
	}
	if closed := last.Sub(start); closed < floodIdleTimeout {
		t.Errorf("idle connections closed after %v, before the idle timeout (%v)", closed, floodIdleTimeout)
	}
	if err := f.healthz(); err != nil {
		t.Error(err)
	}
	t.Logf("idle gRPC: %d handshaken, silent connections (server files open %d) all closed by the server within %v (idle_timeout %v + grpc-go's %v GOAWAY and close wait); %d open after",
		n, during, last.Sub(start).Round(time.Millisecond), floodIdleTimeout, goAwayWait, f.openFiles(t))
}
