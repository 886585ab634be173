// Package testetcd runs real etcd clusters for tests, on loopback ports of
// their own with their data in the test's temporary directories: an
// embedded member (go.etcd.io/etcd/server/v3/embed, the version go.mod
// builds) and Debian's etcd binary as separate processes, one member or
// several. Tests stop, kill, freeze, snapshot and restore them as an
// operator or a failure would, through one interface, Server. Tests never
// use a system etcd (Debian's package may run one on 2379), and a missing
// etcd binary fails the test: `make test` installs it.
package testetcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Server is one etcd cluster a test runs (one member or several).
type Server interface {
	// Kind names the implementation and its version, e.g. "embedded
	// v3.7.3" or "debian etcd 3.4.23".
	Kind() string
	// Endpoints are the client URLs of every member.
	Endpoints() []string
	// Endpoint is the first of Endpoints.
	Endpoint() string
	// Stop stops every member gracefully; the data stays for Restart.
	Stop()
	// Restart starts every stopped member again on the same ports and
	// data and waits until each serves a linearizable Get.
	Restart(t testing.TB)
	// Kill stops every member abruptly (SIGKILL for processes); the data
	// stays for Restart.
	Kill(t testing.TB)
	// Pause makes the cluster stop answering while it keeps client
	// connections open, a hung etcd rather than a dead one; Resume undoes
	// it.
	Pause(t testing.TB)
	Resume(t testing.TB)
	// Snapshot saves a snapshot of the running cluster (`etcdctl snapshot
	// save`) into t.TempDir() and returns its path.
	Snapshot(t testing.TB) string
	// Restore is an operator's restore: it stops every member, restores
	// the snapshot into new data directories and starts every member on
	// the same ports. With newCluster the restore uses a new initial
	// cluster token, so the cluster ID changes; without, the cluster ID
	// stays and only the revision history goes back.
	Restore(t testing.TB, snapshot string, newCluster bool)
	// ClusterID is the cluster ID a response header reports.
	ClusterID(t testing.TB) uint64
}

// EnvKind restricts Each to one kind of server: "embedded" or "debian".
const EnvKind = "KEYGATE_TEST_ETCD"

// Each runs fn as the subtests "embedded" and "debian"; start starts a
// single-member server of that kind, stopped when the test ends.
func Each(t *testing.T, fn func(t *testing.T, start func(testing.TB) Server)) {
	t.Helper()
	kinds := []struct {
		name  string
		start func(testing.TB) Server
	}{
		{"embedded", func(tb testing.TB) Server { return Start(tb) }},
		{"debian", StartDebian},
	}
	only := os.Getenv(EnvKind)
	if only != "" && only != "embedded" && only != "debian" {
		t.Fatalf("%s=%q: want embedded, debian or unset (both)", EnvKind, only)
	}
	for _, k := range kinds {
		if only != "" && only != k.name {
			continue
		}
		t.Run(k.name, func(t *testing.T) { fn(t, k.start) })
	}
}

// pollDeadline bounds every wait for a member to serve: a slow CI machine
// can take seconds to elect a leader, but not a minute.
const pollDeadline = 60 * time.Second

func newClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3Config(endpoints))
}

func clientv3Config(endpoints []string) clientv3.Config {
	return clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 2 * time.Second,
		// The client logs every failed retry at warn level; while a
		// member starts, those are expected.
		Logger: zap.NewNop(),
	}
}

// clusterID asks the first endpoint that answers.
func clusterID(t testing.TB, endpoints []string) uint64 {
	t.Helper()
	c, err := newClient(endpoints)
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, "keygate-testetcd-probe")
	if err != nil {
		t.Fatalf("etcd cluster ID: %v", err)
	}
	return resp.Header.ClusterId
}

// errNotOurs means a server other than the member we started answered on
// its port: another process took the port first.
var errNotOurs = errors.New("another etcd answered on the port")

// probe returns nil when the member named name with peer URL peerURL
// answers a linearizable Get at clientURL.
func probe(ctx context.Context, c *clientv3.Client, name, peerURL string) error {
	resp, err := c.Get(ctx, "keygate-testetcd-probe")
	if err != nil {
		return err
	}
	ml, err := c.MemberList(ctx)
	if err != nil {
		return err
	}
	for _, m := range ml.Members {
		if m.ID == resp.Header.MemberId {
			if m.Name == name && slices.Contains(m.PeerURLs, peerURL) {
				return nil
			}
			break
		}
	}
	return errNotOurs
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

func loopbackURL(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }
