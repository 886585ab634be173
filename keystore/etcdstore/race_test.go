//go:build race

package etcdstore_test

// raceEnabled: the race detector makes etcd round trips several times
// slower, so the largest tests use fewer keys under it.
const raceEnabled = true
