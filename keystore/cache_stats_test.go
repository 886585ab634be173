package keystore

import (
	"testing"

	"github.com/keygate/keygate/keystore/apikey"
)

func TestStats(t *testing.T) {
	f := newFixture(t, Options{})
	ck := f.create(t, KeySpec{})
	f.lookupWarm(t, ck.Secret.Reveal()) // 1 miss, then hits
	before := f.s.Stats()
	f.lookup(t, ck.Secret.Reveal())
	f.lookup(t, ck.Secret.Reveal())
	unknown, _ := apikey.MustFormat("ak").Generate("live")
	f.lookupWarm(t, unknown)
	f.lookup(t, unknown)
	after := f.s.Stats()
	if after.CacheHits-before.CacheHits < 2 || after.NegativeHits-before.NegativeHits < 1 || after.CacheMisses-before.CacheMisses < 1 {
		t.Fatalf("stats before %+v after %+v", before, after)
	}
	f.s.Close()
	if _, _, err := f.s.LookupKey(t.Context(), apikey.HashOf(ck.Secret.Reveal())); err == nil {
		t.Fatal("lookup after close succeeded")
	}
}
