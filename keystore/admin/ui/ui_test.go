package ui

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serve(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, method, path string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// assetNames lists the embedded assets.
func assetNames(t *testing.T) []string {
	t.Helper()
	ents, err := fs.ReadDir(assets, "assets")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) < 5 {
		t.Fatalf("assets: %v, want at least index.html, app.js, api.js, chart.js, style.css", names)
	}
	return names
}

func asset(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(assets, "assets/"+name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEveryAssetServedWithHeaders(t *testing.T) {
	srv := serve(t)
	want := map[string]string{
		"Content-Security-Policy": ContentSecurityPolicy,
		"X-Frame-Options":         "DENY",
		"Referrer-Policy":         "no-referrer",
		"X-Content-Type-Options":  "nosniff",
		"Cache-Control":           "no-store",
	}
	for _, name := range append(assetNames(t), "") {
		path := "/ui/" + name
		resp, body := get(t, srv, http.MethodGet, path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
			continue
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("GET %s: %s = %q, want %q", path, k, got, v)
			}
		}
		file := name
		if file == "" {
			file = "index.html"
		}
		if body != asset(t, file) {
			t.Errorf("GET %s: body is not the embedded %s", path, file)
		}
		ctype := resp.Header.Get("Content-Type")
		wantType := map[string]string{
			".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
			".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
		}
		ok := false
		for ext, typ := range wantType {
			ok = ok || strings.HasSuffix(file, ext) && ctype == typ
		}
		if !ok {
			t.Errorf("GET %s: Content-Type %q", path, ctype)
		}
	}
}

func TestRefusals(t *testing.T) {
	srv := serve(t)
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/ui/nope.js", http.StatusNotFound},
		{http.MethodGet, "/ui/doc.go", http.StatusNotFound},
		{http.MethodGet, "/ui/assets/app.js", http.StatusNotFound},
		{http.MethodGet, "/ui/index.txt", http.StatusNotFound},
		{http.MethodGet, "/other", http.StatusNotFound},
		{http.MethodPost, "/ui/", http.StatusMethodNotAllowed},
		{http.MethodHead, "/ui/app.js", http.StatusOK},
	} {
		resp, _ := get(t, srv, c.method, c.path)
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.status)
		}
		if resp.Header.Get("Content-Security-Policy") != ContentSecurityPolicy {
			t.Errorf("%s %s: no CSP on the answer", c.method, c.path)
		}
	}
}

// TestIndexRunsUnderCSP: the page would break under its own policy with
// inline script, event-handler attributes or style attributes.
func TestIndexRunsUnderCSP(t *testing.T) {
	html := asset(t, "index.html")
	for _, m := range regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script>`).FindAllStringSubmatch(html, -1) {
		if strings.TrimSpace(m[2]) != "" {
			t.Errorf("inline script in index.html: %.80q", m[2])
		}
		if !strings.Contains(m[1], `src="`) {
			t.Errorf("script without src in index.html: %q", m[0])
		}
	}
	if m := regexp.MustCompile(`(?i)\son[a-z]+\s*=`).FindString(html); m != "" {
		t.Errorf("event-handler attribute in index.html: %q", m)
	}
	if m := regexp.MustCompile(`(?i)\sstyle\s*=`).FindString(html); m != "" {
		t.Errorf("style attribute in index.html: %q", m)
	}
	if regexp.MustCompile(`(?i)<style\b`).MatchString(html) {
		t.Error("<style> element in index.html")
	}
	if !strings.Contains(html, `<script type="module" src="app.js"></script>`) {
		t.Error("index.html does not load app.js as a module")
	}
}

// xmlNamespaces are names, not addresses: nothing is fetched from them.
var xmlNamespaces = strings.NewReplacer("http://www.w3.org/2000/svg", "")

func TestNoExternalURLs(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for _, name := range assetNames(t) {
		if strings.HasSuffix(name, ".png") {
			continue
		}
		text := xmlNamespaces.Replace(asset(t, name))
		if m := regexp.MustCompile(`(?i)https?://`).FindString(text); m != "" {
			t.Errorf("%s names an external URL (%q)", name, m)
		}
		if m := url.FindString(text); m != "" {
			t.Errorf("%s names an external host (%q)", name, m)
		}
	}
}

// TestScriptsKeepTheTokenInMemory: the token must end with the tab, and
// API data must never be parsed as HTML.
func TestScriptsKeepTheTokenInMemory(t *testing.T) {
	forbidden := regexp.MustCompile(`localStorage|sessionStorage|document\.cookie|indexedDB|innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(|\.onclick\s*=`)
	n := 0
	for _, name := range assetNames(t) {
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		n++
		if m := forbidden.FindString(asset(t, name)); m != "" {
			t.Errorf("%s uses %s", name, m)
		}
	}
	if n < 3 {
		t.Fatalf("%d scripts checked, want app.js, api.js, chart.js", n)
	}
}
