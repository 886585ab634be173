package admin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
	"github.com/keygate/keygate/keystore/apikey"
)

// importOutcome is one line of a bulk import's answer: a line's outcome or
// the summary.
type importOutcome struct {
	Line     int    `json:"line"`
	ID       string `json:"id"`
	Status   string `json:"status"`
	Error    string `json:"error"`
	Code     string `json:"code"`
	Imported *int   `json:"imported"`
	Failed   *int   `json:"failed"`
}

// bulk sends body as an NDJSON import with token tok; chunked sends it
// without a length.
func (f *fixture) bulk(tok string, body []byte, chunked bool) (int, []importOutcome) {
	f.t.Helper()
	var rd io.Reader = bytes.NewReader(body)
	if chunked {
		rd = io.MultiReader(rd) // hides the length: sent chunked
	}
	req, err := http.NewRequest("POST", f.srv.URL+"/v1/keys/import", rd)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		f.t.Logf("answer %d: %s", resp.StatusCode, b)
		return resp.StatusCode, nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		f.t.Errorf("Content-Type %q", ct)
	}
	var out []importOutcome
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var o importOutcome
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			f.t.Fatalf("answer line %q: %v", sc.Text(), err)
		}
		out = append(out, o)
	}
	if err := sc.Err(); err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, out
}

func newRaw(t *testing.T) string {
	t.Helper()
	raw, err := apikey.MustFormat(apikey.DefaultPrefix).Generate(apikey.EnvLive)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestBulkImport(t *testing.T) {
	f := newFixture(t, admin.Options{Audit: true})
	tn, org, _ := f.seed()
	other, err := f.store.CreateTenant(t.Context(), "Other")
	if err != nil {
		t.Fatal(err)
	}
	good, dup, hashed := newRaw(t), newRaw(t), newRaw(t)
	sum := apikey.HashOf(hashed)
	lines := []struct {
		text string
		code string // empty: imported
	}{
		{fmt.Sprintf(`{"tenant_id":%q,"name":"a","key":%q,"scopes":["vault:read"]}`, tn.ID, good), ""},
		{fmt.Sprintf(`{"tenant_id":%q,"org_id":%q,"name":"b","key_sha256":%q,"display_prefix":"ak_live_x","expires_in":"720h"}`, tn.ID, org.ID, hex.EncodeToString(sum[:])), ""},
		{"", ""}, // blank: skipped, counted
		{`{"tenant_id":`, "invalid_request"},
		{fmt.Sprintf(`{"tenant_id":%q,"NAME":"c","key":%q}`, tn.ID, newRaw(t)), "invalid_request"},
		{fmt.Sprintf(`{"tenant_id":%q,"name":"d","name":"e","key":%q}`, tn.ID, newRaw(t)), "invalid_request"},
		{fmt.Sprintf(`{"tenant_id":%q,"name":"f","key":%q}`, tn.ID, dup), ""},
		{fmt.Sprintf(`{"tenant_id":%q,"name":"g","key":%q}`, tn.ID, dup), "conflict"},
		{fmt.Sprintf(`{"tenant_id":"tnt_none","name":"h","key":%q}`, newRaw(t)), "not_found"},
		{fmt.Sprintf(`{"tenant_id":%q,"org_id":%q,"name":"i","key":%q}`, other.ID, org.ID, newRaw(t)), "invalid_request"},
		{fmt.Sprintf(`{"tenant_id":%q,"name":"j","key":%q,"tier":"nope"}`, tn.ID, newRaw(t)), "invalid_request"},
		{`{"name":"` + strings.Repeat("x", 70<<10) + `"}`, "invalid_request"},
		{fmt.Sprintf(`{"tenant_id":%q,"name":"last","key":%q}`, tn.ID, newRaw(t)), ""},
	}
	var body bytes.Buffer
	for _, l := range lines {
		body.WriteString(l.text + "\r\n")
	}
	for _, chunked := range []bool{false, true} {
		if chunked {
			// Again, as a stream: every key is now a duplicate.
			for i := range lines {
				if lines[i].code == "" && lines[i].text != "" {
					lines[i].code = "conflict"
				}
			}
		}
		status, out := f.bulk(token, body.Bytes(), chunked)
		if status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		want := 0
		for _, l := range lines {
			if l.text != "" {
				want++
			}
		}
		if len(out) != want+1 {
			t.Fatalf("%d answer lines, want %d outcomes and the summary: %+v", len(out), want, out)
		}
		imported, failed, j := 0, 0, 0
		for i, l := range lines {
			if l.text == "" {
				continue
			}
			o := out[j]
			j++
			if o.Line != i+1 {
				t.Errorf("outcome %d is of line %d, want %d", j, o.Line, i+1)
			}
			if l.code == "" {
				imported++
				if o.Status != "imported" || o.ID == "" || o.Error != "" {
					t.Errorf("line %d: %+v, want imported", i+1, o)
				}
				continue
			}
			failed++
			if o.Code != l.code || o.Error == "" || o.ID != "" {
				t.Errorf("line %d: %+v, want code %s", i+1, o, l.code)
			}
			if strings.Contains(o.Error, "ak_live_") || strings.Contains(o.Error, "xxxx") {
				t.Errorf("line %d: the error quotes the line: %s", i+1, o.Error)
			}
		}
		s := out[len(out)-1]
		if s.Imported == nil || *s.Imported != imported || *s.Failed != failed || s.Error != "" {
			t.Errorf("summary %+v, want %d imported, %d failed", s, imported, failed)
		}
	}
	for _, raw := range []string{good, dup, hashed} {
		c, found, err := f.store.LookupKey(t.Context(), apikey.HashOf(raw))
		if err != nil || !found || c.TenantID != tn.ID {
			t.Errorf("imported key: found %v, %+v, %v", found, c, err)
		}
	}
	// One audit entry per request, whatever its lines.
	n := 0
	for _, e := range f.audit("") {
		if e.Action == "keys.import" {
			n++
			if e.Status != http.StatusOK || e.Outcome != keystore.AuditOK {
				t.Errorf("audit entry %+v", e)
			}
		}
	}
	if n != 2 {
		t.Errorf("%d keys.import audit entries, want 2", n)
	}
	// The single-object import is unchanged.
	resp := f.do("POST", "/v1/keys/import", fmt.Sprintf(`{"tenant_id":%q,"name":"one","key":%q}`, tn.ID, newRaw(t)))
	if resp.status != http.StatusCreated {
		t.Errorf("single import: %d %s", resp.status, resp.body)
	}
}

// TestBulkImportReach: a bound token imports within its reach; a line
// outside it is that line's error.
func TestBulkImportReach(t *testing.T) {
	f := newFixture(t, admin.Options{})
	tn, org, _ := f.seed()
	other, err := f.store.CreateOrg(t.Context(), tn.ID, "Other")
	if err != nil {
		t.Fatal(err)
	}
	tok := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeKeysWrite}, OrgID: org.ID})
	in, out1, out2 := newRaw(t), newRaw(t), newRaw(t)
	body := fmt.Sprintf("%s\n%s\n%s\n",
		fmt.Sprintf(`{"tenant_id":%q,"org_id":%q,"name":"in","key":%q}`, tn.ID, org.ID, in),
		fmt.Sprintf(`{"tenant_id":%q,"org_id":%q,"name":"other org","key":%q}`, tn.ID, other.ID, out1),
		fmt.Sprintf(`{"tenant_id":%q,"name":"tenant level","key":%q}`, tn.ID, out2))
	status, out := f.bulk(tok, []byte(body), false)
	if status != http.StatusOK || len(out) != 4 {
		t.Fatalf("status %d, %+v", status, out)
	}
	if out[0].Status != "imported" || out[1].Code != "out_of_reach" || out[2].Code != "out_of_reach" {
		t.Errorf("outcomes %+v", out)
	}
	for i, raw := range []string{out1, out2} {
		if _, found, _ := f.store.LookupKey(t.Context(), apikey.HashOf(raw)); found {
			t.Errorf("line %d, out of reach, was imported", i+2)
		}
	}
	// A token without keys:write imports nothing at all.
	ro := f.mint(keystore.AdminTokenSpec{Scopes: []string{keystore.ScopeKeysRead}})
	if status, _ := f.bulk(ro, []byte(body), false); status != http.StatusForbidden {
		t.Errorf("read-only token: %d", status)
	}
}

func TestBulkImportLimits(t *testing.T) {
	t.Cleanup(admin.SetImportBatch(1000))
	f := newFixture(t, admin.Options{MaxImportBytes: 300 << 10, MaxBodyBytes: 1 << 10})
	tn, _, _ := f.seed()
	var body bytes.Buffer
	for body.Len() < 400<<10 {
		fmt.Fprintf(&body, `{"tenant_id":%q,"name":"k","key":%q}`+"\n", tn.ID, newRaw(t))
	}
	// Declared too large: refused before a line is read.
	if status, _ := f.bulk(token, body.Bytes(), false); status != http.StatusRequestEntityTooLarge {
		t.Errorf("declared length over the limit: %d", status)
	}
	// Streamed: the first batch commits, and the summary says where it
	// stopped. MaxBodyBytes (1 KiB) does not apply to NDJSON.
	status, out := f.bulk(token, body.Bytes(), true)
	if status != http.StatusOK || len(out) == 0 {
		t.Fatalf("streamed over the limit: %d", status)
	}
	s := out[len(out)-1]
	if s.Code != "body_too_large" || s.Imported == nil || *s.Imported != len(out)-1 || *s.Imported < 1000 {
		t.Errorf("summary %+v after %d outcomes", s, len(out)-1)
	}
	if p, err := f.store.ListKeys(context.Background(), keystore.ListFilter{TenantID: tn.ID, Limit: 1}); err != nil || len(p.Keys) == 0 {
		t.Errorf("listing: %v", err)
	}
}
