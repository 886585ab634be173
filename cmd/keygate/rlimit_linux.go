package main

import (
	"fmt"
	"syscall"
)

// raiseFileLimit raises the soft limit on open files to the hard limit and
// returns the limit in force. Go's runtime already raises it at start (to
// one below the hard limit); doing it here as well makes the number the
// connection caps are derived from the one that holds, whatever the
// runtime did. Keygate starts no child processes, so the runtime's
// restoring of the original limit for children is not needed.
func raiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("read the open-file limit: %w", err)
	}
	if l.Cur < l.Max {
		raised := syscall.Rlimit{Cur: l.Max, Max: l.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return l.Cur, fmt.Errorf("raise the open-file limit from %d to %d: %w", l.Cur, l.Max, err)
		}
		l.Cur = l.Max
	}
	return l.Cur, nil
}
