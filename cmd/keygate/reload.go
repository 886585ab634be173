package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"syscall"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/config"
)

// watchConfig reloads the routes and policy of the config file on SIGHUP
// and when the file changes, without dropping a request: the engine swaps
// its route table atomically. A file that does not validate is refused and
// the running policy stays. Other sections need a restart; a change to them
// is reported, not applied. hup delivers SIGHUP (the caller registers it);
// last is the file's stamp (fileStamp) from before serve read it.
//
// The watch looks at the file every reload_interval, each look at least
// that long after the previous one ends, and applies a changed file only
// when two consecutive looks found it the same: same bytes (SHA-256), size,
// mtime and file (device and inode). A writer that is not atomic (an
// editor saving in place, cp, scp, rm and then a slow write, a tool
// appending in pieces) leaves a prefix of the file for a moment, and a
// prefix cut before a rule is still valid YAML that drops the rule: applied,
// it would open the route. Two looks mean a version must stay at least one
// reload_interval to be applied.
//
// A file that arrives by an atomic rename (a ConfigMap's ..data symlink
// swap, write-then-rename) waits for the second look too. From polling, a
// rename cannot be told apart from "removed and being written again": both
// show a new inode at the path, and what would separate them (ctime after
// mtime, the directory's mtime, the new file's mtime before the last look)
// depends on the filesystem's clocks and semantics (NFS, FUSE, coarse
// timestamps) and on nobody touching the file's metadata mid-write. A
// shortcut there would reopen the hole for the writers it is meant to
// catch, and one more reload_interval is little next to a ConfigMap's own
// propagation delay. SIGHUP reloads at once: the operator asked.
//
// The watch cannot know a file is incomplete if it stays so: a truncated
// file left in place is applied after two looks. That is why each reload
// logs, by rule name, what it added, removed and changed.
func watchConfig(ctx context.Context, running *config.Config, last string, engine *authz.Engine, hup <-chan os.Signal, log *slog.Logger) {
	path := running.File()
	// What serve applied; a reload logs its changes against it. serve
	// refused to start had the policy not built, so the error is moot.
	applied, _ := running.AuthzPolicy()
	w := &watcher{path: path, started: running, applied: applied, engine: engine, log: log}
	w.pending = lookAt(path)
	// Unchanged since serve read it: what runs is this content. Else the
	// file changed meanwhile, and it is reloaded once it is stable.
	if w.pending.err == nil && w.pending.stamp() == last {
		w.acted = w.pending.key()
		// The file as read, without the flags and environment serve
		// applied over it, which would otherwise show as a change outside
		// the policy at every reload.
		if c, err := config.Parse(path, w.pending.raw); err == nil {
			w.started = c
		}
	}

	var (
		timer *time.Timer
		tick  <-chan time.Time
		every = time.Duration(running.ReloadInterval)
	)
	if every > 0 {
		// A Timer reset after each look, not a Ticker: a Ticker delivers a
		// tick it held while the watch was busy and then the next one on
		// time, two looks closer together than reload_interval.
		timer = time.NewTimer(every)
		defer timer.Stop()
		tick = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: reloading config", "file", path)
			l := lookAt(path)
			w.pending = l
			w.apply(l, true)
		case <-tick:
			w.tick()
			timer.Reset(every)
		}
	}
}

// watcher is the state of watchConfig between looks.
type watcher struct {
	path    string
	started *config.Config // as serve started: sections outside the policy
	applied authz.Policy   // in the engine now
	engine  *authz.Engine
	log     *slog.Logger
	// pending is the previous look; acted is the key of the content last
	// applied or refused, so that a file is acted on once per version.
	pending look
	acted   string
}

func (w *watcher) tick() {
	l := lookAt(w.path)
	prev := w.pending
	w.pending = l
	if l.key() == w.acted {
		return
	}
	if !l.same(prev) {
		attrs := []any{"file", w.path, "size", l.size(), "sha256", l.short()}
		if l.err != nil {
			attrs = append(attrs, "error", l.err)
		}
		w.log.Debug("config file changed: reloading once a second look finds it the same", attrs...)
		return
	}
	w.log.Info("config file changed: reloading", "file", w.path)
	w.apply(l, false)
}

// apply loads the bytes of l, and only those: the file may have changed
// since, and what was hashed is what is applied. asked is true for SIGHUP:
// the operator asked for this file, so it may drop every route.
func (w *watcher) apply(l look, asked bool) {
	w.acted = l.key()
	if l.err != nil {
		w.log.Error("config reload refused; the running policy stays", "file", w.path, "error", l.err)
		return
	}
	if noYAML(l.raw) {
		// An editor or a non-atomic copy can leave the file empty, or cut
		// after its leading comments; either would mean "no routes" and
		// open them all.
		w.log.Error("config reload refused: the file is empty; the running policy stays", "file", w.path, "size", len(l.raw))
		return
	}
	next, err := config.Parse(w.path, l.raw)
	if err != nil {
		w.log.Error("config reload refused; the running policy stays", "error", err)
		return
	}
	pol, err := next.AuthzPolicy()
	if err == nil && !asked && len(pol.Rules) == 0 && len(w.applied.Rules) > 0 {
		// A file cut off before its routes is valid YAML with none, and
		// would let any key through every route; the watch cannot tell it
		// from an intended change, the operator can.
		w.log.Error("config reload refused: the file has no routes while some run (a file cut off before its routes looks like this); send SIGHUP to apply it", "file", w.path, "running_rules", len(w.applied.Rules))
		return
	}
	if err == nil {
		err = w.engine.SetPolicy(pol)
	}
	if err != nil {
		w.log.Error("config reload refused; the running policy stays", "file", w.path, "error", err)
		return
	}
	attrs := append([]any{"file", w.path, "rules", len(pol.Rules), "sha256", l.short()}, policyChanges(w.applied, pol)...)
	w.applied = pol
	w.log.Info("routes and policy reloaded", attrs...)
	if !sameOutsidePolicy(w.started, next) {
		w.log.Warn("config changes outside routes and policy take effect on restart")
	}
}

// maxConfigBytes bounds what a look reads, every reload_interval: a path
// pointed at a huge file must not cost that much memory each time.
const maxConfigBytes = 16 << 20

// look is one reading of the config file: its bytes and what stat said of
// the file they were read from, or why it could not be read.
type look struct {
	fi  os.FileInfo
	raw []byte
	sum [sha256.Size]byte
	err error
}

// errChanging marks a look during which the file grew or shrank: it never
// counts as a stable look.
var errChanging = errors.New("the file changed while it was read")

func lookAt(path string) look {
	// O_NONBLOCK: a FIFO at the path must not block the watch (and SIGHUP)
	// in open; it is refused below as not a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return look{err: fmt.Errorf("read config: %w", err)}
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return look{err: fmt.Errorf("read config %s: %w", path, err)}
	}
	// Stat after reading, from the descriptor read: the inode is the one
	// whose bytes these are, whatever the path points at by now.
	fi, err := f.Stat()
	switch {
	case err != nil:
		return look{err: fmt.Errorf("stat config %s: %w", path, err)}
	case !fi.Mode().IsRegular():
		return look{err: fmt.Errorf("config %s: not a regular file (%s)", path, fi.Mode().Type())}
	case len(raw) > maxConfigBytes:
		return look{err: fmt.Errorf("config %s: larger than %d bytes", path, maxConfigBytes)}
	case fi.Size() != int64(len(raw)):
		return look{err: fmt.Errorf("config %s: %w", path, errChanging)}
	}
	return look{fi: fi, raw: raw, sum: sha256.Sum256(raw)}
}

// same reports whether two looks saw one unchanged file.
func (l look) same(o look) bool {
	if l.err != nil || o.err != nil {
		// Two looks failing alike is a stable state, reported once; a file
		// changing under the read is not.
		return l.err != nil && o.err != nil && l.err.Error() == o.err.Error() && !errors.Is(l.err, errChanging)
	}
	return l.sum == o.sum && l.fi.Size() == o.fi.Size() && l.fi.ModTime().Equal(o.fi.ModTime()) && os.SameFile(l.fi, o.fi)
}

// key names a version of the file by its content (or by why it could not
// be read), so that a new inode with the same bytes, as a ConfigMap update
// of another key brings, is not a change.
func (l look) key() string {
	if l.err != nil {
		return "error: " + l.err.Error()
	}
	return hex.EncodeToString(l.sum[:])
}

func (l look) short() string {
	if l.err != nil {
		return ""
	}
	return hex.EncodeToString(l.sum[:6])
}

func (l look) size() int64 {
	if l.fi == nil {
		return -1
	}
	return l.fi.Size()
}

func (l look) stamp() string { return stampOf(l.fi) }

// noYAML reports whether raw holds only blank lines, comments and
// document markers: valid YAML for a config with no routes.
func noYAML(raw []byte) bool {
	for line := range bytes.Lines(raw) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' && string(line) != "---" && string(line) != "..." {
			return false
		}
	}
	return true
}

// fileStamp is what serve notes before it reads the file, for the watch to
// tell whether the file it first looks at is the one serve read.
func fileStamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	return stampOf(fi)
}

func stampOf(fi os.FileInfo) string {
	if fi == nil {
		return "missing"
	}
	return fmt.Sprint(fi.ModTime().UnixNano(), fi.Size())
}

func sameOutsidePolicy(a, b *config.Config) bool {
	x, y := *a, *b
	x.Routes, y.Routes = nil, nil
	x.Policy = y.Policy
	return reflect.DeepEqual(x, y)
}
