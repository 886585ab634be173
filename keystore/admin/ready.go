package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// ReadyCheck is one dependency that /readyz probes.
type ReadyCheck struct {
	// Name identifies the dependency in /readyz's body ("store", "redis").
	// It is shown to unauthenticated callers: no address, no secret.
	Name string
	// Check reports whether the dependency answers. It is given a context
	// with the probe's timeout and should return by then; one that does not
	// is reported as a timeout all the same, and the next probe waits on
	// it rather than start another.
	Check func(ctx context.Context) error
	// Optional marks a dependency that Checks can do without (Redis with
	// fail_open): its failure is reported, as degraded, but leaves the
	// replica ready, since taking it out of service would refuse requests
	// that it would have allowed.
	Optional bool
}

// An error from Check with a Degraded method that returns true reports a
// dependency that is failing but that Checks still decide correctly
// without, for now (an etcd out of reach while the cache is trusted): the
// replica stays ready, and says it is degraded.
type degradedErr interface{ Degraded() bool }

func isDegraded(err error) bool {
	var d degradedErr
	return errors.As(err, &d) && d.Degraded()
}

// defaultReadyTimeout bounds each probe: the store's default lookup
// timeout, past which a Check on a cache miss fails too.
const defaultReadyTimeout = time.Second

// Answers of /readyz: the whole replica's status, and each check's.
const (
	statusReady       = "ready"
	statusDegraded    = "degraded"
	statusUnavailable = "unavailable"

	checkOK       = "ok"
	checkFailed   = "failed"
	checkTimeout  = "timeout"
	checkDegraded = "degraded"
)

// probe runs one ReadyCheck, at most once at a time: concurrent /readyz
// requests share the probe in flight, so an unauthenticated caller cannot
// multiply the load on a dependency, nor pile up goroutines waiting on one
// that does not answer.
type probe struct {
	ReadyCheck
	timeout time.Duration

	mu     sync.Mutex
	flight *flight
}

type flight struct {
	done chan struct{}
	err  error
}

func newProbes(checks []ReadyCheck, timeout time.Duration) ([]*probe, error) {
	if timeout < 0 {
		return nil, fmt.Errorf("admin: negative ReadyTimeout %v", timeout)
	}
	if timeout == 0 {
		timeout = defaultReadyTimeout
	}
	seen := map[string]bool{}
	probes := make([]*probe, 0, len(checks))
	for _, c := range checks {
		switch {
		case c.Name == "":
			return nil, errors.New("admin: a ready check without a name")
		case seen[c.Name]:
			return nil, fmt.Errorf("admin: two ready checks named %q", c.Name)
		case c.Check == nil:
			return nil, fmt.Errorf("admin: ready check %q has no Check", c.Name)
		}
		seen[c.Name] = true
		probes = append(probes, &probe{ReadyCheck: c, timeout: timeout})
	}
	return probes, nil
}

// run returns the outcome of a probe started now or already in flight,
// waiting at most the timeout for it.
func (p *probe) run() (string, error) {
	p.mu.Lock()
	f := p.flight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		p.flight = f
		go p.start(f)
	}
	p.mu.Unlock()

	t := time.NewTimer(p.timeout)
	defer t.Stop()
	select {
	case <-f.done:
		// A context's deadline and a socket's (a client that turns the
		// context into read deadlines) both say Timeout.
		var timeout interface{ Timeout() bool }
		switch {
		case f.err == nil:
			return checkOK, nil
		case isDegraded(f.err):
			return checkDegraded, f.err
		case errors.As(f.err, &timeout) && timeout.Timeout():
			return checkTimeout, f.err
		}
		return checkFailed, f.err
	case <-t.C:
		return checkTimeout, fmt.Errorf("no answer in %v", p.timeout)
	}
}

func (p *probe) start(f *flight) {
	// Not the request's context: the probe is shared, and one caller
	// hanging up must not fail it for the others.
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	f.err = p.Check(ctx)
	p.mu.Lock()
	p.flight = nil
	p.mu.Unlock()
	close(f.done)
}

type readyBody struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
}

// readyz probes every dependency at once and answers 503 when one that
// Checks need fails. The body names each dependency's state, never the
// error, which may hold an address.
func (a *api) readyz(w http.ResponseWriter, r *http.Request) error {
	body := readyBody{Status: statusReady}
	if len(a.ready) > 0 {
		body.Checks = make(map[string]string, len(a.ready))
	}
	type outcome struct {
		p     *probe
		state string
		err   error
	}
	results := make(chan outcome, len(a.ready))
	for _, p := range a.ready {
		go func() {
			state, err := p.run()
			results <- outcome{p, state, err}
		}()
	}
	status := http.StatusOK
	for range a.ready {
		o := <-results
		body.Checks[o.p.Name] = o.state
		if o.err == nil {
			continue
		}
		// Probes poll every few seconds, so a failing one is logged below
		// Info; the orchestrator already records the outcome.
		a.log.LogAttrs(r.Context(), slog.LevelDebug, "ready check failed",
			slog.String("check", o.p.Name), slog.Bool("optional", o.p.Optional), slog.String("error", o.err.Error()))
		switch {
		case !o.p.Optional && o.state != checkDegraded:
			body.Status, status = statusUnavailable, http.StatusServiceUnavailable
		case body.Status == statusReady:
			body.Status = statusDegraded
		}
	}
	writeJSON(w, status, body)
	return nil
}
