// Command bigstore measures Keygate's store at a size: it imports N keys
// into a fresh bbolt file through ImportKeys (the path of keygate keys
// import), then reopens the file in a new store and reports what an
// operator sees of it: the file's bytes per key, the time from opening to
// the first answered Check, uncached and cached Checks (time and
// allocations, through the whole decision core), and the process's memory.
//
//	go run ./bench/bigstore -keys 10000000 -dir /var/tmp/big
//
// The measuring is done by a second run of this program (-measure DIR) in
// a process of its own, so that its memory is what a server opening the
// file would hold, not what importing left mapped. Every sampled key must
// be allowed, both times: a run that measures refusals fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bigstore:", err)
		os.Exit(1)
	}
}

type settings struct {
	keys, sample, tenants, batch int
	dir, measure                 string
	keep, inProcess              bool
}

// sampleFile holds the sampled raw keys beside the store (test keys of a
// throwaway store, for the measuring run).
const sampleFile = "bigstore.sample"

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("bigstore", flag.ContinueOnError)
	var s settings
	fs.IntVar(&s.keys, "keys", 1_000_000, "keys to import")
	fs.IntVar(&s.sample, "sample", 10_000, "keys checked after reopening (each once uncached, once cached)")
	fs.IntVar(&s.tenants, "tenants", 100, "tenants the keys are spread over")
	fs.IntVar(&s.batch, "batch", 100_000, "keys per ImportKeys call")
	fs.StringVar(&s.dir, "dir", "", "directory for the store file (default: a temporary one, removed)")
	fs.BoolVar(&s.keep, "keep", false, "keep the store file (and the sampled keys beside it)")
	fs.StringVar(&s.measure, "measure", "", "only measure the store a run with -keep left in this directory")
	fs.BoolVar(&s.inProcess, "in-process", false, "measure in this process, after importing (its memory then counts the import's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	if s.measure != "" {
		b, err := os.ReadFile(filepath.Join(s.measure, sampleFile))
		if err != nil {
			return err
		}
		return measure(ctx, filepath.Join(s.measure, "keygate.db"), strings.Fields(string(b)), out)
	}
	if s.keys < 1 || s.sample < 1 || s.tenants < 1 || s.batch < 1 {
		return errors.New("-keys, -sample, -tenants and -batch must be positive")
	}
	s.sample = min(s.sample, s.keys)
	if s.dir == "" {
		dir, err := os.MkdirTemp("", "bigstore")
		if err != nil {
			return err
		}
		s.dir = dir
		if !s.keep {
			defer os.RemoveAll(dir)
		}
	}
	path := filepath.Join(s.dir, "keygate.db")
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s exists: bigstore measures a fresh store", path)
	}
	sample, took, err := fill(ctx, path, s)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "keys:        %d over %d tenants, imported in %s (%.0f keys/s)\n", s.keys, s.tenants, took.Round(time.Millisecond), float64(s.keys)/took.Seconds())
	fmt.Fprintf(out, "file:        %d bytes, %.0f bytes per key\n", fi.Size(), float64(fi.Size())/float64(s.keys))
	if !s.keep {
		defer os.Remove(path)
	}
	sf := filepath.Join(s.dir, sampleFile)
	if err := os.WriteFile(sf, []byte(strings.Join(sample, "\n")), 0o600); err != nil {
		return err
	}
	if !s.keep {
		defer os.Remove(sf)
	}
	if s.inProcess {
		return measure(ctx, path, sample, out)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "-measure", s.dir)
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("measuring run: %w", err)
	}
	return nil
}

// fill imports s.keys keys and returns an evenly spread sample of them.
func fill(ctx context.Context, path string, s settings) ([]string, time.Duration, error) {
	st, err := keystore.Open(path, keystore.Options{})
	if err != nil {
		return nil, 0, err
	}
	defer st.Close()
	tenants := make([]string, s.tenants)
	for i := range tenants {
		tn, err := st.CreateTenant(ctx, "bigstore "+strconv.Itoa(i))
		if err != nil {
			return nil, 0, err
		}
		tenants[i] = tn.ID
	}
	format := apikey.MustFormat(apikey.DefaultPrefix)
	every := s.keys / s.sample
	var sample []string
	start := time.Now()
	ims := make([]keystore.Import, 0, s.batch)
	for done := 0; done < s.keys; {
		ims = ims[:0]
		for i := done; i < min(done+s.batch, s.keys); i++ {
			raw, err := format.Generate(apikey.EnvLive)
			if err != nil {
				return nil, 0, err
			}
			if i%every == 0 && len(sample) < s.sample {
				sample = append(sample, raw)
			}
			ims = append(ims, keystore.Import{KeySpec: keystore.KeySpec{TenantID: tenants[i%len(tenants)], Name: "key " + strconv.Itoa(i), Scopes: []string{"read"}}, Raw: apikey.NewSecret(raw)})
		}
		res, err := st.ImportKeys(ctx, ims)
		if err != nil {
			return nil, 0, err
		}
		for i, r := range res {
			if r.Err != nil {
				return nil, 0, fmt.Errorf("key %d refused: %w", done+i, r.Err)
			}
		}
		done += len(ims)
	}
	return sample, time.Since(start), nil
}

// measure reopens the store as serve would and decides the sample twice.
func measure(ctx context.Context, path string, sample []string, out io.Writer) error {
	runtime.GC()
	start := time.Now()
	st, err := keystore.Open(path, keystore.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	opened := time.Since(start)
	e, err := authz.New(authz.Config{}, st)
	if err != nil {
		return err
	}
	// One request, the key changed in place: what is measured is the
	// decision, not building requests.
	req := authz.Request{Method: "GET", Path: "/", Host: "api.example.com", Peer: "10.1.2.3", Headers: map[string]string{}}
	check := func(raw string) error {
		req.Headers["x-api-key"] = raw
		d, err := e.Decide(ctx, &req)
		if err != nil {
			return err
		}
		if !d.Allow() {
			return fmt.Errorf("a stored key was refused: %s", d.Reason)
		}
		return nil
	}
	if err := check(sample[0]); err != nil {
		return err
	}
	first := time.Since(start)
	rss, _ := memory()
	fmt.Fprintf(out, "open:        %s, first Check answered %s after opening began; RSS then %s\n", opened.Round(time.Microsecond), first.Round(time.Microsecond), rss)
	for _, pass := range []string{"uncached", "cached"} {
		keys := sample
		if pass == "uncached" {
			keys = sample[1:] // the first is cached already
		}
		if len(keys) == 0 {
			continue
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		t0 := time.Now()
		for _, raw := range keys {
			if err := check(raw); err != nil {
				return err
			}
		}
		took := time.Since(t0)
		runtime.ReadMemStats(&after)
		fmt.Fprintf(out, "%-12s %d Checks, %s each, %.1f allocations and %.0f bytes each\n", pass+":", len(keys),
			(took / time.Duration(len(keys))).Round(10*time.Nanosecond),
			float64(after.Mallocs-before.Mallocs)/float64(len(keys)), float64(after.TotalAlloc-before.TotalAlloc)/float64(len(keys)))
	}
	rss, file := memory()
	fmt.Fprintf(out, "memory:      RSS %s, of which %s the store file's pages mapped in (page cache)\n", rss, file)
	return nil
}

// memory reads this process's resident memory: all of it, and the part
// that is the store file's pages mapped in (bbolt reads the file through
// mmap, and the kernel maps pages around each one read: page cache, not
// heap, dropped under memory pressure).
func memory() (rss, file string) {
	rss, file = "unknown", "unknown"
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch name {
		case "VmRSS":
			rss = strings.TrimSpace(v)
		case "RssFile":
			file = strings.TrimSpace(v)
		}
	}
	return
}
