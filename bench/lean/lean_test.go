package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// The request bench/run.sh sends, with a made-up key (the floors and the
// test servers do not read it).
const testRequest = `{"attributes":{"source":{"address":{"socket_address":{"address":"10.1.2.3","port_value":51234}}},"request":{"http":{"method":"GET","path":"/api/v1/assessments","host":"api.example.com","headers":{"x-api-key":"kg_test"}}}}}`

// build compiles the named packages (relative to this directory) into a
// temporary directory once per test and returns it.
func build(t *testing.T, pkgs ...string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the benchmark's binaries: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(goBin, append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", pkgs, err, out)
	}
	return dir
}

// startFloor starts bench/allowall or bench/allowhttp on a free loopback
// port and returns its address and pid; it is stopped when the test ends.
func startFloor(t *testing.T, bin string) (addr string, pid int) {
	t.Helper()
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("%s did not say where it listens: %v", bin, err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if !ok {
		t.Fatalf("%s: first line %q, want listening ADDR", bin, line)
	}
	return addr, cmd.Process.Pid
}

func runLean(t *testing.T, lean string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, lean, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// TestLeanAgainstFloors drives both floors with the lean client for a few
// hundred requests (the floors stand in for Keygate too, under the name
// keygate) and checks the run records and the summary. It times nothing.
func TestLeanAgainstFloors(t *testing.T) {
	bin := build(t, ".", "../allowall", "../allowhttp")
	lean := filepath.Join(bin, "lean")
	gAddr, gPid := startFloor(t, filepath.Join(bin, "allowall"))
	hAddr, hPid := startFloor(t, filepath.Join(bin, "allowhttp"))
	runs := filepath.Join(t.TempDir(), "runs.jsonl")
	common := []string{"-n", "300", "-w", "50", "-c", "4", "-o", runs}

	for round := 1; round <= 2; round++ {
		for _, server := range []string{"floor", "keygate"} {
			r := []string{"-server", server, "-round", strconv.Itoa(round)}
			if out, err := runLean(t, lean, append(append([]string{"grpc", "-addr", gAddr, "-request", testRequest, "-pid", strconv.Itoa(gPid)}, r...), common...)...); err != nil {
				t.Fatalf("lean grpc: %v\n%s", err, out)
			}
			for _, path := range []string{"/nginx", "/forward"} {
				args := []string{"http", "-addr", hAddr, "-path", path, "-host", "api.example.com",
					"-H", "X-Original-URI: /api/v1/assessments", "-H", "x-api-key: kg_test", "-pid", strconv.Itoa(hPid)}
				if out, err := runLean(t, lean, append(append(args, r...), common...)...); err != nil {
					t.Fatalf("lean http %s: %v\n%s", path, err, out)
				}
			}
		}
	}

	raw, err := os.ReadFile(runs)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for line := range strings.Lines(string(raw)) {
		var r Run
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("run record %q: %v", line, err)
		}
		if r.Requests != 300 || r.Warmup != 50 || r.Concurrency != 4 {
			t.Errorf("run record %q: not the flags' requests, warm-up and concurrency", line)
		}
		if r.RPS <= 0 || r.Seconds <= 0 || r.P50us <= 0 || r.P99us < r.P50us || r.ServerCPUus < 0 {
			t.Errorf("run record %q: figures out of range", line)
		}
		seen[r.Path+"/"+r.Server]++
	}
	for _, k := range []string{"check/floor", "check/keygate", "nginx/floor", "nginx/keygate", "forward/floor", "forward/keygate"} {
		if seen[k] != 2 {
			t.Errorf("%s: %d runs recorded, want 2 (all: %v)", k, seen[k], seen)
		}
	}

	out, err := runLean(t, lean, "summary", runs)
	if err != nil {
		t.Fatalf("lean summary: %v\n%s", err, out)
	}
	for _, path := range []string{"check", "nginx", "forward"} {
		var ratios string
		for line := range strings.Lines(out) {
			if f := strings.Fields(line); len(f) > 0 && f[0] == path && strings.Contains(line, "rps ") {
				ratios = line
			}
		}
		// Two rounds: a ratio of the medians and two rounds' ratios for
		// each of rps, p50, p99 and CPU.
		if ratios == "" || strings.Count(ratios, "(") != 4 || len(strings.Fields(ratios)) != 1+4*4 {
			t.Errorf("summary has no well-formed ratio line for %s:\n%s", path, out)
		}
	}
}

// denier is an ext_authz server that allows the first allowFirst Checks
// and denies the rest.
type denier struct {
	authv3.UnimplementedAuthorizationServer
	allowFirst int64
	calls      atomic.Int64
}

func (d *denier) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	st := &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED), Message: "no"}
	if d.calls.Add(1) <= d.allowFirst {
		st = &rpcstatus.Status{Code: int32(code.Code_OK)}
	}
	return &authv3.CheckResponse{Status: st}, nil
}

// TestLeanRefusesDenials: a client that keeps answers as raw bytes must
// still notice that they are denials, whether the first answer already is
// (parsed with the real type) or only later ones are (the per-answer check).
func TestLeanRefusesDenials(t *testing.T) {
	lean := filepath.Join(build(t, "."), "lean")
	for _, tc := range []struct {
		name       string
		allowFirst int64
		want       string
	}{
		{"first answer denied", 0, "not allowed"},
		{"later answers denied", 10, "not an OK CheckResponse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			g := grpc.NewServer()
			authv3.RegisterAuthorizationServer(g, &denier{allowFirst: tc.allowFirst})
			go func() { _ = g.Serve(ln) }()
			t.Cleanup(g.Stop)
			out, err := runLean(t, lean, "grpc", "-addr", ln.Addr().String(), "-request", testRequest, "-n", "100", "-w", "0", "-c", "2")
			if err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("lean grpc against a denying server: err %v, output %q; want a failure saying %q", err, out, tc.want)
			}
		})
	}

	t.Run("http 401", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, `{"error":"invalid api key"}`, http.StatusUnauthorized)
		})}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		out, err := runLean(t, lean, "http", "-addr", ln.Addr().String(), "-path", "/nginx", "-n", "10", "-w", "0", "-c", "1")
		if err == nil || !strings.Contains(out, "want 200") {
			t.Fatalf("lean http against a server answering 401: err %v, output %q; want a failure", err, out)
		}
	})
}

// TestRunScript runs bench/run.sh itself, lean modes only and briefly,
// against the real Keygate it builds: the script, its flags and Keygate's
// decision counters (every request allowed) keep working. Nothing is timed.
func TestRunScript(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: bench/run.sh builds and runs Keygate")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed to run bench/run.sh: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "../run.sh", "-m", "lean,http", "-l", "200", "-r", "1", "-w", "20", "-c", "4")
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench/run.sh: %v\n%s", err, out)
	}
	s := string(out)
	// 200 measured, 20 warm-up and 1 checked first request, per path,
	// counted by Keygate and by the script alike.
	want := strconv.Itoa(3 * (200 + 20 + 1))
	allowed := false
	for line := range strings.Lines(s) {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "allow/ok" {
			allowed = f[1] == want && f[2] == want && f[3] == "ok"
		}
	}
	if !allowed || strings.Contains(s, "UNEXPECTED") {
		t.Errorf("bench/run.sh: Keygate's decision counters do not show all %s requests allowed:\n%s", want, s)
	}
	for _, path := range []string{"check", "nginx", "forward"} {
		if !strings.Contains(s, "  "+path+" ") {
			t.Errorf("bench/run.sh: no %s line in the summary:\n%s", path, s)
		}
	}
}

func TestQuantile(t *testing.T) {
	lat := make([]time.Duration, 100)
	for i := range lat {
		lat[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.50, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := quantile(lat, tc.q); got != tc.want {
			t.Errorf("quantile(1..100 ms, %v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := quantile(lat[:3], 0.99); got != 3*time.Millisecond {
		t.Errorf("p99 of 3 latencies = %v, want the largest", got)
	}
}
