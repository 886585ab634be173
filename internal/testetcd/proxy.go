package testetcd

import (
	"net"
	"sync"
	"time"
)

// pauseProxy forwards a loopback port to an embedded member's client port.
// It exists because a member inside the test process cannot be frozen with
// SIGSTOP: while paused, the proxy keeps its connections open and accepts
// new ones but forwards nothing either way, which is what clients of a
// frozen process see.
type pauseProxy struct {
	addr, target string

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	paused chan struct{} // non-nil while paused; closed by resume
	done   chan struct{} // closed by stop
	wg     sync.WaitGroup
}

func newPauseProxy(addr, target string) *pauseProxy {
	return &pauseProxy{addr: addr, target: target}
}

// start listens on addr again; a port just released by stop can take a
// moment to be free.
func (p *pauseProxy) start() error {
	var (
		ln  net.Listener
		err error
	)
	for attempt := 0; attempt < 50; attempt++ {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln, p.conns, p.paused, p.done = ln, map[net.Conn]struct{}{}, nil, make(chan struct{})
	done := p.done
	p.mu.Unlock()
	p.wg.Add(1)
	go p.accept(ln, done)
	return nil
}

// stop closes the listener and every connection, as a stopping member
// closes its own, and waits for the forwarding goroutines.
func (p *pauseProxy) stop() {
	p.mu.Lock()
	if p.ln == nil {
		p.mu.Unlock()
		return
	}
	p.ln.Close()
	p.ln = nil
	close(p.done)
	for c := range p.conns {
		c.Close()
	}
	p.conns, p.paused = nil, nil
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *pauseProxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused == nil {
		p.paused = make(chan struct{})
	}
}

func (p *pauseProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused != nil {
		close(p.paused)
		p.paused = nil
	}
}

// gate blocks while the proxy is paused; false means it stopped.
func (p *pauseProxy) gate(done chan struct{}) bool {
	for {
		p.mu.Lock()
		paused := p.paused
		p.mu.Unlock()
		select {
		case <-done:
			return false
		default:
		}
		if paused == nil {
			return true
		}
		select {
		case <-paused:
		case <-done:
			return false
		}
	}
}

// track registers c to be closed by stop; false means stop already ran.
func (p *pauseProxy) track(c net.Conn, done chan struct{}) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-done:
		c.Close()
		return false
	default:
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *pauseProxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
	c.Close()
}

func (p *pauseProxy) accept(ln net.Listener, done chan struct{}) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c, done) {
			return
		}
		p.wg.Add(1)
		go p.serve(c, done)
	}
}

func (p *pauseProxy) serve(c net.Conn, done chan struct{}) {
	defer p.wg.Done()
	defer p.untrack(c)
	if !p.gate(done) {
		return
	}
	b, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return
	}
	if !p.track(b, done) {
		return
	}
	defer p.untrack(b)
	var wg sync.WaitGroup
	wg.Add(2)
	// When either direction ends, both connections close: gRPC has no use
	// for half-closed connections, and it ends the other copy.
	go func() { defer wg.Done(); p.copy(b, c, done); c.Close(); b.Close() }()
	go func() { defer wg.Done(); p.copy(c, b, done); c.Close(); b.Close() }()
	wg.Wait()
}

// copy forwards src to dst, checking the gate both before reading (so a
// paused proxy leaves bytes in the kernel's buffers, as a frozen process
// does) and before writing (a read already waiting when Pause ran must
// not forward what it gets).
func (p *pauseProxy) copy(dst, src net.Conn, done chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		if !p.gate(done) {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			if !p.gate(done) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
