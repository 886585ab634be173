package testetcd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	_ Server = (*Node)(nil)
	_ Server = (*Cluster)(nil)
)

func client(t *testing.T, s Server) *clientv3.Client {
	t.Helper()
	c, err := newClient(s.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, c *clientv3.Client, k, v string) int64 {
	t.Helper()
	resp, err := c.Put(ctx(t), k, v)
	if err != nil {
		t.Fatalf("put %s: %v", k, err)
	}
	return resp.Header.Revision
}

// get is the key's value ("" if absent) and the store's revision.
func get(t *testing.T, c *clientv3.Client, k string) (string, int64) {
	t.Helper()
	resp, err := c.Get(ctx(t), k)
	if err != nil {
		t.Fatalf("get %s: %v", k, err)
	}
	if len(resp.Kvs) == 0 {
		return "", resp.Header.Revision
	}
	return string(resp.Kvs[0].Value), resp.Header.Revision
}

func TestKind(t *testing.T) {
	Each(t, func(t *testing.T, start func(testing.TB) Server) {
		s := start(t)
		k := s.Kind()
		if !strings.HasPrefix(k, "embedded v3.") && !strings.HasPrefix(k, "debian etcd 3.") {
			t.Errorf("Kind() = %q", k)
		}
		t.Log(k, s.Endpoints())
	})
}

func TestSnapshotRestore(t *testing.T) {
	Each(t, func(t *testing.T, start func(testing.TB) Server) {
		s := start(t)
		c := client(t, s)
		put(t, c, "a", "1")
		snap := s.Snapshot(t)
		put(t, c, "b", "2")
		put(t, c, "a", "3")
		_, before := get(t, c, "a")
		id := s.ClusterID(t)

		s.Restore(t, snap, false)
		c = client(t, s) // the old one would do too, after reconnecting
		if v, _ := get(t, c, "b"); v != "" {
			t.Errorf("after restore, b = %q; want it gone", v)
		}
		v, after := get(t, c, "a")
		if v != "1" {
			t.Errorf("after restore, a = %q; want 1", v)
		}
		if after >= before {
			t.Errorf("revision after restore %d; want below %d", after, before)
		}
		if got := s.ClusterID(t); got != id {
			t.Errorf("cluster ID %x after restoring the same cluster; want %x", got, id)
		}
		put(t, c, "c", "4") // it takes writes

		s.Restore(t, snap, true)
		c = client(t, s)
		if got := s.ClusterID(t); got == id {
			t.Errorf("cluster ID %x unchanged after restoring as a new cluster", got)
		}
		if v, _ := get(t, c, "a"); v != "1" {
			t.Errorf("after restore as a new cluster, a = %q; want 1", v)
		}
		if v, _ := get(t, c, "c"); v != "" {
			t.Errorf("after restore as a new cluster, c = %q; want it gone", v)
		}
	})
}

func TestPauseResume(t *testing.T) {
	Each(t, func(t *testing.T, start func(testing.TB) Server) {
		s := start(t)
		c := client(t, s)
		put(t, c, "k", "v")
		s.Pause(t)
		short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := c.Get(short, "k")
		cancel()
		if err == nil {
			t.Fatal("Get answered while paused")
		}
		s.Resume(t)
		if v, _ := get(t, c, "k"); v != "v" {
			t.Errorf("after Resume, k = %q", v)
		}
	})
}

func TestStopKillRestart(t *testing.T) {
	Each(t, func(t *testing.T, start func(testing.TB) Server) {
		s := start(t)
		c := client(t, s)
		put(t, c, "k", "1")
		s.Stop()
		short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := c.Get(short, "k")
		cancel()
		if err == nil {
			t.Fatal("Get answered while stopped")
		}
		s.Restart(t)
		put(t, c, "k", "2")
		s.Kill(t)
		s.Restart(t)
		if v, _ := get(t, c, "k"); v != "2" {
			t.Errorf("after Kill and Restart, k = %q; want 2", v)
		}
	})
}

// The proxy in front of an embedded node must not hold a stopping member
// up, paused or not.
func TestEmbeddedStopWhilePaused(t *testing.T) {
	n := Start(t)
	c := client(t, n)
	put(t, c, "k", "v")
	n.Pause(t)
	done := make(chan struct{})
	go func() { n.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop of a paused node did not return")
	}
	n.Restart(t)
	if v, _ := get(t, c, "k"); v != "v" {
		t.Errorf("after Restart, k = %q", v)
	}
}

func TestDebianClusterLosesLeader(t *testing.T) {
	cl := StartDebianCluster(t, 3)
	if len(cl.Endpoints()) != 3 {
		t.Fatalf("endpoints %v", cl.Endpoints())
	}
	c := client(t, cl)
	put(t, c, "k", "1")
	leader := cl.LeaderIndex(t)
	cl.KillMember(t, leader)
	deadline := time.Now().Add(10 * time.Second)
	for {
		short, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Put(short, "k", "2")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no put within 10s of killing the leader: %v", err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if l := cl.LeaderIndex(t); l == leader {
		t.Errorf("leader is still member %d", l)
	}
	cl.RestartMember(t, leader)
	one, err := newClient([]string{cl.Endpoints()[leader]})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if v, _ := get(t, one, "k"); v != "2" {
		t.Errorf("restarted member reads k = %q; want 2", v)
	}

	snap := cl.Snapshot(t)
	put(t, c, "k", "3")
	id := cl.ClusterID(t)
	began := time.Now()
	cl.Restore(t, snap, true)
	t.Logf("restore of 3 members: %v", time.Since(began))
	if cl.ClusterID(t) == id {
		t.Error("cluster ID unchanged after restoring as a new cluster")
	}
	if v, _ := get(t, one, "k"); v != "2" {
		t.Errorf("after restore, k = %q; want 2", v)
	}
	began = time.Now()
	cl.Stop()
	t.Logf("stop of 3 members: %v", time.Since(began))
	cl.Restart(t)
	if v, _ := get(t, c, "k"); v != "2" {
		t.Errorf("after Stop and Restart, k = %q; want 2", v)
	}
}
