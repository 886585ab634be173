package ratelimit

import (
	"testing"
	"time"
)

// BenchmarkTake: one bucket, and a key, its org and its tenant, from
// parallel goroutines, for each algorithm. The limits are so high that
// every Take is admitted and writes.
func BenchmarkTake(b *testing.B) {
	for _, alg := range []Algorithm{TokenBucket, SlidingWindow} {
		lim := Limit{Requests: 1 << 29, Window: time.Second, Algorithm: alg}
		b.Run(alg.String()+"/one", func(b *testing.B) {
			l := New[string](nil)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l.Take(1, Charge[string]{Key: "key:01a21098", Limit: lim})
				}
			})
		})
		b.Run(alg.String()+"/key+org+tenant", func(b *testing.B) {
			l := New[string](nil)
			charges := []Charge[string]{{"key:01a21098", lim}, {"org:7f3c", lim}, {"tenant:acme", lim}}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l.Take(1, charges...)
				}
			})
		})
	}
}
