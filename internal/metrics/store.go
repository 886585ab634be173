package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate/keystore"
)

// Store is what the store metrics read.
type Store interface {
	Stats() keystore.Stats
	CountKeys(ctx context.Context) (map[keystore.State]int, error)
}

// RegisterStore exposes the store's cache and error counters, and the
// number of keys by state.
func (m *Metrics) RegisterStore(s Store) error {
	counter := func(name, help string, f func(keystore.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(s.Stats())) })
	}
	return m.Register(
		counter("keygate_cache_hits_total", "Key lookups answered from the cache.", func(st keystore.Stats) uint64 { return st.CacheHits }),
		counter("keygate_cache_negative_hits_total", "Unknown keys answered from the negative cache.", func(st keystore.Stats) uint64 { return st.NegativeHits }),
		counter("keygate_cache_misses_total", "Key lookups that read the store.", func(st keystore.Stats) uint64 { return st.CacheMisses }),
		counter("keygate_store_errors_total", "Key lookups that failed; each Check failed closed.", func(st keystore.Stats) uint64 { return st.LookupErrors }),
		counter("keygate_cache_resets_total", "Whole-cache drops after writes may have been missed (etcd: a replica cut off, compacted history).", func(st keystore.Stats) uint64 { return st.CacheResets }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keygate_store_following", Help: "1 while the cache may answer Checks (always with bbolt; with etcd, while this replica follows every write), else 0: every Check reads the store."}, func() float64 {
			if s.Stats().Following {
				return 1
			}
			return 0
		}),
		&keysCollector{store: s, every: time.Minute},
	)
}

// keysCollector counts keys by state. Counting reads every record, so a
// scrape reuses a count younger than every; with a million keys a count
// takes seconds and should not run on each scrape.
type keysCollector struct {
	store Store
	every time.Duration

	mu     sync.Mutex
	at     time.Time
	counts map[keystore.State]int
}

var keysDesc = prometheus.NewDesc("keygate_keys", "Keys by state (counted at most once a minute).", []string{"state"}, nil)

func (k *keysCollector) Describe(ch chan<- *prometheus.Desc) { ch <- keysDesc }

func (k *keysCollector) Collect(ch chan<- prometheus.Metric) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.counts == nil || time.Since(k.at) > k.every {
		// A scrape carries no context; the store bounds the count.
		counts, err := k.store.CountKeys(context.Background())
		if err != nil {
			ch <- prometheus.NewInvalidMetric(keysDesc, err)
			return
		}
		k.counts, k.at = counts, time.Now()
	}
	for state, n := range k.counts {
		ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(n), string(state))
	}
}
