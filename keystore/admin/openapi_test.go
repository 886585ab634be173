package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate/internal/secret"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/admin"
)

// The admin API's OpenAPI document is held against the handlers both ways:
// every request the package's tests send through a fixture, and every
// answer, is checked against it (specChecker, installed by newFixtureOn),
// and TestMain fails a full run in which an operation of the document
// never answered with success. So a route, field, status or header the
// handlers gain or lose without the document fails the tests, and so does
// a document that describes what no handler serves.

const specFile = "openapi.json"

// The methods a path can be served with, to tell a 405 path from a 404 one.
var specMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// maxCheckedBody bounds what the checker buffers of a request body; the
// tests' largest is a little over 2 MiB.
const maxCheckedBody = 16 << 20

type specChecker struct {
	doc    *openapi3.T
	router routers.Router
	// unrouted is an operation made up to check the answers to requests
	// that match no operation: 401 before routing, else 404 or 405.
	unrouted *routers.Route

	mu sync.Mutex
	// succeeded counts, per operation ("GET /v1/keys/{id}"), the requests
	// it answered with a 2xx that matched the document.
	succeeded map[string]int
	// exchanges counts every exchange checked.
	exchanges int
}

var (
	checkerOnce sync.Once
	checker     *specChecker
	checkerErr  error
)

// theChecker loads the document once for the whole test binary, so its
// counts span every test.
func theChecker() (*specChecker, error) {
	checkerOnce.Do(func() { checker, checkerErr = loadChecker(specFile) })
	return checker, checkerErr
}

func loadSpec(path string) (*openapi3.T, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	doc, err := openapi3.NewLoader().LoadFromData(b)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validate %s: %w", path, err)
	}
	return doc, nil
}

// ndjsonBody reads an NDJSON body (a bulk import and its answer) as the
// array of its non-blank lines, which is how the document describes it. A
// line that is not JSON is kept as a string: in a request it is that
// line's error, not the request's, and in an answer no schema allows it.
func ndjsonBody(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	lines := []any{}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var v any
		if json.Unmarshal(line, &v) != nil {
			v = string(line)
		}
		lines = append(lines, v)
	}
	return lines, nil
}

func loadChecker(path string) (*specChecker, error) {
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", ndjsonBody)
	openapi3filter.RegisterBodyDecoder("application/jsonl", ndjsonBody)
	doc, err := loadSpec(path)
	if err != nil {
		return nil, err
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	resp := doc.Components.Responses
	unrouted := &routers.Route{Spec: doc, PathItem: &openapi3.PathItem{}, Operation: &openapi3.Operation{Responses: openapi3.NewResponses(
		openapi3.WithStatus(http.StatusUnauthorized, resp["Unauthorized"]),
		openapi3.WithStatus(http.StatusNotFound, resp["NotFound"]),
		openapi3.WithStatus(http.StatusMethodNotAllowed, resp["MethodNotAllowed"]),
	)}}
	for _, name := range []string{"Unauthorized", "NotFound", "MethodNotAllowed"} {
		if resp[name] == nil {
			return nil, fmt.Errorf("%s: no components.responses.%s", path, name)
		}
	}
	return &specChecker{doc: doc, router: router, unrouted: unrouted, succeeded: map[string]int{}}, nil
}

// operations lists the document's operations as mux patterns.
func (c *specChecker) operations() []string {
	var ops []string
	for path, item := range c.doc.Paths.Map() {
		for method := range item.Operations() {
			ops = append(ops, method+" "+path)
		}
	}
	slices.Sort(ops)
	return ops
}

// exchange is one request and its answer as the server saw them.
type exchange struct {
	req *http.Request
	// body is the request body; complete is false when it was longer than
	// the checker reads.
	body     []byte
	complete bool
	status   int
	header   http.Header
	resp     []byte
}

// check holds one exchange against the document. A request the document
// calls invalid must have been refused: with 401 when it lacks the bearer
// token, else with some 4xx; and the answer, refusals included, must be
// one the operation documents, headers and body. A request that matches
// no operation must be answered 401, 404 or 405 (405 only on a path the
// document has), in the documented error shape, never with success. HEAD
// is routed as GET; its answer has no body to check.
func (c *specChecker) check(ctx context.Context, x exchange) error {
	c.mu.Lock()
	c.exchanges++
	c.mu.Unlock()
	find := x.req.Clone(ctx)
	if find.Method == http.MethodHead {
		find.Method = http.MethodGet // ServeMux serves HEAD with GET's handler
	}
	// Route by the path as sent, so an escaped "/" in an id stays in it.
	find.URL.Path = x.req.URL.EscapedPath()
	find.URL.RawPath = ""
	route, params, err := c.router.FindRoute(find)
	if err != nil {
		return c.checkUnrouted(ctx, find, x)
	}
	op := route.Method + " " + route.Path

	in := &openapi3filter.RequestValidationInput{
		Request:    x.req.Clone(ctx),
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			// Only that a token was sent: which token may do what is
			// tested against the handlers themselves (auth, scopes, reach).
			AuthenticationFunc: bearerPresent,
		},
	}
	in.Request.Body = io.NopCloser(bytes.NewReader(x.body))
	if len(x.body) > 0 && in.Request.Header.Get("Content-Type") == "" {
		// The handlers read every body as JSON, whatever its type, and the
		// document says so; many tests send none.
		in.Request.Header.Set("Content-Type", "application/json")
	}
	var reqErr error
	if x.complete {
		reqErr = openapi3filter.ValidateRequest(ctx, in)
	} else {
		reqErr = fmt.Errorf("body longer than the %d bytes checked", maxCheckedBody)
	}
	var secErr *openapi3filter.SecurityRequirementsError
	switch {
	case errors.As(reqErr, &secErr) && x.status != http.StatusUnauthorized:
		return fmt.Errorf("%s: the request has no bearer token (%v) but was answered %d, not 401", op, reqErr, x.status)
	case reqErr != nil && (x.status < 400 || x.status > 499):
		return fmt.Errorf("%s: the document refuses the request (%v) but it was answered %d, not a 4xx", op, reqErr, x.status)
	}

	in.Request.Body = io.NopCloser(bytes.NewReader(x.body))
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 x.status,
		Header:                 x.header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	out.SetBodyBytes(x.resp)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("%s: answer %d: %w", op, x.status, err)
	}
	if x.status >= 200 && x.status <= 299 && x.req.Method == route.Method {
		c.mu.Lock()
		c.succeeded[op]++
		c.mu.Unlock()
	}
	return nil
}

func (c *specChecker) checkUnrouted(ctx context.Context, find *http.Request, x exchange) error {
	pathExists := false
	for _, m := range specMethods {
		other := find.Clone(ctx)
		other.Method = m
		if _, _, err := c.router.FindRoute(other); err == nil {
			pathExists = true
		}
	}
	switch {
	case x.status == http.StatusUnauthorized:
	case x.status == http.StatusMethodNotAllowed && pathExists:
	case x.status == http.StatusNotFound && !pathExists:
	default:
		return fmt.Errorf("no operation in the document (path known: %v) was answered %d", pathExists, x.status)
	}
	in := &openapi3filter.RequestValidationInput{Request: x.req.Clone(ctx), Route: c.unrouted}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 x.status,
		Header:                 x.header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	out.SetBodyBytes(x.resp)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("no operation: answer %d: %w", x.status, err)
	}
	return nil
}

// bearerPresent passes a request that carries a bearer token at all.
func bearerPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	scheme, token, ok := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return errors.New("no bearer token")
	}
	return nil
}

// checked serves h, holding every exchange against the document and
// failing t on any mismatch.
func checked(t *testing.T, h http.Handler) http.Handler {
	t.Helper()
	c, err := theChecker()
	if err != nil {
		t.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, complete, err := readBody(r)
		if err != nil {
			t.Errorf("%s %s: reading the request body: %v", r.Method, r.URL, err)
			return
		}
		rec := &recorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		switch {
		case r.Context().Err() != nil:
			return // the client hung up: no one reads this answer
		case consolePath(r.URL.Path):
			return // the key console is served beside the API, not part of it
		}
		x := exchange{req: r, body: body, complete: complete, status: rec.statusCode(), header: rec.sentHeader(), resp: rec.body.Bytes()}
		if err := c.check(r.Context(), x); err != nil {
			t.Errorf("OpenAPI: %s %s → %d: %v", r.Method, r.URL.RequestURI(), x.status, err)
		}
	})
}

// consolePath reports a path of the key console (package ui), which the
// admin listener serves beside the API; a path that cleans to an API route
// ("/ui/../v1/keys") is the API's.
func consolePath(p string) bool {
	p = path.Clean("/" + p)
	return p == "/ui" || strings.HasPrefix(p, "/ui/")
}

// readBody reads r's body for the checker, up to maxCheckedBody, and gives
// the handler a body that reads the same bytes (and any rest).
func readBody(r *http.Request) ([]byte, bool, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxCheckedBody+1))
	if err != nil {
		return nil, false, err
	}
	complete := len(b) <= maxCheckedBody
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
	return b, complete, nil
}

// recorder passes an answer through and keeps a copy of it.
type recorder struct {
	http.ResponseWriter
	code  int
	body  bytes.Buffer
	sniff string
}

func (w *recorder) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	if w.body.Len() == 0 && w.Header().Get("Content-Type") == "" {
		// What net/http will send: it sniffs a missing type from the
		// first bytes without adding it to the handler's header.
		w.sniff = http.DetectContentType(b)
	}
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *recorder) statusCode() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

func (w *recorder) sentHeader() http.Header {
	h := w.Header().Clone()
	if h.Get("Content-Type") == "" && w.sniff != "" {
		h.Set("Content-Type", w.sniff)
	}
	return h
}

func (w *recorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestMain fails a run of the whole package in which an operation of the
// document never answered with success: the document would describe a
// route no test shows the handlers to serve as it says.
func TestMain(m *testing.M) {
	code := m.Run()
	if code != 0 || !wholeRun() {
		os.Exit(code)
	}
	c, err := theChecker()
	if err != nil {
		fmt.Fprintln(os.Stderr, "OpenAPI:", err)
		os.Exit(1)
	}
	if testing.Verbose() {
		c.mu.Lock()
		fmt.Printf("OpenAPI: %d exchanges checked against %s\n", c.exchanges, specFile)
		c.mu.Unlock()
	}
	if missing := c.neverSucceeded(); len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: OpenAPI: no test had a successful answer from these operations of %s:\n\t%s\n",
			specFile, strings.Join(missing, "\n\t"))
		os.Exit(1)
	}
	os.Exit(0)
}

// wholeRun reports whether every test ran (no -run or -skip).
func wholeRun() bool {
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	return true
}

func (c *specChecker) neverSucceeded() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, op := range c.operations() {
		if c.succeeded[op] == 0 {
			out = append(out, op)
		}
	}
	return out
}

// TestOpenAPIDocument: the document loads and validates as OpenAPI 3.1,
// and GET /v1/openapi.json serves the file's bytes, without a token.
func TestOpenAPIDocument(t *testing.T) {
	doc, err := loadSpec(specFile)
	if err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" || !doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	file, err := os.ReadFile(specFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(admin.OpenAPIDocument(), file) {
		t.Error("the embedded document differs from the file")
	}

	f := newFixture(t, admin.Options{})
	r := f.doAuth("GET", "/v1/openapi.json", "", "")
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/openapi.json without a token = %d %q", r.status, r.header.Get("Content-Type"))
	}
	if !bytes.Equal(r.body, file) {
		t.Errorf("the served document (%d bytes) differs from %s (%d bytes)", len(r.body), specFile, len(file))
	}
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Request-Id") == "" {
		t.Errorf("headers %v: want Cache-Control no-store and an X-Request-Id", r.header)
	}
	if got, want := r.header.Get("Content-Length"), fmt.Sprint(len(file)); got != want {
		t.Errorf("Content-Length = %q, want %s", got, want)
	}
	if r := f.doAuth("HEAD", "/v1/openapi.json", "", ""); r.status != http.StatusOK || len(r.body) != 0 || r.header.Get("Content-Length") != fmt.Sprint(len(file)) {
		t.Errorf("HEAD /v1/openapi.json = %d, %d bytes, Content-Length %q", r.status, len(r.body), r.header.Get("Content-Length"))
	}
	r = f.doAuth("POST", "/v1/openapi.json", "{}", "")
	if e := r.errBody(t); r.status != http.StatusMethodNotAllowed || e.Code != "method_not_allowed" || !strings.Contains(r.header.Get("Allow"), "GET") {
		t.Errorf("POST /v1/openapi.json = %d %s, Allow %q", r.status, r.body, r.header.Get("Allow"))
	}
}

// TestOpenAPICoversEveryRoute: the document has exactly the routes the
// handler serves with every option on: none missing, none extra.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	c, err := theChecker()
	if err != nil {
		t.Fatal(err)
	}
	s, err := keystore.Open(filepath.Join(t.TempDir(), "k.db"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	h, err := admin.New(s, admin.Options{Token: secret.New(token), Audit: true, Metrics: http.NotFoundHandler()})
	if err != nil {
		t.Fatal(err)
	}
	served := admin.Patterns(h)
	slices.Sort(served)
	if d := cmp.Diff(served, c.operations()); d != "" {
		t.Errorf("routes served (-) and operations in %s (+) differ:\n%s", specFile, d)
	}
}

// TestOpenAPIScopes: each operation documents the scope the handler asks
// for (x-keygate-scope), or that only the bootstrap token may use it, or
// that it needs no token; and the public ones are served without one.
func TestOpenAPIScopes(t *testing.T) {
	c, err := theChecker()
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, admin.Options{})
	for path, item := range c.doc.Paths.Map() {
		for method, op := range item.Operations() {
			pattern := method + " " + path
			scope, _ := op.Extensions["x-keygate-scope"].(string)
			bootstrapOnly, _ := op.Extensions["x-keygate-bootstrap-only"].(bool)
			public := op.Security != nil && len(*op.Security) == 0
			want := admin.ScopeFor(pattern)
			switch {
			case public:
				if scope != "" || bootstrapOnly {
					t.Errorf("%s: public, and yet scope %q, bootstrap only %v", pattern, scope, bootstrapOnly)
				}
				if r := f.doAuth(method, path, "", ""); r.status == http.StatusUnauthorized {
					t.Errorf("%s is documented public but answers 401 without a token", pattern)
				}
			case bootstrapOnly:
				if want != "" || scope != "" {
					t.Errorf("%s: documented for the bootstrap token only, but the handler asks for scope %q (document says %q)", pattern, want, scope)
				}
			case scope != want || scope == "":
				t.Errorf("%s: document says scope %q, handler asks for %q", pattern, scope, want)
			}
			if !public && !strings.Contains(op.Description, "`"+want+"`") && !bootstrapOnly {
				t.Errorf("%s: the description does not name the scope %q", pattern, want)
			}
		}
	}
}

// TestOpenAPICheckerCatchesDrift: the checker refuses answers and
// requests that depart from the document, so the checks the other tests
// pass through it can fail.
func TestOpenAPICheckerCatchesDrift(t *testing.T) {
	c, err := theChecker()
	if err != nil {
		t.Fatal(err)
	}
	const id = "01a22c8f-1c7a-73dc-bff1-620cc66f610c"
	key := `"id":"` + id + `","name":"ci","display_prefix":"ak_live_AB7K","tenant_id":"t","environment":"live","tier":"standard","scopes":["a"],"status":"active","created_at":"2026-11-30T12:00:00Z"`
	jsonHeader := func(extra ...string) http.Header {
		h := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"r1"}}
		for i := 0; i+1 < len(extra); i += 2 {
			h.Set(extra[i], extra[i+1])
		}
		return h
	}
	tests := []struct {
		name           string
		method, path   string
		auth, body     string
		status         int
		header         http.Header
		resp           string
		wantErrContain string // "" : the exchange matches the document
	}{
		{"a key as documented", "GET", "/v1/keys/" + id, "Bearer x", "", 200, jsonHeader(), `{` + key + `}`, ""},
		{"a key with an undocumented field", "GET", "/v1/keys/" + id, "Bearer x", "", 200, jsonHeader(), `{` + key + `,"hash":"abc"}`, "hash"},
		{"a key without a required field", "GET", "/v1/keys/" + id, "Bearer x", "", 200, jsonHeader(), `{` + strings.Replace(key, `"tier":"standard",`, "", 1) + `}`, "tier"},
		{"a key with a status out of the enum", "GET", "/v1/keys/" + id, "Bearer x", "", 200, jsonHeader(), `{` + strings.Replace(key, `"active"`, `"paused"`, 1) + `}`, "status"},
		{"a created key as documented", "POST", "/v1/keys", "Bearer x", `{"tenant_id":"t","name":"ci"}`, 201, jsonHeader("Location", "/v1/keys/"+id), `{` + key + `,"key":"ak_live_x"}`, ""},
		{"a created key without its secret", "POST", "/v1/keys", "Bearer x", `{"tenant_id":"t","name":"ci"}`, 201, jsonHeader("Location", "/v1/keys/"+id), `{` + key + `}`, "key"},
		{"a created key without Location", "POST", "/v1/keys", "Bearer x", `{"tenant_id":"t","name":"ci"}`, 201, jsonHeader(), `{` + key + `,"key":"ak_live_x"}`, "Location"},
		{"an answer without X-Request-Id", "GET", "/v1/keys/" + id, "Bearer x", "", 200, http.Header{"Content-Type": {"application/json"}}, `{` + key + `}`, "X-Request-Id"},
		{"an undocumented status", "GET", "/v1/keys/" + id, "Bearer x", "", 418, jsonHeader(), `{"error":"x","code":"internal"}`, "status is not supported"},
		{"an error code the status does not document", "GET", "/v1/keys/" + id, "Bearer x", "", 404, jsonHeader(), `{"error":"x","code":"conflict"}`, "code"},
		{"an error in another shape", "GET", "/v1/keys/" + id, "Bearer x", "", 404, jsonHeader(), `{"message":"x","code":"not_found"}`, "message"},
		{"a 401 without its challenge", "GET", "/v1/keys/" + id, "", "", 401, jsonHeader(), `{"error":"x","code":"unauthorized"}`, "WWW-Authenticate"},
		{"no token, and yet served", "GET", "/v1/keys/" + id, "", "", 200, jsonHeader(), `{` + key + `}`, "not 401"},
		{"an unknown field accepted", "POST", "/v1/tenants", "Bearer x", `{"name":"a","nmae":"b"}`, 201, jsonHeader("Location", "/v1/tenants/x"), `{"id":"x","name":"a","created_at":"2026-11-30T12:00:00Z"}`, "not a 4xx"},
		{"an unknown field refused", "POST", "/v1/tenants", "Bearer x", `{"name":"a","nmae":"b"}`, 400, jsonHeader(), `{"error":"unknown field","code":"invalid_request"}`, ""},
		{"a route the document lacks, served", "GET", "/v1/widgets", "Bearer x", "", 200, jsonHeader(), `{}`, "no operation"},
		{"a route the document lacks, refused", "GET", "/v1/widgets", "Bearer x", "", 404, jsonHeader(), `{"error":"no such route","code":"not_found"}`, ""},
		{"a known path, another method, answered 404", "PUT", "/v1/keys", "Bearer x", "", 404, jsonHeader(), `{"error":"no such route","code":"not_found"}`, "path known"},
		{"a known path, another method, answered 405", "PUT", "/v1/keys", "Bearer x", "", 405, jsonHeader("Allow", "GET, HEAD, POST"), `{"error":"method PUT is not allowed on this path","code":"method_not_allowed"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req := httptest.NewRequest(tt.method, tt.path, body)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			err := c.check(t.Context(), exchange{req: req, body: []byte(tt.body), complete: true, status: tt.status, header: tt.header, resp: []byte(tt.resp)})
			switch {
			case tt.wantErrContain == "" && err != nil:
				t.Errorf("the checker refuses an exchange that matches the document: %v", err)
			case tt.wantErrContain != "" && err == nil:
				t.Errorf("the checker passes it, want an error naming %q", tt.wantErrContain)
			case tt.wantErrContain != "" && !strings.Contains(err.Error(), tt.wantErrContain):
				t.Errorf("error %v, want one naming %q", err, tt.wantErrContain)
			}
		})
	}
}

// TestOpenAPIEmptyListings: listings with nothing to list match the
// document too (an empty array, not null), on a store with one tenant and
// one key.
func TestOpenAPIEmptyListings(t *testing.T) {
	f := newFixture(t, admin.Options{Audit: true})
	if r := f.do("GET", "/v1/tenants", ""); r.status != http.StatusOK || string(r.body) != "{\"data\":[]}\n" {
		t.Errorf("GET /v1/tenants on an empty store = %d %s", r.status, r.body)
	}
	tn, err := f.store.CreateTenant(t.Context(), "Acme")
	if err != nil {
		t.Fatal(err)
	}
	k, err := f.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "no scopes"})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		"/v1/orgs", "/v1/admin-tokens", "/v1/usage?tenant_id=" + tn.ID, "/v1/keys/" + k.ID + "/usage?granularity=day",
		"/v1/tenants/" + tn.ID + "/users", "/v1/audit?action=nothing", "/v1/keys?status=expired", "/v1/keys/" + k.ID,
	} {
		if r := f.do("GET", path, ""); r.status != http.StatusOK {
			t.Errorf("GET %s = %d %s", path, r.status, r.body)
		}
	}
}

// TestOpenAPIConsoleIsNotTheAPI: the checker leaves the key console's
// paths alone, and only those.
func TestOpenAPIConsoleIsNotTheAPI(t *testing.T) {
	for p, want := range map[string]bool{
		"/ui": true, "/ui/": true, "/ui/app.js": true,
		"/uix": false, "/ui/../v1/keys": false, "/v1/ui": false, "/v1/keys": false,
	} {
		if got := consolePath(p); got != want {
			t.Errorf("consolePath(%q) = %v, want %v", p, got, want)
		}
	}
	f := newFixture(t, admin.Options{Console: true})
	if r := f.doAuth("GET", "/ui/", "", ""); r.status != http.StatusOK {
		t.Errorf("GET /ui/ with the console on = %d", r.status)
	}
}
