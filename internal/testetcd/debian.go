package testetcd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/syncbuf"
)

// Cluster is Debian's etcd binary run as n member processes on loopback
// (a static --initial-cluster), killed when the test ends. Besides Server
// it offers per-member operations, for tests that lose one member (the
// leader, say) rather than the whole cluster.
type Cluster struct {
	bin, ctl string
	version  string
	base     string

	mu      sync.Mutex
	token   string // the initial cluster token of the current data
	gen     int    // restores so far, for new directory names and tokens
	members []*member
}

type member struct {
	name                 string
	clientPort, peerPort int
	dir                  string
	out                  *syncbuf.Buffer // every run's output, for a failing test's log
	outFrom              int             // where the current run's output starts
	cmd                  *exec.Cmd
	exited               chan struct{} // closed when cmd exits
}

func (m *member) clientURL() string { return loopbackURL(m.clientPort) }
func (m *member) peerURL() string   { return loopbackURL(m.peerPort) }

func (m *member) running() bool {
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

const missingEtcd = "etcd is not on PATH: `make test` installs it (apt-get install etcd-server etcd-client)"

// StartDebian starts a single-member Debian etcd.
func StartDebian(t testing.TB) Server {
	t.Helper()
	return StartDebianCluster(t, 1)
}

// StartDebianCluster starts an n-member Debian etcd cluster and waits until
// every member serves.
func StartDebianCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("testetcd: a cluster of %d members", n)
	}
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("%s; %v", missingEtcd, err)
	}
	ctl, err := exec.LookPath("etcdctl")
	if err != nil {
		t.Fatalf("%s; %v", missingEtcd, err)
	}
	version, err := binaryVersion(bin)
	if err != nil {
		t.Fatalf("etcd --version: %v", err)
	}
	c := &Cluster{bin: bin, ctl: ctl, version: version, base: t.TempDir()}
	// Cleanups run last-registered first: the output is logged after the
	// processes exit, and the data directories go after both.
	t.Cleanup(func() {
		if t.Failed() {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, m := range c.members {
				t.Logf("etcd %s (%s) output:\n%s", m.name, m.clientURL(), m.out.String())
			}
		}
	})
	t.Cleanup(c.killAll)

	// Ports are free when we look, but another process can take one
	// before etcd binds it: then that member exits, and the cluster starts
	// again on other ports (the peer ports are in every member's flags).
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		ports := freePorts(t, 2*n)
		c.mu.Lock()
		c.token = "keygate-test-" + randomHex()
		c.members = nil
		for i := range n {
			c.members = append(c.members, &member{
				name:       fmt.Sprintf("m%d", i),
				clientPort: ports[2*i], peerPort: ports[2*i+1],
				dir: filepath.Join(c.base, fmt.Sprintf("try%d-m%d", attempt, i)),
				out: &syncbuf.Buffer{},
			})
		}
		err := c.spawnAll(c.members)
		if err == nil {
			err = c.await(c.members, false)
		}
		c.mu.Unlock()
		if err == nil {
			return c
		}
		c.killAll()
		if !errors.Is(err, errPortTaken) {
			t.Fatalf("start etcd: %v", err)
		}
		last = err
	}
	t.Fatalf("etcd did not start in 5 attempts: %v", last)
	return nil
}

var errPortTaken = errors.New("port taken by another process")

func randomHex() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

var versions sync.Map // binary path → version

func binaryVersion(bin string) (string, error) {
	if v, ok := versions.Load(bin); ok {
		return v.(string), nil
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	v := strings.TrimSpace(strings.TrimPrefix(first, "etcd Version:"))
	versions.Store(bin, v)
	return v, nil
}

// childEnv drops ETCD_* and ETCDCTL_* variables: etcd reads its flags from
// them, and a developer's shell must not point a test's member elsewhere.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ETCD_") || strings.HasPrefix(kv, "ETCDCTL_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "ETCDCTL_API=3")
	if runtime.GOARCH != "amd64" {
		// etcd 3.4 refuses to start on other architectures without it.
		env = append(env, "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
	}
	return env
}

func (c *Cluster) initialCluster() string {
	var parts []string
	for _, m := range c.members {
		parts = append(parts, m.name+"="+m.peerURL())
	}
	return strings.Join(parts, ",")
}

// spawn starts m's process; with data in m.dir the --initial-* flags are
// ignored, as they are on a real restart.
func (c *Cluster) spawn(m *member) error {
	args := []string{
		"--name", m.name,
		"--data-dir", m.dir,
		"--listen-client-urls", m.clientURL(),
		"--advertise-client-urls", m.clientURL(),
		"--listen-peer-urls", m.peerURL(),
		"--initial-advertise-peer-urls", m.peerURL(),
		"--initial-cluster", c.initialCluster(),
		"--initial-cluster-token", c.token,
		"--initial-cluster-state", "new",
		// 3.4 defaults to capnslog at info level; zap at error level
		// is quiet unless something is wrong.
		"--logger=zap", "--log-outputs=stderr", "--log-level=error",
	}
	m.outFrom = len(m.out.String())
	fmt.Fprintf(m.out, "--- %s %s\n", c.bin, strings.Join(args, " "))
	cmd := exec.Command(c.bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = m.out, m.out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start etcd %s: %w", m.name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	m.cmd, m.exited = cmd, exited
	return nil
}

func (c *Cluster) spawnAll(ms []*member) error {
	for _, m := range ms {
		if err := c.spawn(m); err != nil {
			return err
		}
	}
	return nil
}

// await waits until every member of ms serves a linearizable Get. A member
// that exits because its port is in use is started again on the same port
// when retryBind (a restart: the port was just ours, and is free again in
// a moment); otherwise await returns errPortTaken.
func (c *Cluster) await(ms []*member, retryBind bool) error {
	pending := map[*member]bool{}
	for _, m := range ms {
		pending[m] = true
	}
	binds := 0
	deadline := time.Now().Add(pollDeadline)
	var last error
	for {
		for _, m := range ms {
			if !pending[m] {
				continue
			}
			select {
			case <-m.exited:
				out := m.out.String()[m.outFrom:]
				if strings.Contains(out, "address already in use") {
					if retryBind && binds < 50 {
						binds++
						time.Sleep(100 * time.Millisecond)
						if err := c.spawn(m); err != nil {
							return err
						}
						continue
					}
					return fmt.Errorf("%s: %w:\n%s", m.name, errPortTaken, out)
				}
				return fmt.Errorf("etcd %s exited (%v):\n%s", m.name, m.cmd.ProcessState, out)
			default:
			}
			err := c.probeMember(m)
			if err == nil {
				delete(pending, m)
				continue
			}
			if errors.Is(err, errNotOurs) {
				return fmt.Errorf("%s on %s: %w (%w)", m.name, m.clientURL(), errPortTaken, err)
			}
			last = fmt.Errorf("%s: %w", m.name, err)
		}
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd not serving within %v: %v", pollDeadline, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) probeMember(m *member) error {
	cl, err := newClient([]string{m.clientURL()})
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return probe(ctx, cl, m.name, m.peerURL())
}

// Kind is "debian etcd" and the binary's version.
func (c *Cluster) Kind() string { return "debian etcd " + c.version }

// Endpoints are the members' client URLs, in member order.
func (c *Cluster) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL())
	}
	return eps
}

// Endpoint is the first member's client URL.
func (c *Cluster) Endpoint() string { return c.Endpoints()[0] }

// Stop stops every member with SIGTERM, at once, and waits for them.
func (c *Cluster) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stop(c.members, syscall.SIGTERM)
}

// Kill stops every member with SIGKILL.
func (c *Cluster) Kill(t testing.TB) {
	t.Helper()
	c.killAll()
}

func (c *Cluster) killAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stop(c.members, syscall.SIGKILL)
}

// stop signals every running member of ms and waits for it to exit; one
// that ignores SIGTERM for 15s is killed. SIGTERM goes to one member at a
// time: a stopping leader hands its leadership over first, and when the
// member it picks is stopping too, the handover waits out its timeout.
func (c *Cluster) stop(ms []*member, sig syscall.Signal) {
	var running []*member
	for _, m := range ms {
		if m.running() {
			running = append(running, m)
		}
	}
	wait := func(m *member) {
		select {
		case <-m.exited:
		case <-time.After(15 * time.Second):
			m.cmd.Process.Kill()
			<-m.exited
		}
	}
	for _, m := range running {
		m.cmd.Process.Signal(sig)
		// A paused member handles SIGTERM only once continued.
		m.cmd.Process.Signal(syscall.SIGCONT)
		if sig != syscall.SIGKILL {
			wait(m)
		}
	}
	for _, m := range running {
		wait(m)
	}
}

// Restart starts every stopped member and waits until each serves.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var stopped []*member
	for _, m := range c.members {
		if !m.running() {
			stopped = append(stopped, m)
		}
	}
	if len(stopped) == 0 {
		t.Fatal("testetcd: Restart of a running cluster")
	}
	c.startMembers(t, stopped)
}

func (c *Cluster) startMembers(t testing.TB, ms []*member) {
	t.Helper()
	err := c.spawnAll(ms)
	if err == nil {
		err = c.await(ms, true)
	}
	if err != nil {
		t.Fatalf("restart etcd: %v", err)
	}
}

// Pause freezes every member (SIGSTOP): connections stay open, nothing
// answers.
func (c *Cluster) Pause(t testing.TB) {
	t.Helper()
	c.signalAll(t, syscall.SIGSTOP)
}

// Resume continues every member (SIGCONT).
func (c *Cluster) Resume(t testing.TB) {
	t.Helper()
	c.signalAll(t, syscall.SIGCONT)
}

func (c *Cluster) signalAll(t testing.TB, sig syscall.Signal) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.running() {
			signal(t, m, sig)
		}
	}
}

func signal(t testing.TB, m *member, sig syscall.Signal) {
	t.Helper()
	if err := m.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal etcd %s: %v", m.name, err)
	}
	if sig == syscall.SIGSTOP {
		if err := waitStopped(m.cmd.Process.Pid); err != nil {
			t.Fatalf("etcd %s: %v", m.name, err)
		}
	}
}

// waitStopped waits until every thread of pid is stopped: kill returns
// before a thread running on another CPU stops, and that thread can still
// answer a request sent right after Pause. Without /proc it cannot tell,
// and returns at once.
func waitStopped(pid int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		if err != nil || len(tasks) == 0 {
			return nil
		}
		all := true
		for _, task := range tasks {
			b, err := os.ReadFile(task)
			if err != nil {
				continue // the thread exited
			}
			// The state follows the command name, which is in
			// parentheses and may contain spaces.
			i := strings.LastIndexByte(string(b), ')')
			if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d not stopped 5s after SIGSTOP", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// Snapshot runs `etcdctl snapshot save` against the first running member.
func (c *Cluster) Snapshot(t testing.TB) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var ep string
	for _, m := range c.members {
		if m.running() {
			ep = m.clientURL()
			break
		}
	}
	if ep == "" {
		t.Fatal("testetcd: Snapshot of a stopped cluster")
	}
	path := filepath.Join(t.TempDir(), "snapshot.db")
	c.etcdctl(t, "--endpoints="+ep, "--dial-timeout=5s", "--command-timeout=30s", "snapshot", "save", path)
	return path
}

// Restore stops every member and runs `etcdctl snapshot restore` for each
// into a new data directory, then starts them all.
func (c *Cluster) Restore(t testing.TB, snapshot string, newCluster bool) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stop(c.members, syscall.SIGTERM)
	c.gen++
	if newCluster {
		c.token = fmt.Sprintf("keygate-test-%s-restored-%d", randomHex(), c.gen)
	}
	for _, m := range c.members {
		dir := filepath.Join(c.base, fmt.Sprintf("restored%d-%s", c.gen, m.name))
		c.etcdctl(t, "snapshot", "restore", snapshot,
			"--name", m.name,
			"--data-dir", dir,
			"--initial-cluster", c.initialCluster(),
			"--initial-cluster-token", c.token,
			"--initial-advertise-peer-urls", m.peerURL())
		m.dir = dir
	}
	c.startMembers(t, c.members)
}

func (c *Cluster) etcdctl(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.ctl, args...)
	cmd.Env = childEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// ClusterID asks the first member that answers.
func (c *Cluster) ClusterID(t testing.TB) uint64 {
	t.Helper()
	return clusterID(t, c.Endpoints())
}

func (c *Cluster) member(t testing.TB, i int) *member {
	t.Helper()
	if i < 0 || i >= len(c.members) {
		t.Fatalf("testetcd: no member %d in a cluster of %d", i, len(c.members))
	}
	return c.members[i]
}

// Members is the number of members.
func (c *Cluster) Members() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.members)
}

// StopMember stops member i with SIGTERM.
func (c *Cluster) StopMember(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stop([]*member{c.member(t, i)}, syscall.SIGTERM)
}

// KillMember stops member i with SIGKILL.
func (c *Cluster) KillMember(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stop([]*member{c.member(t, i)}, syscall.SIGKILL)
}

// RestartMember starts member i again and waits until it serves (which
// needs a quorum of the cluster).
func (c *Cluster) RestartMember(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(t, i)
	if m.running() {
		t.Fatalf("testetcd: RestartMember of running member %d", i)
	}
	c.startMembers(t, []*member{m})
}

// PauseMember freezes member i (SIGSTOP); ResumeMember continues it.
func (c *Cluster) PauseMember(t testing.TB, i int) {
	t.Helper()
	c.signalMember(t, i, syscall.SIGSTOP)
}

func (c *Cluster) ResumeMember(t testing.TB, i int) {
	t.Helper()
	c.signalMember(t, i, syscall.SIGCONT)
}

func (c *Cluster) signalMember(t testing.TB, i int, sig syscall.Signal) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(t, i)
	if !m.running() {
		t.Fatalf("testetcd: member %d is not running", i)
	}
	signal(t, m, sig)
}

// LeaderIndex is the index of the current leader, waiting (up to 60s) for
// the running members to agree on one that answers.
func (c *Cluster) LeaderIndex(t testing.TB) int {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	deadline := time.Now().Add(pollDeadline)
	var last error
	for time.Now().Before(deadline) {
		ids := map[uint64]int{}
		var leader uint64
		for i, m := range c.members {
			if !m.running() {
				continue
			}
			id, l, err := memberStatus(m.clientURL())
			if err != nil {
				last = err
				continue
			}
			ids[id] = i
			if l != 0 {
				leader = l
			}
		}
		if i, ok := ids[leader]; ok && leader != 0 {
			return i
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("etcd cluster has no leader within %v: %v", pollDeadline, last)
	return -1
}

// memberStatus is the member's own ID and the leader it knows of.
func memberStatus(ep string) (id, leader uint64, err error) {
	cl, err := newClient([]string{ep})
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := cl.Status(ctx, ep)
	if err != nil {
		return 0, 0, err
	}
	return st.Header.MemberId, st.Leader, nil
}
