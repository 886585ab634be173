package testetcd

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/client/v3/snapshot"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Node is one single-member etcd cluster inside the test process. Clients
// reach it through a loopback proxy (Endpoint), which is what lets Pause
// freeze it; the member advertises the proxy's URL as its client URL, so
// clients that sync their endpoints stay behind the proxy too.
type Node struct {
	base       string // data directories live under it
	clientPort int    // the member's own; the proxy forwards to it
	peerPort   int
	proxyPort  int
	proxy      *pauseProxy

	mu    sync.Mutex
	dir   string // the current data directory: Restore moves it
	token string // the initial cluster token of the current data
	gen   int    // restores so far, for new directory names and tokens
	e     *embed.Etcd
}

const embeddedName = "keygate-test"

// Start starts a node and stops it when the test ends.
func Start(t testing.TB) *Node {
	t.Helper()
	ports := freePorts(t, 3)
	base := t.TempDir()
	n := &Node{
		base: base, clientPort: ports[0], peerPort: ports[1], proxyPort: ports[2],
		dir: filepath.Join(base, "data"), token: "keygate-test",
	}
	n.proxy = newPauseProxy(fmt.Sprintf("127.0.0.1:%d", n.proxyPort), fmt.Sprintf("127.0.0.1:%d", n.clientPort))
	n.Restart(t)
	t.Cleanup(n.Stop)
	return n
}

// Kind is "embedded" and the version the member reports (its release's
// api module, which go.mod moves together with the server's).
func (n *Node) Kind() string { return "embedded v" + version.Version }

// Endpoint is the client URL (the proxy's).
func (n *Node) Endpoint() string { return loopbackURL(n.proxyPort) }

// DirectEndpoint is the member's own client URL, behind no proxy: Pause
// does not reach it. The proxy adds a couple of hundred microseconds per
// round trip on a small machine, so benchmarks that report etcd latencies
// connect here.
func (n *Node) DirectEndpoint() string { return loopbackURL(n.clientPort) }

// Endpoints is Endpoint alone.
func (n *Node) Endpoints() []string { return []string{n.Endpoint()} }

// Restart starts the node (again, on the same ports and data) and waits
// until it serves.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.e != nil {
		t.Fatal("testetcd: Restart of a running node")
	}
	n.startLocked(t)
}

func (n *Node) startLocked(t testing.TB) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = embeddedName
	cfg.Dir = n.dir
	cfg.InitialClusterToken = n.token
	cfg.LogLevel = "error"
	// Stopping a member logs at error level ("mux: server closed");
	// tests that stop it on purpose need no such noise.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu := mustURL(loopbackURL(n.clientPort))
	pu := mustURL(loopbackURL(n.peerPort))
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{mustURL(n.Endpoint())}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	var (
		e   *embed.Etcd
		err error
	)
	// A port just released by Stop can take a moment to be free again.
	for attempt := 0; attempt < 50; attempt++ {
		if e, err = embed.StartEtcd(cfg); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(pollDeadline):
		e.Close()
		t.Fatalf("etcd not ready within %v", pollDeadline)
	}
	if err := n.proxy.start(); err != nil {
		e.Close()
		t.Fatalf("testetcd proxy: %v", err)
	}
	n.e = e
	if err := n.waitServing(); err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
}

// waitServing waits for a linearizable Get through the proxy: ReadyNotify
// says the member published itself, not that the client path works.
func (n *Node) waitServing() error {
	c, err := newClient(n.Endpoints())
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(pollDeadline)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = probe(ctx, c, embeddedName, loopbackURL(n.peerPort))
		cancel()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the node; its data stays for Restart.
func (n *Node) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopLocked(false)
}

func (n *Node) stopLocked(hard bool) {
	if n.e == nil {
		return
	}
	// Connections close first, as they do when a process exits; a member
	// closing its own would wait for in-flight requests, and a paused
	// proxy would hold those forever.
	n.proxy.stop()
	if hard {
		// HardStop skips leadership transfer and the graceful drain;
		// what the WAL holds is what a killed process would leave.
		n.e.Server.HardStop()
	}
	n.e.Close()
	<-n.e.Server.StopNotify()
	n.e = nil
}

// Kill stops the node as abruptly as a member in the test process can:
// connections are cut and the server stops without draining requests or
// handing over leadership. Unlike SIGKILL, Close still closes the backend
// cleanly, so nothing is lost that fsync would have kept anyway.
func (n *Node) Kill(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopLocked(true)
}

// Pause freezes the proxy: connections stay open, nothing is forwarded.
// The member itself keeps running, so its lease clocks go on, unlike a
// process under SIGSTOP.
func (n *Node) Pause(t testing.TB) {
	t.Helper()
	n.proxy.pause()
}

// Resume undoes Pause.
func (n *Node) Resume(t testing.TB) {
	t.Helper()
	n.proxy.resume()
}

// Snapshot saves a snapshot with the client's snapshot API, what `etcdctl
// snapshot save` does.
func (n *Node) Snapshot(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "snapshot.db")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := clientv3Config([]string{n.DirectEndpoint()})
	if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), cfg, path); err != nil {
		t.Fatalf("etcd snapshot save: %v", err)
	}
	return path
}

// Restore restores with etcdutl's snapshot package, what `etcdutl
// snapshot restore` runs, into a new data directory.
func (n *Node) Restore(t testing.TB, snap string, newCluster bool) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopLocked(false)
	n.gen++
	token := n.token
	if newCluster {
		token = fmt.Sprintf("keygate-test-restored-%d", n.gen)
	}
	dir := filepath.Join(n.base, fmt.Sprintf("restored-%d", n.gen))
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("testetcd: restore target %s exists", dir)
	}
	peer := loopbackURL(n.peerPort)
	err := etcdutl.NewV3(zap.NewNop()).Restore(etcdutl.RestoreConfig{
		SnapshotPath:        snap,
		Name:                embeddedName,
		OutputDataDir:       dir,
		PeerURLs:            []string{peer},
		InitialCluster:      embeddedName + "=" + peer,
		InitialClusterToken: token,
	})
	if err != nil {
		t.Fatalf("etcd snapshot restore: %v", err)
	}
	n.dir, n.token = dir, token
	n.startLocked(t)
}

// ClusterID asks the member directly, so it answers while paused.
func (n *Node) ClusterID(t testing.TB) uint64 {
	t.Helper()
	return clusterID(t, []string{n.DirectEndpoint()})
}

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return *u
}
