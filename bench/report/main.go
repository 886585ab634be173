// Command report is the Go half of bench/run.sh: the parts that are easier
// to get right in Go than in bash. It has seven subcommands:
//
//	report ports N                 print N free loopback TCP ports
//	report field NAME < JSON       print one string field of a JSON object
//	report keys VALID_KEY          print an unknown key, then a malformed one
//	report digest [flags] GHZ.json reduce one ghz run to a line of runs.tsv
//	report summary [flags]         the medians, ratios and verdicts
//	report decisions [flags]       Keygate's decision counters against what was sent
//	report get URL TOKEN_FILE      GET an admin URL with the admin token, print the body
//
// It lives in the main module so that the keys it makes follow Keygate's
// own key format (keystore/apikey), whatever that becomes.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/keystore/apikey"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: report ports|field|keys|digest|summary|decisions|get ...")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "ports":
		err = ports(args)
	case "field":
		err = field(args, os.Stdin)
	case "keys":
		err = keys(args)
	case "digest":
		err = digest(args)
	case "summary":
		err = summary(args)
	case "decisions":
		err = decisions(args)
	case "get":
		err = get(args, os.Stdout)
	default:
		err = fmt.Errorf("unknown subcommand %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

// ports prints free loopback ports, one a line. Keygate is run at log level
// warn so that logging costs nothing during the run, which also silences
// the line that would say which ports it got with ":0"; so the script picks
// them here. All are held open together, so the N ports differ; another
// process could still take one before Keygate binds it, which the script
// notices (Keygate exits) and reports.
func ports(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: report ports N")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return fmt.Errorf("ports: bad count %q", args[0])
	}
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	for _, ln := range lns {
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

// field prints one string field of the JSON object on r: the id of the
// tenant, the id and key of the key that "keygate ... --output json"
// printed. It keeps the script free of a jq or python dependency.
func field(args []string, r io.Reader) error {
	if len(args) != 1 {
		return errors.New("usage: report field NAME < object.json")
	}
	var obj map[string]any
	if err := json.NewDecoder(r).Decode(&obj); err != nil {
		return fmt.Errorf("field %s: %w", args[0], err)
	}
	v, ok := obj[args[0]].(string)
	if !ok || v == "" {
		return fmt.Errorf("field %s: no such string field", args[0])
	}
	fmt.Println(v)
	return nil
}

// keys prints two keys derived from the valid one: a well-formed key that
// was never stored (it passes the checksum, so Keygate looks it up and
// misses) and a mistyped copy of the valid key (one body character changed,
// so the checksum fails and Keygate refuses it without a lookup). Each is
// checked against the format, so a change to the format cannot silently
// turn one variant into the other.
func keys(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: report keys VALID_KEY")
	}
	valid := args[0]
	prefix, _, ok := strings.Cut(valid, "_")
	if !ok {
		return errors.New("keys: the valid key has no prefix")
	}
	f, err := apikey.NewFormat(prefix)
	if err != nil {
		return err
	}
	p, err := f.Parse(valid)
	if err != nil {
		return fmt.Errorf("keys: the valid key does not parse: %w", err)
	}
	unknown, err := f.Generate(p.Env)
	if err != nil {
		return err
	}
	b := []byte(valid)
	i := len(prefix) + len("_live_") + 4 // inside the random part of the body
	if b[i] == 'x' {
		b[i] = 'y'
	} else {
		b[i] = 'x'
	}
	malformed := string(b)
	if _, err := f.Parse(malformed); err == nil {
		return errors.New("keys: the mistyped key still passes its checksum")
	}
	fmt.Println(unknown)
	fmt.Println(malformed)
	return nil
}

// ghzReport is the part of ghz's JSON output (-O json) that is read.
// Durations are in nanoseconds.
type ghzReport struct {
	EndReason   string           `json:"endReason"`
	Count       int64            `json:"count"`
	Total       int64            `json:"total"`
	RPS         float64          `json:"rps"`
	Errors      map[string]int64 `json:"errorDistribution"`
	StatusCodes map[string]int64 `json:"statusCodeDistribution"`
	Latency     []ghzLatency     `json:"latencyDistribution"`
	Options     map[string]any   `json:"options"`
}

type ghzLatency struct {
	Percentage int     `json:"percentage"`
	Latency    float64 `json:"latency"`
}

func (r *ghzReport) percentile(p int) (float64, bool) {
	for _, l := range r.Latency {
		if l.Percentage == p {
			return l.Latency, true
		}
	}
	return 0, false
}

// run is one measured ghz run against one server: a line of runs.tsv.
type run struct {
	server, variant string
	round           int
	requests        int64
	wallNS          float64 // ghz's own measure of the run
	rps             float64
	p50NS, p99NS    float64
	cpuTicks        int64 // the server's utime+stime during the run
	clkTck          int64
	clientMS        int64 // ghz's CPU time during the run, in ms
}

func (r run) cpuPerCheckUS() float64 {
	return float64(r.cpuTicks) / float64(r.clkTck) / float64(r.requests) * 1e6
}

// clientPerCheckUS is the load client's CPU per Check. It includes ghz's
// start (dial, reflection, parsing the request JSON), which is small next
// to 100000 calls.
func (r run) clientPerCheckUS() float64 {
	return float64(r.clientMS) * 1e3 / float64(r.requests)
}

// cores is the share of a CPU the server kept busy. The CPU window is a
// little wider than ghz's (it includes ghz's start: dial, reflection), so
// this slightly overstates it.
func (r run) cores() float64 {
	return float64(r.cpuTicks) / float64(r.clkTck) / (r.wallNS / 1e9)
}

const tsvHeader = "server\tvariant\tround\trequests\twall_ns\trps\tp50_ns\tp99_ns\tcpu_ticks\tclk_tck\tclient_ms"

func (r run) tsv() string {
	return fmt.Sprintf("%s\t%s\t%d\t%d\t%.0f\t%.2f\t%.0f\t%.0f\t%d\t%d\t%d",
		r.server, r.variant, r.round, r.requests, r.wallNS, r.rps, r.p50NS, r.p99NS, r.cpuTicks, r.clkTck, r.clientMS)
}

func parseRun(line string) (run, error) {
	f := strings.Split(line, "\t")
	if len(f) != 11 {
		return run{}, fmt.Errorf("want 11 fields, got %d", len(f))
	}
	var r run
	var errs []error
	num := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		errs = append(errs, err)
		return v
	}
	r.server, r.variant = f[0], f[1]
	r.round = int(num(f[2]))
	r.requests = int64(num(f[3]))
	r.wallNS, r.rps, r.p50NS, r.p99NS = num(f[4]), num(f[5]), num(f[6]), num(f[7])
	r.cpuTicks, r.clkTck, r.clientMS = int64(num(f[8])), int64(num(f[9])), int64(num(f[10]))
	if err := errors.Join(errs...); err != nil {
		return run{}, err
	}
	if r.requests <= 0 || r.clkTck <= 0 || r.wallNS <= 0 {
		return run{}, errors.New("requests, clk_tck and wall_ns must be positive")
	}
	return r, nil
}

// digest checks one ghz run and appends its numbers to the runs file. A run
// where any call failed, or ended early, is refused: its numbers would
// describe something other than n answered Checks.
func digest(args []string) error {
	fs := flag.NewFlagSet("digest", flag.ContinueOnError)
	var r run
	out := fs.String("o", "", "runs `file` (TSV) to append to")
	fs.StringVar(&r.server, "server", "", "server name (floor or keygate)")
	fs.StringVar(&r.variant, "variant", "", "request variant (valid, unknown, malformed)")
	fs.IntVar(&r.round, "round", 0, "round number")
	fs.Int64Var(&r.cpuTicks, "ticks", -1, "server CPU time during the run, in clock ticks (utime+stime)")
	fs.Int64Var(&r.clkTck, "clk-tck", 0, "clock ticks per second (getconf CLK_TCK)")
	fs.Int64Var(&r.clientMS, "client-ms", 0, "the load client's CPU time during the run, in ms")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *out == "" || r.server == "" || r.variant == "" || r.cpuTicks < 0 || r.clkTck <= 0 {
		return errors.New("usage: report digest -o runs.tsv -server S -variant V -round N -ticks T -clk-tck HZ [-client-ms MS] ghz.json")
	}
	raw, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	var g ghzReport
	if err := json.Unmarshal(raw, &g); err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	want := int64(0)
	if v, ok := g.Options["total"].(float64); ok {
		want = int64(v)
	}
	var errs []error
	if g.EndReason != "normal" {
		errs = append(errs, fmt.Errorf("ended %q", g.EndReason))
	}
	if g.Count != want || g.StatusCodes["OK"] != g.Count {
		errs = append(errs, fmt.Errorf("%d of %d calls counted, %d OK (%v)", g.Count, want, g.StatusCodes["OK"], g.StatusCodes))
	}
	if len(g.Errors) > 0 {
		errs = append(errs, fmt.Errorf("errors: %v", g.Errors))
	}
	p50, ok50 := g.percentile(50)
	p99, ok99 := g.percentile(99)
	if !ok50 || !ok99 {
		errs = append(errs, errors.New("no p50/p99 in latencyDistribution"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s %s round %d: %w", r.server, r.variant, r.round, err)
	}
	r.requests, r.wallNS, r.rps, r.p50NS, r.p99NS = g.Count, float64(g.Total), g.RPS, p50, p99

	fh, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if fi, err := fh.Stat(); err == nil && fi.Size() == 0 {
		fmt.Fprintln(fh, tsvHeader)
	}
	fmt.Fprintln(fh, r.tsv())
	if err := fh.Close(); err != nil {
		return err
	}
	fmt.Printf("  round %d  %-8s %-9s %7.0f rps  p50 %6.3f ms  p99 %6.3f ms  server %5.1f µs/Check (%.2f cores)  ghz %5.1f µs/Check\n",
		r.round, r.server, r.variant, r.rps, r.p50NS/1e6, r.p99NS/1e6, r.cpuPerCheckUS(), r.cores(), r.clientPerCheckUS())
	return nil
}

// The targets of the Performance issue: what Keygate may cost beyond the
// floor, an ext_authz server that allows without looking at anything.
const (
	minRPSRatio = 0.9
	maxP99Ratio = 1.15
	maxCPURatio = 1.3
)

type stats struct {
	n                              int
	rps, p50, p99, cpu, cr, client float64 // medians; p50, p99 in ns; cpu, client in µs/Check
	rpsMin, rpsMax                 float64
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func statsOf(rs []run) stats {
	var rps, p50, p99, cpu, cr, client []float64
	for _, r := range rs {
		rps = append(rps, r.rps)
		p50 = append(p50, r.p50NS)
		p99 = append(p99, r.p99NS)
		cpu = append(cpu, r.cpuPerCheckUS())
		cr = append(cr, r.cores())
		client = append(client, r.clientPerCheckUS())
	}
	return stats{
		n:   len(rs),
		rps: median(rps), p50: median(p50), p99: median(p99), cpu: median(cpu), cr: median(cr), client: median(client),
		rpsMin: slices.Min(rps), rpsMax: slices.Max(rps),
	}
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// variants in the order they are shown; the first is the one the targets
// are about.
var variants = []struct{ name, label string }{
	{"valid", "valid key (allowed)"},
	{"unknown", "unknown key (401)"},
	{"malformed", "malformed key (401)"},
}

func summary(args []string) error {
	fs := flag.NewFlagSet("summary", flag.ContinueOnError)
	runsFile := fs.String("runs", "", "runs `file` written by digest")
	rssKeygate := fs.Int64("rss-keygate", -1, "Keygate's VmHWM at the end, in kB")
	rssFloor := fs.Int64("rss-floor", -1, "the floor's VmHWM at the end, in kB")
	metricsFile := fs.String("metrics", "", "Keygate's /metrics text, to check what it decided")
	warmup := fs.Int64("warmup", 0, "warm-up Checks sent before each measured run")
	rate := fs.Int64("rate", 0, "offered load of the measured runs (ghz --rps); 0: unthrottled")
	extraAllowed := fs.Int64("extra-allowed", 0, "valid-key requests other clients (bench/lean) sent Keygate, warm-ups included")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runsFile == "" {
		return errors.New("usage: report summary -runs runs.tsv [-rss-keygate KB] [-rss-floor KB] [-metrics FILE -warmup N]")
	}
	runs, err := readRuns(*runsFile)
	if err != nil {
		return err
	}
	by := map[string][]run{}
	for _, r := range runs {
		k := r.server + "/" + r.variant
		by[k] = append(by[k], r)
	}
	floorRuns := by["floor/valid"]
	if len(floorRuns) == 0 {
		return errors.New("no floor runs")
	}
	floor := statsOf(floorRuns)

	w := os.Stdout
	fmt.Fprintf(w, "Medians over the runs (rps: lowest-highest run). CPU is µs per Check, from each\nprocess's own accounting; cores is the server's CPU over the run's wall time.\n\n")
	fmt.Fprintf(w, "  %-30s %4s %7s %13s %8s %8s %10s %6s %8s\n", "server / request", "runs", "rps", "(range)", "p50 ms", "p99 ms", "server CPU", "cores", "ghz CPU")
	row := func(label string, s stats) {
		fmt.Fprintf(w, "  %-30s %4d %7.0f %13s %8.3f %8.3f %10.1f %6.2f %8.1f\n", label, s.n, s.rps,
			fmt.Sprintf("(%.0f-%.0f)", s.rpsMin, s.rpsMax), s.p50/1e6, s.p99/1e6, s.cpu, s.cr, s.client)
	}
	row("floor (allowall), valid key", floor)
	kg := map[string]stats{}
	for _, v := range variants {
		if rs := by["keygate/"+v.name]; len(rs) > 0 {
			kg[v.name] = statsOf(rs)
			row("keygate, "+v.label, kg[v.name])
		}
	}

	fmt.Fprintf(w, "\nkeygate / floor (targets: rps >= %.2f, p99 <= %.2f, CPU per Check <= %.2f):\n\n", minRPSRatio, maxP99Ratio, maxCPURatio)
	fmt.Fprintf(w, "  %-24s %14s %14s %16s\n", "request", "rps", "p99", "server CPU")
	for _, v := range variants {
		s, ok := kg[v.name]
		if !ok {
			continue
		}
		rr, pr, cr := s.rps/floor.rps, s.p99/floor.p99, s.cpu/floor.cpu
		fmt.Fprintf(w, "  %-24s %9.2f %s %9.2f %s %11.2f %s\n", v.label,
			rr, verdict(rr >= minRPSRatio), pr, verdict(pr <= maxP99Ratio), cr, verdict(cr <= maxCPURatio))
	}
	if *rate > 0 {
		fmt.Fprintf(w, "\n  Both servers were offered %d Checks/s: the rps ratio says only whether Keygate kept up,\n"+
			"  and below saturation CPU per Check is mostly wake-ups, not work (see bench/README.md).\n", *rate)
	}

	fmt.Fprintln(w)
	if *rssKeygate >= 0 {
		fmt.Fprintf(w, "keygate peak RSS (VmHWM): %.1f MiB", float64(*rssKeygate)/1024)
		if *rssFloor >= 0 {
			fmt.Fprintf(w, "   (floor: %.1f MiB)", float64(*rssFloor)/1024)
		}
		fmt.Fprintln(w)
	}
	if *metricsFile != "" {
		sent := func(variants ...string) int64 {
			var n int64
			for _, v := range variants {
				for _, r := range by["keygate/"+v] {
					n += r.requests + *warmup
				}
			}
			return n
		}
		if err := checkDecisions(w, *metricsFile, sent("valid")+*extraAllowed, sent("unknown", "malformed")); err != nil {
			return err
		}
	}
	return nil
}

func readRuns(path string) ([]run, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var runs []run
	sc := bufio.NewScanner(fh)
	for line := 1; sc.Scan(); line++ {
		if line == 1 && sc.Text() == tsvHeader {
			continue
		}
		r, err := parseRun(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		runs = append(runs, r)
	}
	return runs, sc.Err()
}

// checkDecisions compares Keygate's own decision counters with what the
// runs asked for: every valid-key Check allowed, every unknown or malformed
// one refused as invalid_api_key. Anything else (a 429 from a tier limit
// set too low, a 503) means the runs timed another code path than the
// table says, and the numbers are not to be quoted.
func checkDecisions(w io.Writer, path string, allowed, denied int64) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	got := map[string]int64{} // "result/reason" -> count
	for line := range strings.Lines(string(raw)) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), "{")
		if !ok || name != "keygate_decisions_total" {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return fmt.Errorf("%s: %q: %w", path, line, err)
		}
		got[label(labels, "result")+"/"+label(labels, "reason")] += int64(v)
	}
	want := map[string]int64{}
	if allowed > 0 {
		want["allow/ok"] = allowed
	}
	if denied > 0 {
		want["deny/invalid_api_key"] = denied
	}
	keys := make([]string, 0, len(got)+len(want))
	for k := range got {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	fmt.Fprintln(w, "keygate's own decision counters (result/reason: counted, sent):")
	bad := false
	for _, k := range keys {
		mark := "ok"
		if got[k] != want[k] {
			mark, bad = "UNEXPECTED", true
		}
		fmt.Fprintf(w, "  %-28s %10d %10d  %s\n", k, got[k], want[k], mark)
	}
	if bad {
		return errors.New("keygate decided differently from what the runs meant to measure: the numbers above time another code path")
	}
	return nil
}

// decisions checks Keygate's decision counters when no ghz run was made
// (summary checks them otherwise): every request the lean client sent was
// a valid key, to be allowed.
func decisions(args []string) error {
	fs := flag.NewFlagSet("decisions", flag.ContinueOnError)
	metricsFile := fs.String("metrics", "", "Keygate's /metrics text")
	allowed := fs.Int64("allowed", 0, "valid-key requests sent, warm-ups included")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *metricsFile == "" || fs.NArg() > 0 {
		return errors.New("usage: report decisions -metrics FILE -allowed N")
	}
	return checkDecisions(os.Stdout, *metricsFile, *allowed, 0)
}

// get prints the body of a GET to Keygate's admin listener, authorised by
// the admin token in tokenFile: the script reads /metrics with it, so that
// it needs no curl. The token goes in a header, never on a command line.
func get(args []string, w io.Writer) error {
	if len(args) != 2 {
		return errors.New("usage: report get URL TOKEN_FILE")
	}
	token, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodGet, args[0], nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", args[0], resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// label returns one label's value from a Prometheus label list such as
// result="allow",reason="ok",tier="standard".
func label(labels, name string) string {
	for part := range strings.SplitSeq(labels, ",") {
		k, v, ok := strings.Cut(part, "=")
		if ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}
