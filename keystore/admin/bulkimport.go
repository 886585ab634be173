package admin

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/keygate/keygate/internal/vizerror"
	"github.com/keygate/keygate/keystore"
)

// Bulk import: POST /v1/keys/import with an NDJSON body, one import
// object per line, each read exactly as the single-object import's body.
// Lines are committed in batches as they arrive and each line's outcome is
// streamed back as it commits, so a client can show progress; the status
// is therefore 200 once the first outcome is written, and a failure of
// the store after that is the final line's error, not a status.

const (
	// maxImportLine bounds one line: an import object is a few hundred
	// bytes, and a longer line is that line's error, not the request's.
	maxImportLine = 64 << 10
	// defaultMaxImportBytes bounds an NDJSON body (Options.MaxImportBytes):
	// a million lines of about 200 bytes with room to spare.
	defaultMaxImportBytes = 512 << 20
	// importBatchTime is how long the connection may take per batch,
	// beyond the server's own read and write timeouts, which bound a whole
	// request and would cut off a large import.
	importBatchTime = time.Minute
)

// importBatch is how many lines go to the store at once, as many as one
// bbolt transaction of keystore.ImportKeys takes. The store splits a batch
// further where its backend needs smaller transactions (etcd). A variable
// for tests.
var importBatch = 10000

// ndjsonTypes are the media types of a bulk import body.
var ndjsonTypes = map[string]bool{"application/x-ndjson": true, "application/jsonl": true}

// isBulkImport reports whether r is a bulk import: its body is bounded by
// MaxImportBytes, not MaxBodyBytes.
func isBulkImport(r *http.Request, route string) bool {
	if route != "POST /v1/keys/import" {
		return false
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && ndjsonTypes[mt]
}

// importLine is one line's outcome in the answer.
type importLine struct {
	Line   int    `json:"line"`
	ID     string `json:"id,omitempty"`
	Status string `json:"status,omitempty"` // "imported"
	Error  string `json:"error,omitempty"`
	Code   string `json:"code,omitempty"`
}

// importSummary is the answer's last line. Error is set when the import
// stopped early (the store failed, the body was cut off or too large):
// the lines before were answered, the rest were not read or not stored.
type importSummary struct {
	Imported int    `json:"imported"`
	Failed   int    `json:"failed"`
	Error    string `json:"error,omitempty"`
	Code     string `json:"code,omitempty"`
}

// pendingLine is a line read and decoded, waiting for its batch.
type pendingLine struct {
	line int
	im   keystore.Import
	err  error // refused before the store saw it
}

// lineBatch is a batch of lines read and decoded; err is the read error
// that ended the body early (nil at its end); last is the number of the
// last line read.
type lineBatch struct {
	lines []pendingLine
	err   error
	last  int
}

func (a *api) bulkImport(w http.ResponseWriter, r *http.Request) error {
	rc := http.NewResponseController(w)
	// Outcomes are written while the body is still being read.
	if err := rc.EnableFullDuplex(); err != nil {
		return fmt.Errorf("bulk import: %w", err)
	}
	extend := func() {
		// Errors mean the connection cannot have deadlines (a test
		// recorder); the server's own timeouts then stand.
		_ = rc.SetReadDeadline(time.Now().Add(importBatchTime))
		_ = rc.SetWriteDeadline(time.Now().Add(importBatchTime))
	}
	extend()
	// Lines are read and decoded while the batch before commits: both
	// take CPU, and a server has more than one core.
	batches := make(chan lineBatch, 1)
	quit := make(chan struct{})
	go a.readImportLines(r, batches, quit)
	var (
		sum     importSummary
		started bool
		enc     = json.NewEncoder(w)
		lineNo  int
		stop    error
	)
	flush := func(batch []pendingLine) error {
		if len(batch) == 0 {
			return nil
		}
		ims := make([]keystore.Import, 0, len(batch))
		for _, p := range batch {
			if p.err == nil {
				ims = append(ims, p.im)
			}
		}
		res, err := a.store.ImportKeys(r.Context(), ims)
		if err != nil && !started {
			return err // nothing written yet: an ordinary error answer
		}
		if !started {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		j := 0
		for _, p := range batch {
			out := importLine{Line: p.line}
			lineErr := p.err
			if lineErr == nil {
				if j >= len(res) {
					break // the store failed at this line's batch
				}
				lineErr = res[j].Err
				out.ID = res[j].Key.ID
				j++
			}
			if lineErr != nil {
				out.ID = ""
				_, out.Code, out.Error = lineOutcome(lineErr)
				sum.Failed++
			} else {
				out.Status = "imported"
				sum.Imported++
			}
			if werr := enc.Encode(out); werr != nil {
				return werr
			}
		}
		_ = rc.Flush()
		extend()
		return err
	}
	for b := range batches {
		if stop != nil {
			continue // draining: the reader is being stopped
		}
		lineNo = b.last
		if err := flush(b.lines); err != nil {
			stop = err
		} else if b.err != nil {
			stop = b.err
		}
		if stop != nil {
			// Unblock a read in progress, and stop the reader.
			close(quit)
			_ = rc.SetReadDeadline(time.Now())
		}
	}
	if stop != nil && !started {
		var mbe *http.MaxBytesError
		if errors.As(stop, &mbe) {
			return &apiError{status: http.StatusRequestEntityTooLarge, code: "body_too_large", msg: fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)}
		}
		return stop
	}
	if !started {
		// An empty body: nothing to import, still a well-formed answer.
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
	if stop != nil {
		_, sum.Code, sum.Error = a.stopOutcome(r, stop, lineNo)
	}
	// The status is sent: a client that hung up has nothing to be told.
	_ = enc.Encode(sum)
	return nil
}

// readImportLines reads r's body line by line, decodes each line and
// sends them in batches until the body ends, a read fails or quit is
// closed; it closes batches when done, so that the handler, which waits
// for that, returns only once the body is no longer read.
func (a *api) readImportLines(r *http.Request, batches chan<- lineBatch, quit <-chan struct{}) {
	defer close(batches)
	br := bufio.NewReaderSize(r.Body, maxImportLine+1)
	var (
		batch  []pendingLine
		lineNo int
	)
	for {
		line, tooLong, err := readLine(br)
		eof := errors.Is(err, io.EOF)
		if err != nil && !eof {
			// The partial line is dropped: the body was cut off.
			line, tooLong = nil, false
		}
		if len(line) > 0 || tooLong {
			lineNo++
			batch = append(batch, a.decodeImportLine(r, lineNo, line, tooLong))
		} else if err == nil {
			lineNo++ // a blank line keeps its number, and is skipped
		}
		if len(batch) == importBatch || err != nil {
			b := lineBatch{lines: batch, last: lineNo}
			if !eof {
				b.err = err
			}
			select {
			case batches <- b:
			case <-quit:
				return
			}
			batch = nil
		}
		if err != nil {
			return
		}
	}
}

// readLine reads one line without its end. A line longer than
// maxImportLine is read to its end and dropped: tooLong.
func readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			tooLong = true
			continue
		case tooLong:
			return nil, true, err
		}
		if n := len(chunk); n > 0 && chunk[n-1] == '\n' {
			chunk = chunk[:n-1]
		}
		if n := len(chunk); n > 0 && chunk[n-1] == '\r' {
			chunk = chunk[:n-1]
		}
		return chunk, false, err
	}
}

// decodeImportLine reads one line as the single-object import reads its
// body, and checks the token's reach for it.
func (a *api) decodeImportLine(r *http.Request, n int, line []byte, tooLong bool) pendingLine {
	p := pendingLine{line: n}
	if tooLong {
		p.err = badRequest("line is longer than %d bytes", maxImportLine)
		return p
	}
	var req importRequest
	if err := decodeJSON(line, &req, false); err != nil {
		p.err = err
		return p
	}
	at, err := a.expiry(req.ExpiresIn, req.ExpiresAt)
	if err != nil {
		p.err = err
		return p
	}
	req.ExpiresAt = at
	if err := a.reachNewKey(r, req.TenantID, req.OrgID); err != nil {
		p.err = err
		return p
	}
	p.im = req.Import
	return p
}

// lineOutcome is what a client is told of one line's refusal: the same
// code and message the single-object import would answer.
func lineOutcome(err error) (int, string, string) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status, ae.code, ae.msg
	}
	msg, _ := vizerror.As(err)
	switch {
	case errors.Is(err, keystore.ErrOrgKeyLimit):
		return http.StatusConflict, "org_key_limit", orDefault(msg, "the organization already has its maximum of usable keys")
	case errors.Is(err, keystore.ErrInvalid):
		return http.StatusBadRequest, "invalid_request", orDefault(msg, "invalid request")
	case errors.Is(err, keystore.ErrNotFound):
		return http.StatusNotFound, "not_found", orDefault(msg, "not found")
	case errors.Is(err, keystore.ErrConflict):
		return http.StatusConflict, "conflict", orDefault(msg, "the request conflicts with the stored state")
	}
	return http.StatusInternalServerError, "internal", "internal error"
}

// stopOutcome describes why an import that had begun answering stopped,
// after line n; the cause is logged, not sent.
func (a *api) stopOutcome(r *http.Request, err error, n int) (int, string, string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body is larger than %d bytes; stopped after line %d", mbe.Limit, n)
	case errors.Is(err, keystore.ErrUnavailable), errors.Is(err, keystore.ErrClosed):
		a.log.WarnContext(r.Context(), "bulk import stopped: key store unavailable", "error", err.Error())
		return http.StatusServiceUnavailable, "unavailable", fmt.Sprintf("the key store is unavailable; stopped at line %d or before", n)
	}
	a.log.ErrorContext(r.Context(), "bulk import stopped", "error", err.Error())
	return http.StatusInternalServerError, "internal", fmt.Sprintf("internal error; stopped at line %d or before", n)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
