// Package reload keeps a running server's routes and policy in step with
// its config file: it watches the file (on SIGHUP, and every
// reload_interval), applies a new version to the decision engine only once
// it is known to be whole, refuses a file that does not validate or would
// open every route, and logs, by rule name, what each reload changed.
// Everything else in the file takes effect on restart; a change there is
// reported, not applied.
//
// It depends on the config and on one method of the engine (PolicySetter),
// declared here where it is used.
package reload

import (
	"context"
	"log/slog"
	"os"
	"reflect"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/config"
)

// PolicySetter is the engine a reload swaps the policy of, atomically, so
// that no request is dropped or decided by half a policy.
type PolicySetter interface {
	SetPolicy(authz.Policy) error
}

// Watch reloads the routes and policy of the config file on SIGHUP
// and when the file changes, without dropping a request: the engine swaps
// its route table atomically. A file that does not validate is refused and
// the running policy stays. Other sections need a restart; a change to them
// is reported, not applied. hup delivers SIGHUP (the caller registers it);
// last is the file's stamp (Stamp) from before serve read it. Serving
// without a config file, there is nothing to reload: SIGHUP is logged and
// ignored. Watch returns when ctx ends.
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
func Watch(ctx context.Context, running *config.Config, last string, engine PolicySetter, hup <-chan os.Signal, log *slog.Logger) {
	path := running.File()
	if path == "" {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP ignored: serving without a config file, nothing to reload")
			}
		}
	}
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

// watcher is the state of Watch between looks.
type watcher struct {
	path    string
	started *config.Config // as serve started: sections outside the policy
	applied authz.Policy   // in the engine now
	engine  PolicySetter
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

// sameOutsidePolicy reports whether a and b differ only in what a reload
// applies, so that a change it cannot apply is reported.
func sameOutsidePolicy(a, b *config.Config) bool {
	x, y := *a, *b
	x.Routes, y.Routes = nil, nil
	x.Policy = y.Policy
	return reflect.DeepEqual(x, y)
}
