package etcdstore_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/testetcd"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
	"github.com/keygate/keygate/keystore/etcdstore"
)

const ttl = 2 * time.Second

type replica struct {
	s *keystore.Store
	b *etcdstore.Backend
}

func open(t *testing.T, endpoint string, id string, opts keystore.Options) replica {
	t.Helper()
	b, err := etcdstore.Open(etcdstore.Config{
		Endpoints: []string{endpoint}, ReplicaTTL: ttl, ReplicaID: id,
		DialTimeout: 3 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := keystore.New(b, opts)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return replica{s, b}
}

func three(t *testing.T, opts keystore.Options) (*testetcd.Node, []replica) {
	n := testetcd.Start(t)
	var rs []replica
	for i := range 3 {
		rs = append(rs, open(t, n.Endpoint(), fmt.Sprint("r", i), opts))
	}
	return n, rs
}

func lookup(t *testing.T, s *keystore.Store, raw string) (*authz.Credential, bool, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.LookupKey(ctx, apikey.HashOf(raw))
}

func mustLookup(t *testing.T, s *keystore.Store, raw string) *authz.Credential {
	t.Helper()
	c, ok, err := lookup(t, s, raw)
	if err != nil || !ok {
		t.Fatalf("lookup: found %v, err %v", ok, err)
	}
	return c
}

func setup(t *testing.T, s *keystore.Store) (keystore.Tenant, keystore.Org) {
	t.Helper()
	tn, err := s.CreateTenant(t.Context(), "Acme")
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.CreateOrg(t.Context(), tn.ID, "Acme EU")
	if err != nil {
		t.Fatal(err)
	}
	return tn, o
}

// TestWritesReachEveryReplica: whatever one replica writes, every other
// replica's very next lookup sees, cached or not.
func TestWritesReachEveryReplica(t *testing.T) {
	_, rs := three(t, keystore.Options{})
	tn, o := setup(t, rs[0].s)
	for i := range 20 {
		writer, other := rs[i%3].s, rs[(i+1)%3].s
		raw := fmt.Sprintf("ak_live_never_created_%02d_xxxxxxxxxxxx", i)
		if _, ok, err := lookup(t, other, raw); ok || err != nil {
			t.Fatalf("unknown key: found %v, err %v", ok, err)
		}
		ck, err := writer.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, OrgID: o.ID, Name: "k", Scopes: []string{"a"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			// Every replica caches the key (the first lookup may have been
			// a negative one).
			if c := mustLookup(t, r.s, ck.Secret.Reveal()); c.ScopesHeader != "a" {
				t.Fatalf("scopes %q", c.ScopesHeader)
			}
		}
		if _, err := writer.UpdateKey(t.Context(), ck.ID, keystore.KeyUpdate{Scopes: &[]string{"b"}}); err != nil {
			t.Fatal(err)
		}
		for j, r := range rs {
			if c := mustLookup(t, r.s, ck.Secret.Reveal()); c.ScopesHeader != "b" {
				t.Fatalf("round %d replica %d after update: scopes %q", i, j, c.ScopesHeader)
			}
		}
		if _, err := other.RevokeKey(t.Context(), ck.ID); err != nil {
			t.Fatal(err)
		}
		for j, r := range rs {
			if c := mustLookup(t, r.s, ck.Secret.Reveal()); c.Status != authz.StatusRevoked {
				t.Fatalf("round %d replica %d after revoke: status %q", i, j, c.Status)
			}
		}
		if err := writer.DeleteKey(t.Context(), ck.ID); err != nil {
			t.Fatal(err)
		}
		for j, r := range rs {
			if _, ok, err := lookup(t, r.s, ck.Secret.Reveal()); ok || err != nil {
				t.Fatalf("round %d replica %d after delete: found %v, err %v", i, j, ok, err)
			}
		}
	}
}

// TestOrgLimitAcrossReplicas: concurrent creates through different
// replicas cannot overfill an org (optimistic transactions retry).
func TestOrgLimitAcrossReplicas(t *testing.T) {
	_, rs := three(t, keystore.Options{MaxOrgKeys: 2})
	tn, o := setup(t, rs[0].s)
	var ok, limited atomic.Int32
	var wg sync.WaitGroup
	for i := range 9 {
		wg.Go(func() {
			_, err := rs[i%3].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, OrgID: o.ID, Name: "k"})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, keystore.ErrOrgKeyLimit):
				limited.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 2 || limited.Load() != 7 {
		t.Fatalf("%d created, %d refused; want 2 and 7", ok.Load(), limited.Load())
	}
}

// TestCreditsSharedBalance: replicas spend one balance; each flush
// subtracts what that replica spent, so none overwrites another's spending.
func TestCreditsSharedBalance(t *testing.T) {
	_, rs := three(t, keystore.Options{})
	tn, _ := setup(t, rs[0].s)
	ck, err := rs[0].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "metered", CreditsRemaining: new(int64(100))})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		c := mustLookup(t, r.s, ck.Secret.Reveal())
		for range 10 + i {
			if _, ok, err := r.s.Spend(context.Background(), c, 1); !ok || err != nil {
				t.Fatalf("spend: %v %v", ok, err)
			}
		}
	}
	for _, r := range rs {
		if err := r.s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// 10 + 11 + 12 spent.
	k, err := rs[2].s.Key(t.Context(), ck.ID)
	if err != nil {
		t.Fatal(err)
	}
	if *k.CreditsRemaining != 67 {
		t.Fatalf("balance %d, want 67", *k.CreditsRemaining)
	}
	// A refill through one replica reaches the others' live balances.
	if _, err := rs[1].s.AddCredits(t.Context(), ck.ID, 3); err != nil {
		t.Fatal(err)
	}
	k, err = rs[0].s.Key(t.Context(), ck.ID)
	if err != nil {
		t.Fatal(err)
	}
	if *k.CreditsRemaining != 70 {
		t.Fatalf("after refill elsewhere: %d, want 70", *k.CreditsRemaining)
	}
}

// TestOpenUnreachableFailsClosed: no etcd, no start, and a clear reason.
func TestOpenUnreachableFailsClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	began := time.Now()
	_, err = etcdstore.Open(etcdstore.Config{Endpoints: []string{"http://" + addr}, DialTimeout: time.Second})
	if !errors.Is(err, etcdstore.ErrUnreachable) {
		t.Fatalf("open: %v, want ErrUnreachable", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("open took %v with a 1s dial timeout", d)
	}
	t.Logf("error: %v", err)
}

// TestEtcdDownAndBack: with etcd stopped, cached keys keep working for
// less than the replica TTL, then every lookup fails closed; once etcd is
// back, replicas follow writes again.
func TestEtcdDownAndBack(t *testing.T) {
	n, rs := three(t, keystore.Options{})
	tn, _ := setup(t, rs[0].s)
	ck, err := rs[0].s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		mustLookup(t, r.s, ck.Secret.Reveal())
	}
	time.Sleep(50 * time.Millisecond) // ristretto applies cache fills asynchronously
	// etcd refuses new requests as soon as it starts stopping, then gives
	// open watch streams several seconds to end.
	stopped := time.Now()
	down := make(chan struct{})
	go func() { n.Stop(); close(down) }()
	// Within the TTL the cache answers: etcd being down means nobody can
	// have revoked anything.
	for _, r := range rs {
		if _, ok, err := lookup(t, r.s, ck.Secret.Reveal()); !ok || err != nil {
			t.Fatalf("cached key right after etcd stopped: %v %v", ok, err)
		}
	}
	var failedAt time.Duration
	for time.Since(stopped) < 3*ttl {
		at := time.Since(stopped)
		if _, _, err := lookup(t, rs[1].s, ck.Secret.Reveal()); err != nil {
			failedAt = at
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if failedAt == 0 || failedAt > ttl {
		t.Fatalf("lookups kept answering %v after etcd stopped (TTL %v)", failedAt, ttl)
	}
	t.Logf("cache trusted for %v after etcd stopped", failedAt)
	<-down
	n.Restart(t)
	waitFresh(t, rs)
	if _, err := rs[2].s.RevokeKey(t.Context(), ck.ID); err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if c := mustLookup(t, r.s, ck.Secret.Reveal()); c.Status != authz.StatusRevoked {
			t.Fatalf("replica %d after restart and revoke: %q", i, c.Status)
		}
	}
}

func waitFresh(t *testing.T, rs []replica) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range rs {
		for !r.b.Fresh() {
			if time.Now().After(deadline) {
				t.Fatalf("replica %s not following writes 30s after etcd came back", r.b.ReplicaID())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestPartitionedReplica: a replica cut off from etcd while the others
// write: the write waits for it only until its lease expires, by which time
// it trusts no cache; when the partition heals after the history was
// compacted, it starts over from the present.
func TestPartitionedReplica(t *testing.T) {
	n := testetcd.Start(t)
	p := newProxy(t, n.Endpoint())
	a := open(t, n.Endpoint(), "a", keystore.Options{})
	cut := open(t, p.endpoint(), "cut", keystore.Options{})
	tn, _ := setup(t, a.s)
	ck, err := a.s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	mustLookup(t, cut.s, ck.Secret.Reveal())
	p.cut()
	began := time.Now()
	if _, err := a.s.RevokeKey(t.Context(), ck.ID); err != nil {
		t.Fatal(err)
	}
	waited := time.Since(began)
	t.Logf("revoke waited %v for the partitioned replica", waited)
	if c, ok, err := lookup(t, cut.s, ck.Secret.Reveal()); err == nil && ok && c.Status == authz.StatusActive {
		t.Fatal("partitioned replica still allows a key revoked elsewhere")
	}
	if waited > 2*ttl {
		t.Fatalf("revoke waited %v, more than the TTL allows", waited)
	}
	if st := cut.s.Stats(); st.Following || st.CacheResets == 0 {
		t.Fatalf("cut-off replica: %+v, want not following and its cache dropped", st)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{n.Endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// More writes, then their history compacted away.
	ck2, err := a.s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k2"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(context.Background(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	p.heal()
	waitFresh(t, []replica{cut})
	if c := mustLookup(t, cut.s, ck.Secret.Reveal()); c.Status != authz.StatusRevoked {
		t.Fatalf("after healing: %q", c.Status)
	}
	mustLookup(t, cut.s, ck2.Secret.Reveal())
	// Its lease may come back before its watch meets the compaction, which
	// drops the cache once more; either way it follows again.
	waitFresh(t, []replica{cut})
	// And it follows again: a write through it reaches a, and back.
	if _, err := cut.s.RevokeKey(t.Context(), ck2.ID); err != nil {
		t.Fatal(err)
	}
	if c := mustLookup(t, a.s, ck2.Secret.Reveal()); c.Status != authz.StatusRevoked {
		t.Fatalf("write from the healed replica: %q", c.Status)
	}
}

// proxy forwards TCP to etcd until cut, which drops every connection and
// refuses new ones until heal: a network partition of one replica.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target[len("http://"):]}
	go p.serve()
	t.Cleanup(func() { l.Close(); p.cut() })
	return p
}

func (p *proxy) endpoint() string { return "http://" + p.l.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { io.Copy(u, c); u.Close() }()
		go func() { io.Copy(c, u); c.Close() }()
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) heal() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestEtcdHoldsNoRawKey: what Keygate writes to etcd carries neither a
// key nor its raw digest; the hash index is keyed by the digest in hex.
func TestEtcdHoldsNoRawKey(t *testing.T) {
	n := testetcd.Start(t)
	r := open(t, n.Endpoint(), "a", keystore.Options{})
	tn, _ := setup(t, r.s)
	ck, err := r.s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	h := apikey.HashOf(ck.Secret.Reveal())
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{n.Endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "/keygate/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	indexed := false
	for _, kv := range resp.Kvs {
		for _, b := range [][]byte{kv.Key, kv.Value} {
			if bytes.Contains(b, []byte(ck.Secret.Reveal())) || bytes.Contains(b, h[:]) {
				t.Fatalf("etcd key %q holds the key or its raw digest", kv.Key)
			}
		}
		indexed = indexed || string(kv.Key) == "/keygate/data/key_hashes/"+hex.EncodeToString(h[:])
	}
	if !indexed {
		t.Fatal("no hex hash index entry for the key")
	}
}

// TestCancelledWrite: the caller's context reaches etcd. A write whose
// context is cancelled before it commits fails with context.Canceled and
// writes nothing; one cancelled after its commit, while a replica has not
// confirmed it, fails with ErrUnconfirmed (503: retrying would apply it
// twice) and stays written.
func TestCancelledWrite(t *testing.T) {
	n := testetcd.Start(t)
	a := open(t, n.Endpoint(), "a", keystore.Options{})
	tn, o := setup(t, a.s)
	ck, err := a.s.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, OrgID: o.ID, Name: "k", CreditsRemaining: new(int64(10))})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{n.Endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	data := func() map[string]int64 {
		t.Helper()
		resp, err := cli.Get(t.Context(), "/keygate/data/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, kv := range resp.Kvs {
			out[string(kv.Key)] = kv.ModRevision
		}
		return out
	}
	before := data()

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for name, op := range map[string]func() error{
		"CreateTenant": func() error { _, err := a.s.CreateTenant(ctx, "Other"); return err },
		"CreateOrg":    func() error { _, err := a.s.CreateOrg(ctx, tn.ID, "Other"); return err },
		"CreateKey": func() error {
			_, err := a.s.CreateKey(ctx, keystore.KeySpec{TenantID: tn.ID, Name: "k2"})
			return err
		},
		"ImportKey": func() error {
			_, err := a.s.ImportKey(ctx, keystore.Import{KeySpec: keystore.KeySpec{TenantID: tn.ID, Name: "i"}, Raw: apikey.NewSecret("legacy-key-0123456789")})
			return err
		},
		"UpdateKey": func() error {
			_, err := a.s.UpdateKey(ctx, ck.ID, keystore.KeyUpdate{Name: new("renamed")})
			return err
		},
		"RevokeKey":  func() error { _, err := a.s.RevokeKey(ctx, ck.ID); return err },
		"RotateKey":  func() error { _, err := a.s.RotateKey(ctx, ck.ID, 0); return err },
		"DeleteKey":  func() error { return a.s.DeleteKey(ctx, ck.ID) },
		"AddCredits": func() error { _, err := a.s.AddCredits(ctx, ck.ID, 5); return err },
		"SetCredits": func() error { _, err := a.s.SetCredits(ctx, ck.ID, 5); return err },
		"Key":        func() error { _, err := a.s.Key(ctx, ck.ID); return err },
		"ListKeys":   func() error { _, err := a.s.ListKeys(ctx, keystore.ListFilter{}); return err },
	} {
		if err := op(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want context.Canceled", name, err)
		}
	}
	if after := data(); !maps.Equal(after, before) {
		t.Fatalf("writes with a cancelled context changed etcd:\nbefore %v\nafter  %v", before, after)
	}

	// Cancelled once committed: a replica that follows but does not
	// confirm (its record stays at an old revision) holds the write for
	// twice the TTL, and the caller gives up long before.
	if _, err := cli.Put(t.Context(), "/keygate/replicas/stuck", "1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	timer := time.AfterFunc(time.Second, cancel)
	defer timer.Stop()
	if _, err := a.s.RevokeKey(ctx, ck.ID); !errors.Is(err, keystore.ErrUnconfirmed) {
		t.Fatalf("revoke cancelled after its commit: %v, want ErrUnconfirmed", err)
	}
	if k, err := a.s.Key(t.Context(), ck.ID); err != nil || k.Status != authz.StatusRevoked {
		t.Fatalf("after the unconfirmed revoke: status %q, err %v; want revoked", k.Status, err)
	}
}
