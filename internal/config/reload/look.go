package reload

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// maxConfigBytes bounds what a look reads, every reload_interval: a path
// pointed at a huge file must not cost that much memory each time.
const maxConfigBytes = 16 << 20

// look is one reading of the config file: its bytes and what stat said of
// the file they were read from, or why it could not be read.
type look struct {
	fi  os.FileInfo
	raw []byte
	sum [sha256.Size]byte
	err error
}

// errChanging marks a look during which the file grew or shrank: it never
// counts as a stable look.
var errChanging = errors.New("the file changed while it was read")

func lookAt(path string) look {
	// O_NONBLOCK: a FIFO at the path must not block the watch (and SIGHUP)
	// in open; it is refused below as not a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return look{err: fmt.Errorf("read config: %w", err)}
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return look{err: fmt.Errorf("read config %s: %w", path, err)}
	}
	// Stat after reading, from the descriptor read: the inode is the one
	// whose bytes these are, whatever the path points at by now.
	fi, err := f.Stat()
	switch {
	case err != nil:
		return look{err: fmt.Errorf("stat config %s: %w", path, err)}
	case !fi.Mode().IsRegular():
		return look{err: fmt.Errorf("config %s: not a regular file (%s)", path, fi.Mode().Type())}
	case len(raw) > maxConfigBytes:
		return look{err: fmt.Errorf("config %s: larger than %d bytes", path, maxConfigBytes)}
	case fi.Size() != int64(len(raw)):
		return look{err: fmt.Errorf("config %s: %w", path, errChanging)}
	}
	return look{fi: fi, raw: raw, sum: sha256.Sum256(raw)}
}

// same reports whether two looks saw one unchanged file.
func (l look) same(o look) bool {
	if l.err != nil || o.err != nil {
		// Two looks failing alike is a stable state, reported once; a file
		// changing under the read is not.
		return l.err != nil && o.err != nil && l.err.Error() == o.err.Error() && !errors.Is(l.err, errChanging)
	}
	return l.sum == o.sum && l.fi.Size() == o.fi.Size() && l.fi.ModTime().Equal(o.fi.ModTime()) && os.SameFile(l.fi, o.fi)
}

// key names a version of the file by its content (or by why it could not
// be read), so that a new inode with the same bytes, as a ConfigMap update
// of another key brings, is not a change.
func (l look) key() string {
	if l.err != nil {
		return "error: " + l.err.Error()
	}
	return hex.EncodeToString(l.sum[:])
}

func (l look) short() string {
	if l.err != nil {
		return ""
	}
	return hex.EncodeToString(l.sum[:6])
}

func (l look) size() int64 {
	if l.fi == nil {
		return -1
	}
	return l.fi.Size()
}

func (l look) stamp() string { return stampOf(l.fi) }

// noYAML reports whether raw holds only blank lines, comments and
// document markers: valid YAML for a config with no routes.
func noYAML(raw []byte) bool {
	for line := range bytes.Lines(raw) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' && string(line) != "---" && string(line) != "..." {
			return false
		}
	}
	return true
}

// Stamp is what serve notes before it reads the file at path, for the
// watch to tell whether the file it first looks at is the one serve read.
func Stamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	return stampOf(fi)
}

func stampOf(fi os.FileInfo) string {
	if fi == nil {
		return "missing"
	}
	return fmt.Sprint(fi.ModTime().UnixNano(), fi.Size())
}
