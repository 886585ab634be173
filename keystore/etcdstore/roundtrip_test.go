package etcdstore_test

import (
	"context"
	"fmt"

	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/internal/testetcd"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
	"github.com/keygate/keygate/keystore/etcdstore"
)

// countingBackend counts the reads of its read-only transactions: on etcd
// each Get or Scan of one is a round trip.
type countingBackend struct {
	*etcdstore.Backend
	reads atomic.Int64
}

func (c *countingBackend) View(ctx context.Context, fn func(keystore.Tx) error) error {
	return c.Backend.View(ctx, func(tx keystore.Tx) error { return fn(countingTx{tx, &c.reads}) })
}

type countingTx struct {
	keystore.Tx
	reads *atomic.Int64
}

func (t countingTx) Get(bucket string, key []byte) ([]byte, error) {
	t.reads.Add(1)
	return t.Tx.Get(bucket, key)
}

func (t countingTx) Scan(bucket string, prefix, start []byte, fn func(k, v []byte) (bool, error)) error {
	t.reads.Add(1)
	return t.Tx.Scan(bucket, prefix, start, fn)
}

// TestUncachedCheckRoundTrips: a Check that misses the cache reads the
// key's record under its hash in one round trip to etcd; a user record
// in the store adds one (the user's limits), credit accounts one each
// (the key's user, org and tenant), and nothing else does.
func TestUncachedCheckRoundTrips(t *testing.T) {
	n := testetcd.Start(t)
	c := &countingBackend{Backend: backend(t, n.Endpoint(), "counted")}
	s, err := keystore.New(c, keystore.Options{})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	defer s.Close()
	tn, o := setup(t, s)
	create := func(spec keystore.KeySpec) apikey.Hash {
		t.Helper()
		spec.TenantID, spec.Name = tn.ID, "k"
		ck, err := s.CreateKey(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		return apikey.HashOf(ck.Secret.Reveal())
	}
	uncached := func(h apikey.Hash) int64 {
		t.Helper()
		// Learn first whether the store holds users and accounts (one
		// scan each, once per process): the lookups counted are those of
		// a serving replica.
		if _, _, err := s.LookupKey(t.Context(), create(keystore.KeySpec{UserID: "warm"})); err != nil {
			t.Fatal(err)
		}
		before := c.reads.Load()
		if _, ok, err := s.LookupKey(t.Context(), h); err != nil || !ok {
			t.Fatalf("lookup: %v %v", ok, err)
		}
		return c.reads.Load() - before
	}
	if got := uncached(create(keystore.KeySpec{OrgID: o.ID, UserID: "alice"})); got != 1 {
		t.Fatalf("%d round trips for a key, want 1", got)
	}
	if _, _, err := s.PutUser(t.Context(), tn.ID, "alice", keystore.UserSpec{Limits: map[string]ratelimit.Limit{"m": {Requests: 5, Window: time.Minute}}}); err != nil {
		t.Fatal(err)
	}
	if got := uncached(create(keystore.KeySpec{OrgID: o.ID, UserID: "alice"})); got != 2 {
		t.Fatalf("%d round trips for a user's key with user records in the store, want 2", got)
	}
	if got := uncached(create(keystore.KeySpec{OrgID: o.ID})); got != 1 {
		t.Fatalf("%d round trips for a key without a user, want 1", got)
	}
	if _, err := s.SetAccountCredits(t.Context(), keystore.Owner{Kind: keystore.AccountTenant, TenantID: tn.ID}, 10); err != nil {
		t.Fatal(err)
	}
	if got := uncached(create(keystore.KeySpec{OrgID: o.ID, UserID: "alice"})); got != 2+3 {
		t.Fatalf("%d round trips for a user's key in an org with accounts in the store, want 5", got)
	}
}

// rangeRPCs counts the single reads (Range calls) the embedded etcd of
// this process has answered: reads a transaction did not prefetch.
func rangeRPCs(t *testing.T) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_handled_total" {
			continue
		}
		n := 0.0
		for _, m := range mf.Metric {
			for _, l := range m.GetLabel() {
				if l.GetName() == "grpc_method" && l.GetValue() == "Range" {
					n += m.GetCounter().GetValue()
				}
			}
		}
		return n
	}
	t.Fatal("embedded etcd reports no grpc_server_handled_total")
	return 0
}

// TestImportPrefetchesWhatItReads: a bulk import of org-level keys reads what
// checking each org's limit needs (the org's index, each key's id, its
// record under its hash) and what a slot's new key revokes (the slot, the
// id it holds, that key's record) in its batches' prefetches, not one
// round trip per key.
func TestImportPrefetchesWhatItReads(t *testing.T) {
	n := testetcd.Start(t)
	r := open(t, n.Endpoint(), "importer", keystore.Options{})
	tn, _ := setup(t, r.s)
	var orgs []string
	for range 20 {
		o, err := r.s.CreateOrg(t.Context(), tn.ID, "o")
		if err != nil {
			t.Fatal(err)
		}
		orgs = append(orgs, o.ID)
	}
	imports := func(perOrg int) []keystore.Import {
		var ims []keystore.Import
		for _, o := range orgs {
			for i := range perOrg {
				raw, err := apikey.MustFormat("ak").Generate(apikey.EnvLive)
				if err != nil {
					t.Fatal(err)
				}
				spec := keystore.KeySpec{TenantID: tn.ID, OrgID: o, Name: "k"}
				if i == 0 {
					spec.Slot = "default" // the second import's revokes the first's
				}
				ims = append(ims, keystore.Import{KeySpec: spec, Raw: apikey.NewSecret(raw)})
			}
		}
		// Tenant-level keys in slots of their own: no org's scan reads
		// the key a slot holds.
		for i := range len(orgs) {
			raw, err := apikey.MustFormat("ak").Generate(apikey.EnvLive)
			if err != nil {
				t.Fatal(err)
			}
			ims = append(ims, keystore.Import{KeySpec: keystore.KeySpec{TenantID: tn.ID, Name: "k", Slot: fmt.Sprint("slot-", i)}, Raw: apikey.NewSecret(raw)})
		}
		return ims
	}
	importAll := func(ims []keystore.Import) {
		t.Helper()
		res, err := r.s.ImportKeys(t.Context(), ims)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range res {
			if x.Err != nil {
				t.Fatal(x.Err)
			}
		}
	}
	// Keys already in the orgs: the second import reads them to count.
	importAll(imports(3))
	ims := imports(2)
	before := rangeRPCs(t)
	importAll(ims)
	got := rangeRPCs(t) - before
	// Two, measured: those of the Sync that ends the import.
	t.Logf("%v single reads for %d imported keys", got, len(ims))
	if got > 5 {
		t.Fatalf("%v single reads for %d imported keys: the batches' prefetches missed what an org's limit or a slot reads", got, len(ims))
	}
}
