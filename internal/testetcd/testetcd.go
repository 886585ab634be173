// Package testetcd runs a real etcd member inside a test process
// (go.etcd.io/etcd/server/v3/embed) on loopback ports of its own, with its
// data in the test's temporary directory, so that tests can stop it and
// start it again on the same ports and data, as an operator's restart would.
package testetcd

import (
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Node is one single-member etcd cluster.
type Node struct {
	dir        string
	clientPort int
	peerPort   int

	mu sync.Mutex
	e  *embed.Etcd
}

// Start starts a node and stops it when the test ends.
func Start(t testing.TB) *Node {
	t.Helper()
	ports := freePorts(t, 2)
	n := &Node{dir: t.TempDir(), clientPort: ports[0], peerPort: ports[1]}
	n.Restart(t)
	t.Cleanup(n.Stop)
	return n
}

// Endpoint is the client URL.
func (n *Node) Endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", n.clientPort) }

// Restart starts the node (again, on the same ports and data) and waits
// until it serves.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.e != nil {
		t.Fatal("testetcd: Restart of a running node")
	}
	cfg := embed.NewConfig()
	cfg.Name = "keygate-test"
	cfg.Dir = n.dir
	cfg.LogLevel = "error"
	// Stopping a member logs at error level ("mux: server closed");
	// tests that stop it on purpose need no such noise.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu := mustURL(fmt.Sprintf("http://127.0.0.1:%d", n.clientPort))
	pu := mustURL(fmt.Sprintf("http://127.0.0.1:%d", n.peerPort))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
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
	case <-time.After(60 * time.Second):
		e.Close()
		t.Fatal("etcd not ready within 60s")
	}
	n.e = e
}

// Stop stops the node; its data stays for Restart.
func (n *Node) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.e == nil {
		return
	}
	n.e.Close()
	<-n.e.Server.StopNotify()
	n.e = nil
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return *u
}
