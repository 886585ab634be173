//go:build !linux

package main

// raiseFileLimit does nothing where the limit is not Linux's RLIMIT_NOFILE
// (Go's runtime raises it on the other Unixes itself); 0 tells the caller
// the limit is unknown.
func raiseFileLimit() (uint64, error) { return 0, nil }
