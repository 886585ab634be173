// Package testredis runs a redis-server of a test's own: a free loopback
// port, no persistence, killed when the test ends. Tests never use a
// system Redis (Debian's package may run one on 6379), and a missing
// redis-server fails the test: `make test` installs it.
package testredis

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/syncbuf"
)

// server is a redis-server of the test's own: a free loopback port, no
// persistence, killed when the test ends. The tests never use a system
// Redis (Debian's package may run one on 6379).
type Server struct {
	Addr   string
	cmd    *exec.Cmd
	out    *syncbuf.Buffer
	exited chan struct{}
}

// Start runs redis-server for the test, or fails it: a missing
// redis-server is a broken test machine, not a reason to skip.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server is not on PATH: `make test` installs it (its deps target runs apt-get install redis-server); %v", err)
	}
	// The port is free when we look, but another process can take it
	// before redis-server binds it: then the server exits and we retry.
	var last string
	for attempt := 0; attempt < 5; attempt++ {
		s, out, ok := tryStart(tb, bin)
		if ok {
			return s
		}
		last = out
	}
	tb.Fatalf("redis-server did not start in 5 attempts; last output:\n%s", last)
	return nil
}

func tryStart(tb testing.TB, bin string) (*Server, string, bool) {
	tb.Helper()
	port := freePort(tb)
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", port), out: &syncbuf.Buffer{}, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tb.TempDir())
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	tb.Cleanup(s.Stop)

	probe := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond})
	defer probe.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			out := s.out.String()
			if strings.Contains(out, "in use") {
				return nil, out, false // lost the port race: try another
			}
			tb.Fatalf("redis-server exited at start:\n%s", out)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		info, err := probe.Info(ctx, "server").Result()
		cancel()
		if err == nil {
			// Make sure the server answering is ours, not one that took
			// the port first.
			if !strings.Contains(info, "process_id:"+strconv.Itoa(s.cmd.Process.Pid)+"\r\n") {
				s.Stop()
				return nil, "another server answered on " + s.Addr, false
			}
			return s, "", true
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("redis-server on %s did not answer PING within 10s:\n%s", s.Addr, s.out.String())
	return nil, "", false
}

func freePort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// Stop kills the server (also a stopped one) and waits for it to exit.
func (s *Server) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Kill()
	<-s.exited
}

// Pause and Resume freeze the server (SIGSTOP): it holds its connections
// and answers nothing, a hung Redis rather than a dead one.
func (s *Server) Pause(tb testing.TB) {
	tb.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		tb.Fatal(err)
	}
}

func (s *Server) Resume(tb testing.TB) {
	tb.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		tb.Fatal(err)
	}
}

// Client is a go-redis client of the server, closed when the test ends.
func (s *Server) Client(tb testing.TB, mod ...func(*redis.Options)) *redis.Client {
	tb.Helper()
	o := &redis.Options{Addr: s.Addr}
	for _, m := range mod {
		m(o)
	}
	c := redis.NewClient(o)
	tb.Cleanup(func() { c.Close() })
	return c
}

func (s *Server) String() string { return fmt.Sprintf("redis-server %s", s.Addr) }
