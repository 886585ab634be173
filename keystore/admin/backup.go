package admin

import (
	"log/slog"
	"net/http"
	"strconv"

	"github.com/keygate/keygate/keystore"
)

const routeBackup = "GET /v1/store/backup"

// backup streams a consistent copy of the store, a bbolt file that
// `keygate serve --store` runs on (GET /v1/store/backup). It is
// bootstrap-only: no scope grants it (scopeFor knows no /v1/store), since
// the copy holds every tenant's keys' hashes and every admin token's.
//
// Until the first byte, a failure is a JSON error; after it, the status is
// sent, so the answer carries the copy's exact Content-Length and a copy
// cut short ends the connection early, which the client sees.
func (a *api) backup(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	bw := &backupWriter{w: w, name: "keygate-" + a.now().UTC().Format("20060102T150405Z") + ".db"}
	n, err := a.store.Backup(r.Context(), bw)
	if err != nil && !bw.started {
		return err
	}
	if err != nil {
		a.log.LogAttrs(r.Context(), slog.LevelError, "store backup cut short",
			slog.Int64("written", n), slog.String("error", err.Error()))
	}
	return nil
}

// backupWriter sends the headers with the first byte of the copy.
type backupWriter struct {
	w       http.ResponseWriter
	name    string
	size    int64
	sized   bool
	started bool
}

func (b *backupWriter) BackupSize(n int64) { b.size, b.sized = n, true }

func (b *backupWriter) Write(p []byte) (int, error) {
	if !b.started {
		b.started = true
		h := b.w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", `attachment; filename="`+b.name+`"`)
		if b.sized {
			h.Set("Content-Length", strconv.FormatInt(b.size, 10))
		}
		b.w.WriteHeader(http.StatusOK)
	}
	return b.w.Write(p)
}

var _ keystore.BackupSizer = (*backupWriter)(nil)
