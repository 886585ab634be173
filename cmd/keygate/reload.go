package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/config"
)

// watchConfig reloads the routes and policy of the config file on SIGHUP
// and when the file changes, without dropping a request: the engine swaps
// its route table atomically. A file that does not validate is refused and
// the running policy stays. Other sections need a restart; a change to them
// is reported, not applied. hup delivers SIGHUP (the caller registers it);
// last is the file's stamp from before serve read it.
func watchConfig(ctx context.Context, running *config.Config, last string, engine *authz.Engine, hup <-chan os.Signal, log *slog.Logger) {
	var tick <-chan time.Time
	if every := time.Duration(running.ReloadInterval); every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: reloading config", "file", running.File())
		case <-tick:
			now := fileStamp(running.File())
			if now == last {
				continue
			}
			last = now
			log.Info("config file changed: reloading", "file", running.File())
		}
		last = fileStamp(running.File())
		if fi, err := os.Stat(running.File()); err == nil && fi.Size() == 0 {
			// An editor or a non-atomic copy can leave the file empty for a
			// moment; an empty file would mean "no routes" and open them all.
			log.Error("config reload refused: the file is empty; the running policy stays", "file", running.File())
			continue
		}
		next, err := config.Load(running.File())
		if err != nil {
			log.Error("config reload refused; the running policy stays", "error", err)
			continue
		}
		pol, err := next.AuthzPolicy()
		if err == nil {
			err = engine.SetPolicy(pol)
		}
		if err != nil {
			log.Error("config reload refused; the running policy stays", "error", err)
			continue
		}
		log.Info("routes and policy reloaded", "rules", len(pol.Rules))
		if !sameOutsidePolicy(running, next) {
			log.Warn("config changes outside routes and policy take effect on restart")
		}
	}
}

// fileStamp changes when a file is rewritten (or replaced, as a Kubernetes
// ConfigMap update does).
func fileStamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
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
