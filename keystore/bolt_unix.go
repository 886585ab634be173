//go:build unix

package keystore

import (
	"os"
	"syscall"
)

// fileID is fi's device and inode, for log lines and errors.
func fileID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino)
	}
	return 0, 0
}
