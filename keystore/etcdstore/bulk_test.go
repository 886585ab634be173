package etcdstore_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/apikey"
)

// TestImportKeysReplicas imports more keys than one etcd transaction may
// carry (128 operations: each key writes three to six records), with
// refused lines among them, and every replica's next lookup finds each
// imported key, including replicas that had cached it as unknown.
func TestImportKeysReplicas(t *testing.T) {
	_, rs := three(t, keystore.Options{MaxOrgKeys: 3})
	tn, org := setup(t, rs[0].s)
	f := keystore.Options{}.Format
	if f == (apikey.Format{}) {
		f = apikey.MustFormat(apikey.DefaultPrefix)
	}
	const n = 300
	ims := make([]keystore.Import, n)
	raws := make([]string, n)
	for i := range ims {
		raw, err := f.Generate(apikey.EnvLive)
		if err != nil {
			t.Fatal(err)
		}
		raws[i] = raw
		ims[i] = keystore.Import{KeySpec: keystore.KeySpec{TenantID: tn.ID, Name: fmt.Sprint("k", i)}, Raw: apikey.NewSecret(raw)}
		if i%10 == 0 {
			// Org keys in one slot: six writes each (key, hash, both
			// indexes, slot, the holder revoked), and the org stays
			// within its limit because each replaces the one before.
			ims[i].OrgID, ims[i].Slot = org.ID, "main"
		}
	}
	bad := map[int]string{
		5:   "already stored", // a duplicate of line 4
		150: "tier",
		299: "not found",
	}
	ims[5].Raw = apikey.NewSecret(raws[4])
	ims[150].Tier = "nope"
	ims[299].TenantID = "tnt_missing"
	// Replicas 1 and 2 learn the keys are unknown before the import.
	for _, r := range rs[1:] {
		for _, i := range []int{0, 4, 298} {
			if _, ok, err := lookup(t, r.s, raws[i]); ok || err != nil {
				t.Fatalf("before the import: found %v, err %v", ok, err)
			}
		}
	}
	res, err := rs[0].s.ImportKeys(t.Context(), ims)
	if err != nil {
		t.Fatalf("ImportKeys: %v", err)
	}
	for i, r := range res {
		want, isBad := bad[i]
		switch {
		case isBad && (r.Err == nil || !strings.Contains(r.Err.Error(), want)):
			t.Errorf("line %d: %v, want an error with %q", i, r.Err, want)
		case !isBad && r.Err != nil:
			t.Errorf("line %d: %v", i, r.Err)
		}
	}
	for ri, r := range rs {
		for i, raw := range raws {
			if _, isBad := bad[i]; isBad {
				if i != 5 { // line 5's key is line 4's
					if _, ok, err := lookup(t, r.s, raw); ok || err != nil {
						t.Errorf("replica %d: refused line %d is stored (found %v, err %v)", ri, i, ok, err)
					}
				}
				continue
			}
			c := mustLookup(t, r.s, raw)
			if c.ID != res[i].Key.ID {
				t.Errorf("replica %d: line %d is key %s, want %s", ri, i, c.ID, res[i].Key.ID)
			}
		}
	}
	// The slot holds the last org key; the ones before it were revoked.
	p, err := rs[2].s.ListKeys(t.Context(), keystore.ListFilter{OrgID: org.ID, State: keystore.StateActive, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Keys) != 1 || p.Keys[0].ID != res[290].Key.ID {
		t.Errorf("active org keys %+v, want only line 290's", p.Keys)
	}
}
