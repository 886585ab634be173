// Command lean is bench/run.sh's lean load client: it spends as little CPU
// per request as a client can, so that on a small machine the servers'
// throughput and latency, not the client's decoding, are what is measured.
// ghz, the second client, decodes every answer into a dynamic protobuf
// message, and Keygate's allow is forty times the size of a bare OK: with
// ghz the client, not the server, set the pace.
//
//	lean grpc [flags]      Envoy ext_authz Checks over one HTTP/2 connection
//	lean http [flags]      HTTP authorization requests over keep-alive connections
//	lean summary RUNS      medians and keygate/floor ratios of the runs
//
// grpc sends one CheckRequest, marshalled once, through a codec that passes
// it on as it is and keeps the answers as raw bytes. Every answer must begin
// with an OK status (checked on its first bytes); one answer is parsed with
// the real CheckResponse type as well, so that a run of denials can never
// pass for a run of allows. http writes one pre-formatted HTTP/1.1 request
// per worker connection and reads each answer's status line, headers and
// body as bytes; every answer must be a 200.
//
// Each run prints one JSON line (a run record) on stdout: rps, p50, p99 and,
// given the server's pid, the server's CPU time per request from
// /proc/PID/stat around the measured requests.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: lean grpc|http|summary ...")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "grpc":
		err = runGRPC(args, os.Stdout)
	case "http":
		err = runHTTP(args, os.Stdout)
	case "summary":
		err = summary(args, os.Stdout)
	default:
		err = fmt.Errorf("unknown subcommand %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lean:", err)
		os.Exit(1)
	}
}

// Run is one measured run: the line lean grpc and lean http print, and
// what lean summary reads.
type Run struct {
	Path        string  `json:"path"`   // "check" (gRPC), "nginx", "forward"
	Server      string  `json:"server"` // "floor" or "keygate"
	Round       int     `json:"round"`
	Requests    int     `json:"requests"`
	Warmup      int     `json:"warmup"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	RPS         float64 `json:"rps"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	// ServerCPUus is the server's CPU time per request, µs; 0 without -pid.
	ServerCPUus float64 `json:"server_cpu_us"`
}

// common are the flags both clients take.
type common struct {
	run    Run
	pid    int
	clkTck int
	out    string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.run.Server, "server", "floor", "`name` of the server under test, for the report (floor or keygate)")
	fs.IntVar(&c.run.Round, "round", 1, "round `number`, for the report")
	fs.IntVar(&c.run.Requests, "n", 60000, "measured requests")
	fs.IntVar(&c.run.Warmup, "w", 5000, "warm-up requests before the measured ones, on the same connections")
	fs.IntVar(&c.run.Concurrency, "c", 16, "concurrent workers")
	fs.IntVar(&c.pid, "pid", 0, "the server's `pid`: its CPU time per request is measured from /proc/PID/stat")
	fs.IntVar(&c.clkTck, "clk-tck", 100, "clock ticks per second (getconf CLK_TCK)")
	fs.StringVar(&c.out, "o", "", "append the run record to `file` and print a readable line instead")
}

func (c *common) check() error {
	if c.run.Requests < 1 || c.run.Warmup < 0 || c.run.Concurrency < 1 {
		return errors.New("-n and -c must be above 0, -w not below")
	}
	if c.clkTck < 1 {
		return errors.New("-clk-tck must be above 0")
	}
	return nil
}

// measure runs the warm-up and then the measured requests, do(i) being one
// request by worker i, and fills in the run's figures. Latencies go into a
// slice allocated before the run, one slot per request, so that recording
// them costs a store.
func (c *common) measure(do func(worker int) error) (Run, error) {
	r := c.run
	if r.Warmup > 0 {
		if _, err := spread(r.Warmup, r.Concurrency, nil, do); err != nil {
			return r, fmt.Errorf("warm-up: %w", err)
		}
	}
	lat := make([]time.Duration, r.Requests)
	var before int64
	var err error
	if c.pid > 0 {
		if before, err = cpuTicks(c.pid); err != nil {
			return r, err
		}
	}
	took, err := spread(r.Requests, r.Concurrency, lat, do)
	if err != nil {
		return r, err
	}
	if c.pid > 0 {
		after, err := cpuTicks(c.pid)
		if err != nil {
			return r, err
		}
		r.ServerCPUus = float64(after-before) / float64(c.clkTck) * 1e6 / float64(r.Requests)
	}
	slices.Sort(lat)
	r.Seconds = took.Seconds()
	r.RPS = float64(r.Requests) / r.Seconds
	r.P50us = float64(quantile(lat, 0.50)) / 1e3
	r.P99us = float64(quantile(lat, 0.99)) / 1e3
	return r, nil
}

// spread runs n requests on c workers, each taking the next request number
// until none are left, and records each one's latency in lat when lat is
// not nil. The first error stops every worker.
func spread(n, c int, lat []time.Duration, do func(worker int) error) (time.Duration, error) {
	var next atomic.Int64
	var failed atomic.Bool
	errs := make([]error, c)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range c {
		wg.Go(func() {
			for !failed.Load() {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				t := time.Now()
				if err := do(w); err != nil {
					errs[w] = fmt.Errorf("request %d: %w", i, err)
					failed.Store(true)
					return
				}
				if lat != nil {
					lat[i] = time.Since(t)
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// quantile returns the q-quantile of sorted latencies (nearest rank: the
// smallest latency at least a fraction q of them do not exceed).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(float64(len(sorted))*q)) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// cpuTicks returns the CPU time (user + system, all threads) process pid
// has used, in clock ticks: fields 14 and 15 of /proc/PID/stat, counted
// after the command name, which is in parentheses and may hold spaces.
func cpuTicks(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("server CPU time: %w", err)
	}
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("server CPU time: /proc/%d/stat has no command name", pid)
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("server CPU time: /proc/%d/stat is short", pid)
	}
	var sum int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("server CPU time: /proc/%d/stat: %w", pid, err)
		}
		sum += v
	}
	return sum, nil
}

// emit prints the run record on w, or appends it to the -o file and
// prints a line for people on w.
func (c *common) emit(w io.Writer, r Run) error {
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if c.out == "" {
		_, err = fmt.Fprintf(w, "%s\n", line)
		return err
	}
	f, err := os.OpenFile(c.out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, "%s\n", line); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "  round %d  %-7s %-8s %7.0f rps  p50 %7.3f ms  p99 %7.3f ms  server %6.1f µs/req\n",
		r.Round, r.Path, r.Server, r.RPS, r.P50us/1e3, r.P99us/1e3, r.ServerCPUus)
	return err
}

// --- gRPC -----------------------------------------------------------------

const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// okPrefix is how every allowed CheckResponse begins: field 1 (status), a
// google.rpc.Status whose code 0 is not encoded, so of length 0. A denial's
// status carries its code (0a 02 08 ..) and fails the comparison. Go's
// protobuf writes fields in number order, and both servers are Go.
var okPrefix = []byte{0x0a, 0x00}

// rawCodec sends pre-marshalled requests as they are and does not decode
// answers: both sides of the floor comparison then cost the client the
// same, whatever the size of the answer.
type rawCodec struct{}

// answer is what an Invoke fills in: whether the answer began with an OK
// status, and, for the one answer kept for checking, its bytes.
type answer struct {
	ok   bool
	keep bool
	raw  []byte
}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot send a %T", v)
	}
	return b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	a, ok := v.(*answer)
	if !ok {
		return fmt.Errorf("rawCodec: cannot receive into a %T", v)
	}
	a.ok = bytes.HasPrefix(data, okPrefix)
	if a.keep {
		// data belongs to gRPC's buffer pool once this returns.
		a.raw = bytes.Clone(data)
	}
	return nil
}

func (rawCodec) Name() string { return "proto" }

func runGRPC(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("lean grpc", flag.ContinueOnError)
	var c common
	c.register(fs)
	addr := fs.String("addr", "", "the server's gRPC `address` (host:port)")
	reqJSON := fs.String("request", "", "the CheckRequest, as protobuf JSON (what run.sh gives ghz)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	if *addr == "" || *reqJSON == "" || fs.NArg() > 0 {
		return errors.New("usage: lean grpc -addr HOST:PORT -request JSON [flags]")
	}
	c.run.Path = "check"
	var req authv3.CheckRequest
	if err := protojson.Unmarshal([]byte(*reqJSON), &req); err != nil {
		return fmt.Errorf("-request: %w", err)
	}
	payload, err := proto.Marshal(&req)
	if err != nil {
		return fmt.Errorf("-request: %w", err)
	}

	conn, err := grpc.NewClient(*addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx := context.Background()

	// One answer parsed with the real type before anything is timed.
	sample := answer{keep: true}
	if err := conn.Invoke(ctx, checkMethod, payload, &sample); err != nil {
		return fmt.Errorf("first Check: %w", err)
	}
	if err := verifyAllowed(sample.raw); err != nil {
		return err
	}

	answers := make([]answer, c.run.Concurrency)
	r, err := c.measure(func(w int) error {
		a := &answers[w]
		if err := conn.Invoke(ctx, checkMethod, payload, a); err != nil {
			return err
		}
		if !a.ok {
			return errors.New("the answer is not an OK CheckResponse")
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.emit(out, r)
}

// verifyAllowed parses a CheckResponse and requires an allow: status OK
// and, when the server says how to answer the request, an OK response.
func verifyAllowed(raw []byte) error {
	var resp authv3.CheckResponse
	if err := proto.Unmarshal(raw, &resp); err != nil {
		return fmt.Errorf("first Check: the answer is not a CheckResponse: %w", err)
	}
	if c := resp.GetStatus().GetCode(); c != int32(code.Code_OK) {
		return fmt.Errorf("first Check: not allowed: status %d (%s)", c, resp.GetStatus().GetMessage())
	}
	if resp.GetDeniedResponse() != nil {
		return errors.New("first Check: status OK but a denied response")
	}
	if !bytes.HasPrefix(raw, okPrefix) {
		return fmt.Errorf("first Check: an allow that does not begin with % x: the per-answer check would fail", okPrefix)
	}
	return nil
}

// --- HTTP -----------------------------------------------------------------

// headerList collects repeated -H flags.
type headerList []string

func (h *headerList) String() string { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error {
	name, _, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" || strings.ContainsAny(v, "\r\n") {
		return fmt.Errorf("want 'Name: value', got %q", v)
	}
	*h = append(*h, v)
	return nil
}

func runHTTP(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("lean http", flag.ContinueOnError)
	var c common
	c.register(fs)
	addr := fs.String("addr", "", "the server's HTTP `address` (host:port)")
	path := fs.String("path", "/nginx", "the request's path (/nginx, /forward)")
	host := fs.String("host", "", "the Host header (default: -addr)")
	var headers headerList
	fs.Var(&headers, "H", "a request header, 'Name: value' (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	if *addr == "" || !strings.HasPrefix(*path, "/") || fs.NArg() > 0 {
		return errors.New("usage: lean http -addr HOST:PORT -path /nginx|/forward [-H 'Name: value'...] [flags]")
	}
	c.run.Path = strings.TrimPrefix(*path, "/")
	if *host == "" {
		*host = *addr
	}
	// What nginx's auth_request sends through a keepalive upstream: a GET
	// with no body, HTTP/1.1, no "Connection: close".
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", *path, *host)
	for _, h := range headers {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	request := []byte(b.String())

	conns := make([]*httpConn, c.run.Concurrency)
	for i := range conns {
		conn, err := net.Dial("tcp", *addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		conns[i] = &httpConn{conn: conn, r: bufio.NewReaderSize(conn, 16<<10)}
	}
	if err := conns[0].roundTrip(request); err != nil {
		return fmt.Errorf("first request: %w", err)
	}
	r, err := c.measure(func(w int) error { return conns[w].roundTrip(request) })
	if err != nil {
		return err
	}
	return c.emit(out, r)
}

// httpConn is one keep-alive connection, used by one worker at a time.
type httpConn struct {
	conn net.Conn
	r    *bufio.Reader
}

var (
	status200     = []byte("HTTP/1.1 200 ")
	contentLength = []byte("content-length:")
	chunked       = []byte("transfer-encoding:")
)

// roundTrip writes the request and reads the whole answer, which must be a
// 200 the connection survives: the status line, the headers (only their
// length matters) and the body, by Content-Length or in chunks.
func (h *httpConn) roundTrip(request []byte) error {
	if _, err := h.conn.Write(request); err != nil {
		return err
	}
	line, err := h.r.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("status line: %w", err)
	}
	if !bytes.HasPrefix(line, status200) {
		return fmt.Errorf("answer %q, want 200", bytes.TrimSpace(line))
	}
	length, isChunked := 0, false
	for {
		line, err := h.r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("headers: %w", err)
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > len(contentLength) && bytes.EqualFold(line[:len(contentLength)], contentLength) {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(line[len(contentLength):]))); err != nil || length < 0 {
				return fmt.Errorf("bad %q", bytes.TrimSpace(line))
			}
		}
		if len(line) > len(chunked) && bytes.EqualFold(line[:len(chunked)], chunked) {
			isChunked = true
		}
		if bytes.EqualFold(bytes.TrimSpace(line), []byte("connection: close")) {
			return errors.New("the server closes the connection: no keep-alive")
		}
	}
	if isChunked {
		return h.readChunks()
	}
	_, err = h.r.Discard(length)
	return err
}

func (h *httpConn) readChunks() error {
	for {
		line, err := h.r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("chunk size: %w", err)
		}
		sz, _, _ := strings.Cut(strings.TrimSpace(string(line)), ";")
		n, err := strconv.ParseInt(sz, 16, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("bad chunk size %q", sz)
		}
		if n == 0 {
			// Trailers, then the empty line.
			for {
				line, err := h.r.ReadSlice('\n')
				if err != nil {
					return fmt.Errorf("trailer: %w", err)
				}
				if len(line) <= 2 {
					return nil
				}
			}
		}
		if _, err := h.r.Discard(int(n) + 2); err != nil {
			return err
		}
	}
}

// --- summary --------------------------------------------------------------

// summary reads run records (lean's JSON lines) and prints, per path, each
// server's medians over the rounds, then Keygate over the floor: the ratio
// of the medians and each round's own ratio (Keygate's run over the floor's
// run just before it, which shared the machine's state with it).
func summary(args []string, w io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: lean summary RUNS.jsonl")
	}
	runs, err := readRuns(args[0])
	if err != nil {
		return err
	}
	var paths []string
	by := map[string]map[string][]Run{} // path -> server -> runs
	for _, r := range runs {
		if by[r.Path] == nil {
			by[r.Path] = map[string][]Run{}
			paths = append(paths, r.Path)
		}
		by[r.Path][r.Server] = append(by[r.Path][r.Server], r)
	}
	metrics := []struct {
		name string
		get  func(Run) float64
	}{
		{"rps", func(r Run) float64 { return r.RPS }},
		{"p50", func(r Run) float64 { return r.P50us }},
		{"p99", func(r Run) float64 { return r.P99us }},
		{"cpu/req", func(r Run) float64 { return r.ServerCPUus }},
	}
	fmt.Fprintln(w, "lean client, medians over the rounds (server CPU per request from /proc/PID/stat):")
	fmt.Fprintf(w, "  %-8s %-8s %6s %9s %9s %9s %14s\n", "path", "server", "runs", "rps", "p50 ms", "p99 ms", "server µs/req")
	for _, p := range paths {
		for _, s := range []string{"floor", "keygate"} {
			rs := by[p][s]
			if len(rs) == 0 {
				return fmt.Errorf("%s: no %s runs on path %s: nothing to compare", args[0], s, p)
			}
			fmt.Fprintf(w, "  %-8s %-8s %6d %9.0f %9.3f %9.3f %14.1f\n", p, s, len(rs),
				median(rs, metrics[0].get), median(rs, metrics[1].get)/1e3, median(rs, metrics[2].get)/1e3, median(rs, metrics[3].get))
		}
	}
	fmt.Fprintln(w, "keygate/floor: ratio of the medians (each round's ratio):")
	for _, p := range paths {
		fmt.Fprintf(w, "  %-8s", p)
		floor, kg := byRound(by[p]["floor"]), byRound(by[p]["keygate"])
		for _, m := range metrics {
			f, k := median(by[p]["floor"], m.get), median(by[p]["keygate"], m.get)
			fmt.Fprintf(w, "  %s %s (", m.name, ratio(k, f))
			sep := ""
			for _, round := range sortedKeys(kg) {
				if fr, ok := floor[round]; ok {
					fmt.Fprintf(w, "%s%s", sep, ratio(m.get(kg[round]), m.get(fr)))
					sep = " "
				}
			}
			fmt.Fprint(w, ")")
		}
		fmt.Fprintln(w)
	}
	return nil
}

func readRuns(path string) ([]Run, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var runs []Run
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r Run
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if r.Path == "" || r.Requests < 1 || r.RPS <= 0 {
			return nil, fmt.Errorf("%s:%d: not a run record", path, n)
		}
		runs = append(runs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("%s: no runs", path)
	}
	return runs, nil
}

func median(rs []Run, get func(Run) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = get(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func byRound(rs []Run) map[int]Run {
	m := make(map[int]Run, len(rs))
	for _, r := range rs {
		m[r.Round] = r
	}
	return m
}

func sortedKeys(m map[int]Run) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// ratio prints k/f, or "-" when there is no f to divide by (no -pid).
func ratio(k, f float64) string {
	if f == 0 {
		return "-"
	}
	return strconv.FormatFloat(k/f, 'f', 2, 64)
}
