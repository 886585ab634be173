package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// keys import --file: a bulk import. The file (NDJSON, one import object
// per line, as the admin API takes it) is streamed as the request body,
// and the outcomes the server streams back as it commits are read as they
// come, for the progress shown on stderr.

// importOutcome is one line of the bulk import's answer: a line's outcome,
// or the summary (Imported set).
type importOutcome struct {
	Line     int    `json:"line"`
	ID       string `json:"id,omitempty"`
	Status   string `json:"status,omitempty"`
	Error    string `json:"error,omitempty"`
	Code     string `json:"code,omitempty"`
	Imported *int   `json:"imported,omitempty"`
	Failed   *int   `json:"failed,omitempty"`
}

// progressEvery is how often progress is written when stderr is not a
// terminal (a log), which gets whole lines rather than a redrawn bar.
const progressEvery = 10 * time.Second

// maxFailedListed bounds the failed lines the table lists; -o json has
// them all.
const maxFailedListed = 100

// errImportFailed marks a bulk import in which some lines failed (exit 1).
var errImportFailed = errors.New("some lines were not imported")

// bulkImportFlags are the flags --file excludes: the file's lines carry
// every field.
var bulkImportFlags = []string{"key", "key-sha256", "key-stdin", "display-prefix", "tenant", "org", "user", "name",
	"scopes", "env", "tier", "expires-in", "metadata", "allowed-ips", "limit"}

func keysImportFile(ctx context.Context, m *mgmtCommand, file string) error {
	for _, f := range bulkImportFlags {
		if m.isSet(f) {
			m.usage()
			return m.usageErr("--file and --%s together: each line of the file gives its own fields", f)
		}
	}
	if m.output == "yaml" {
		return m.usageErr("--file answers -o table or -o json (NDJSON, a line per outcome)")
	}
	ac, err := m.client()
	if err != nil {
		return err
	}
	var (
		in   io.Reader
		size int64
	)
	if file == "-" {
		in = keyStdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			size = st.Size()
		}
		in = f
	}
	sent := &countingReader{r: in}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ac.base+pathOf("v1", "keys", "import"), io.NopCloser(sent))
	if err != nil {
		return fmt.Errorf("admin API request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+ac.token.Reveal())
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Accept", "application/x-ndjson")
	// No overall timeout: a million lines take a while. The server answers
	// each batch as it commits; a silent one is cut by the header timeout.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = adminRequestTimeout * 4
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("admin API at %s: %w (is keygate serve running? see --admin-url)", ac.base, err)
		}
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxAdminResponse))
		return errorAnswer(resp.StatusCode, raw)
	}
	p := newProgress(m.c.stderr, size, sent)
	defer p.done()
	var (
		failed  []importOutcome
		summary *importOutcome
		lines   int
	)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var o importOutcome
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			return fmt.Errorf("admin API: read outcome %d: %w", lines+1, err)
		}
		if m.raw() {
			if _, err := fmt.Fprintf(m.c.stdout, "%s\n", sc.Bytes()); err != nil {
				return err
			}
		}
		if o.Imported != nil {
			summary = &o
			break
		}
		lines++
		if o.Error != "" {
			failed = append(failed, o)
		}
		p.answered(lines)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("admin API: read outcomes: %w", err)
	}
	p.done()
	if summary == nil {
		return fmt.Errorf("admin API: the answer ended after %d outcomes, before its summary: the lines after them may or may not be imported", lines)
	}
	if !m.raw() {
		if err := printImportSummary(m.c.stdout, *summary, failed); err != nil {
			return err
		}
	}
	if summary.Error != "" {
		return fmt.Errorf("import stopped: %s (%s)", summary.Error, summary.Code)
	}
	if *summary.Failed > 0 {
		return fmt.Errorf("%d of %d lines failed: %w", *summary.Failed, *summary.Failed+*summary.Imported, errImportFailed)
	}
	return nil
}

func printImportSummary(w io.Writer, s importOutcome, failed []importOutcome) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "IMPORTED\tFAILED")
	fmt.Fprintf(tw, "%d\t%d\n", *s.Imported, *s.Failed)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(failed) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "LINE\tCODE\tERROR")
	for i, o := range failed {
		if i == maxFailedListed {
			fmt.Fprintf(tw, "…\t\t%d more (-o json lists every line)\n", len(failed)-i)
			break
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", o.Line, cell(o.Code), cell(o.Error))
	}
	return tw.Flush()
}

// countingReader counts the bytes read through it (the body sent).
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// progress shows a bulk import's progress on stderr: a bar redrawn in
// place on a terminal, a line every progressEvery otherwise.
type progress struct {
	w        io.Writer
	terminal bool
	size     int64 // of the file; 0: unknown (standard input)
	sent     *countingReader
	start    time.Time
	last     time.Time
	drawn    bool
}

func newProgress(w io.Writer, size int64, sent *countingReader) *progress {
	p := &progress{w: w, size: size, sent: sent, start: time.Now()}
	p.last = p.start
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

func (p *progress) answered(lines int) {
	now := time.Now()
	every := progressEvery
	if p.terminal {
		every = 100 * time.Millisecond
	}
	if now.Sub(p.last) < every {
		return
	}
	p.last = now
	p.draw(lines, now)
}

func (p *progress) draw(lines int, now time.Time) {
	rate := float64(lines) / max(now.Sub(p.start).Seconds(), 0.001)
	status := fmt.Sprintf("%d lines answered, %.0f/s", lines, rate)
	if p.size > 0 {
		frac := min(float64(p.sent.n.Load())/float64(p.size), 1)
		const width = 30
		n := int(frac * width)
		status = fmt.Sprintf("[%s%s] %3.0f%% sent, %s", strings.Repeat("=", n), strings.Repeat(" ", width-n), frac*100, status)
	}
	if p.terminal {
		fmt.Fprintf(p.w, "\r%s\x1b[K", status)
		p.drawn = true
		return
	}
	fmt.Fprintf(p.w, "import: %s\n", status)
}

// done ends the bar's line, so what follows starts on its own.
func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
