package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The key console's browser test: the real binary serves /ui/ on its admin
// listener, and Debian's chromium (installed by `make deps`), headless
// through chromedp, does what an operator and then a customer org would.

// browserPath finds a Chromium or Chrome binary; the test fails without
// one, since a console nobody clicked through is not tested.
func browserPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium or chrome on PATH: `make deps` installs Debian's chromium, which the console's browser test drives")
	return ""
}

// page is one browser tab on the console, with what its console printed.
type page struct {
	t     *testing.T
	ctx   context.Context
	shots string

	mu   sync.Mutex
	logs []chromedp.ConsoleMessage
}

func newPage(t *testing.T, shots string) *page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browserPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs the tests as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	p := &page{t: t, ctx: ctx, shots: shots}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", browserPath(t), err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.logs = append(p.logs, m)
			p.mu.Unlock()
		}
	}()
	return p
}

// do runs steps, each call within 30 s.
func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("%s: %v\npage console:\n%s", what, err, p.console())
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](p *page, expr string, opts ...chromedp.EvaluateOption) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// until waits for a JavaScript condition to hold.
func (p *page) until(what, expr string) {
	p.t.Helper()
	p.do("wait for "+what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(20*time.Second)))
}

func (p *page) click(sel string) {
	p.t.Helper()
	p.do("click "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

func (p *page) html() string {
	p.t.Helper()
	return eval[string](p, `document.documentElement.outerHTML`)
}

// screenshot saves the viewport, or with full the whole page, as PNG.
func (p *page) screenshot(name string, full ...bool) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	shot := chromedp.CaptureScreenshot()
	if len(full) > 0 && full[0] {
		shot = chromedp.FullScreenshot(100)
	}
	b, err := chromedp.Run(ctx, shot)
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(p.shots, name+".png")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot %s", path)
}

func (p *page) console() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, m := range p.logs {
		fmt.Fprintf(&b, "  %s (%s:%d)\n", m, m.URL, m.Line+1)
	}
	return b.String()
}

// checkConsole fails on a Content-Security-Policy violation (the page
// relying on something its policy forbids) or an uncaught exception.
func (p *page) checkConsole() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.logs {
		if strings.Contains(m.Text, "Content Security Policy") || m.IsException() {
			p.t.Errorf("page console: %s (%s:%d)", m, m.URL, m.Line+1)
		}
	}
}

// apiGet reads the admin API as the test, with the bootstrap token.
func apiGet(t *testing.T, s *server, token, path string, v any) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.admin+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode
}

// apiPost writes to the admin API as the test.
func apiPost(t *testing.T, s *server, token, path, body string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

type consoleKey struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	RotatedTo string `json:"rotated_to"`
	RevokedAt string `json:"revoked_at"`
	Env       string `json:"environment"`
	Slot      string `json:"slot"`
}

func TestConsoleInBrowser(t *testing.T) {
	shots := os.Getenv("KEYGATE_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := startServer(t, dir)
	boot := readToken(t, dir)
	chk := newChecker(t, s.grpcAddr)

	tenant := s.cli(t, "tenants", "create", "--name", "Acme")["id"].(string)
	org := s.cli(t, "orgs", "create", "--tenant", tenant, "--name", "Acme EU")["id"].(string)
	otherOrg := s.cli(t, "orgs", "create", "--tenant", tenant, "--name", "Globex")["id"].(string)
	otherTenant := s.cli(t, "tenants", "create", "--name", "Initech")["id"].(string)
	// A customer names its keys: this name is markup, which must show as text.
	markup := `<img src=x onerror="document.title='owned'">Globex <b>backend</b>`
	otherKey := s.cli(t, "keys", "create", "--tenant", tenant, "--org", otherOrg, "--name", markup)["id"].(string)

	// The page is served without the token; the API beside it still needs
	// one, also through a path that cleans to an API route.
	resp, err := http.Get(s.admin + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Fatalf("GET /ui/ without a token: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	if code := apiGet(t, s, "", "/ui/../v1/keys", nil); code != http.StatusUnauthorized {
		t.Fatalf("GET /ui/../v1/keys without a token: %d, want 401", code)
	}

	p := newPage(t, shots)
	p.do("open the console", chromedp.EmulateViewport(1280, 800), chromedp.Navigate(s.admin+"/ui"), chromedp.WaitVisible(chromedp.ID("signin-token")))
	p.screenshot("signin-1280x800")

	// Sign in with the bootstrap token: every tenant is listed.
	p.do("sign in", chromedp.SendKeys(chromedp.ID("signin-token"), boot), chromedp.Click(chromedp.ID("signin-submit")), chromedp.WaitVisible(chromedp.ID("view-keys")))
	if strings.Contains(p.html(), boot) {
		t.Fatal("the admin token is in the page after signing in")
	}
	p.click("#tab-tenants")
	p.until("every tenant listed", fmt.Sprintf(`document.querySelector('#tenant-list li[data-tenant-id=%q]') && document.querySelector('#tenant-list li[data-tenant-id=%q]')`, tenant, otherTenant))
	p.click(fmt.Sprintf(`#tenant-list li[data-tenant-id=%q] button.link`, tenant))
	p.until("the tenant's orgs", fmt.Sprintf(`document.querySelector('#org-list li[data-org-id=%q]') && document.querySelector('#org-list li[data-org-id=%q]')`, org, otherOrg))
	p.screenshot("tenants-1280x800")
	p.click(fmt.Sprintf(`#org-list li[data-org-id=%q] button`, org))
	p.until("the org picked", fmt.Sprintf(`!document.getElementById('view-keys').hidden && document.getElementById('filter-org').value === %q`, org))

	// Create a key in the org.
	name := "Production backend"
	p.click("#open-create")
	p.do("fill the create form",
		chromedp.SendKeys(chromedp.ID("create-name"), name),
		chromedp.Click(chromedp.ID("create-env-live")),
		chromedp.SendKeys(chromedp.ID("create-scopes"), "vault:read, vault:write"),
		chromedp.SetValue(chromedp.ID("create-expiry"), "720h"),
	)
	p.screenshot("create-1280x800")
	p.click("#create-submit")
	p.do("the copy-once dialog", chromedp.WaitVisible(chromedp.ID("secret-value")))
	raw := eval[string](p, `document.getElementById('secret-value').textContent`)
	if !strings.HasPrefix(raw, "ak_live_") {
		t.Fatalf("copy-once dialog shows %q", raw)
	}
	if warn := eval[string](p, `document.getElementById('secret-dialog').textContent`); !strings.Contains(warn, "will not be shown again") {
		t.Fatalf("copy-once dialog without its warning: %q", warn)
	}
	// The screenshot shows the dialog with the key masked, never the key.
	eval[bool](p, `(() => { const e = document.getElementById('secret-value'); e.textContent = e.textContent.slice(0, 12) + '•'.repeat(20); return true; })()`)
	p.screenshot("copy-once-1280x800")
	p.click("#secret-close")
	p.until("the dialog closed", `!document.getElementById('secret-dialog').open`)
	if strings.Contains(p.html(), raw) || strings.Contains(p.html(), raw[12:]) {
		t.Fatal("the raw key is still in the page after its dialog closed")
	}

	var page struct{ Data []consoleKey }
	apiGet(t, s, boot, "/v1/keys?org_id="+org, &page)
	if len(page.Data) != 1 || page.Data[0].Name != name || page.Data[0].Env != "live" {
		t.Fatalf("keys of the org after the UI's create: %+v", page.Data)
	}
	id := page.Data[0].ID
	row := fmt.Sprintf(`#keys-body tr[data-key-id=%q]`, id)
	p.until("the new key listed", fmt.Sprintf(`document.querySelector('%s')`, row))
	if got := eval[string](p, fmt.Sprintf(`document.querySelector('%s button.key-open').textContent`, row)); got != name {
		t.Fatalf("the key's name shows as %q", got)
	}
	if st := eval[string](p, fmt.Sprintf(`document.querySelector('%s .badge').textContent`, row)); st != "active" {
		t.Fatalf("listed status %q", st)
	}

	if ok, code, got := chk.check(raw); !ok || got != tenant {
		t.Fatalf("Check with the key from the console: allowed %v, status %d, tenant %q", ok, code, got)
	}
	p.click("#refresh-keys")
	p.until("the key listed again", fmt.Sprintf(`document.querySelector('%s')`, row))
	p.screenshot("keys-1280x800")

	// The key's page: usage (the Check above) and audit trail.
	p.click(row + " button.key-open")
	p.until("the usage chart", `document.querySelector('#usage-chart svg rect.allowed') && document.getElementById('usage-total').textContent.startsWith('1 allowed')`)
	p.until("the audit trail", `document.querySelector('#audit-body tr[data-action="keys.create"]')`)
	p.screenshot("key-1280x800", true)

	keyStatus := func() consoleKey {
		var k consoleKey
		if code := apiGet(t, s, boot, "/v1/keys/"+id, &k); code != http.StatusOK {
			t.Fatalf("GET key: %d", code)
		}
		return k
	}
	detailStatus := func(want string) {
		p.until("status "+want, fmt.Sprintf(`(document.querySelector('#key-fields dd[data-field="status"]') || {}).textContent === %q`, want))
	}

	// Deactivate (confirmed) and reactivate.
	p.click("#key-deactivate")
	p.do("the confirmation", chromedp.WaitVisible(chromedp.ID("confirm-ok")))
	p.click("#confirm-ok")
	detailStatus("inactive")
	if k := keyStatus(); k.Status != "inactive" {
		t.Fatalf("after deactivating in the UI the API says %q", k.Status)
	}
	if ok, code, _ := chk.check(raw); ok || code != http.StatusUnauthorized {
		t.Fatalf("Check with a deactivated key: allowed %v, status %d", ok, code)
	}
	p.click("#key-reactivate")
	detailStatus("active")
	// The page reloads the key's usage and audit trail after each action,
	// moving the buttons when they arrive: a click aimed before would land
	// elsewhere.
	p.until("the page reloaded after reactivating", `document.querySelectorAll('#audit-body tr[data-action="keys.update"]').length >= 2`)
	if k := keyStatus(); k.Status != "active" {
		t.Fatalf("after reactivating in the UI the API says %q", k.Status)
	}
	if ok, code, _ := chk.check(raw); !ok {
		t.Fatalf("Check after reactivating: status %d", code)
	}

	// Cancelling the confirmation changes nothing; confirming revokes.
	p.click("#key-revoke")
	p.click("#confirm-cancel")
	// While the modal dialog is open the page is inert: a click sent
	// before the cancel has closed it would be lost.
	p.until("the confirmation closed", `!document.getElementById('confirm-dialog').open`)
	if k := keyStatus(); k.Status != "active" {
		t.Fatalf("a cancelled revoke left the key %q", k.Status)
	}
	p.click("#key-revoke")
	p.click("#confirm-ok")
	detailStatus("revoked")
	if k := keyStatus(); k.Status != "revoked" {
		t.Fatalf("after revoking in the UI the API says %q", k.Status)
	}
	if ok, code, _ := chk.check(raw); ok || code != http.StatusUnauthorized {
		t.Fatalf("Check after revoking in the UI: allowed %v, status %d, want 401", ok, code)
	}
	p.until("keys.revoke in the audit trail", `document.querySelector('#audit-body tr[data-action="keys.revoke"]') && document.querySelector('#audit-body tr[data-action="keys.update"]')`)

	// Rotate a key made with the CLI, with the default grace of an hour.
	old := s.cli(t, "keys", "create", "--tenant", tenant, "--org", org, "--name", "rotate-me")
	oldID, oldRaw := old["id"].(string), old["key"].(string)
	p.click("#back-to-keys")
	p.click(fmt.Sprintf(`#keys-body tr[data-key-id=%q] button.key-open`, oldID))
	p.until("the key to rotate", `document.getElementById('key-title').textContent === 'rotate-me' && !document.getElementById('key-rotate').parentElement.hidden`)
	p.click("#key-rotate")
	p.click("#confirm-ok")
	p.do("the rotated key's dialog", chromedp.WaitVisible(chromedp.ID("secret-value")))
	newRaw := eval[string](p, `document.getElementById('secret-value').textContent`)
	p.click("#secret-close")
	if strings.Contains(p.html(), newRaw) {
		t.Fatal("the rotated key is still in the page after its dialog closed")
	}
	var rotated consoleKey
	apiGet(t, s, boot, "/v1/keys/"+oldID, &rotated)
	if rotated.RotatedTo == "" || rotated.RevokedAt == "" {
		t.Fatalf("the API after rotating in the UI: %+v", rotated)
	}
	p.until("the new key's page", fmt.Sprintf(`(document.querySelector('#key-fields dd[data-field="id"]') || {}).textContent === %q`, rotated.RotatedTo))
	if ok, code, _ := chk.check(newRaw); !ok {
		t.Fatalf("Check with the rotated-to key: status %d", code)
	}
	if ok, code, _ := chk.check(oldRaw); !ok {
		t.Fatalf("Check with the old key in its grace period: status %d", code)
	}

	// Regenerate in a slot (Alloy Embedded's button): a new key takes the
	// slot, and the one it held is revoked at once.
	slotted := s.cli(t, "keys", "create", "--tenant", tenant, "--org", org, "--name", "embedded", "--slot", "primary")
	slottedID, slottedRaw := slotted["id"].(string), slotted["key"].(string)
	p.click("#back-to-keys")
	p.click(fmt.Sprintf(`#keys-body tr[data-key-id=%q] button.key-open`, slottedID))
	p.until("the slotted key", `document.getElementById('key-title').textContent === 'embedded' && !document.getElementById('key-regenerate').hidden`)
	p.click("#key-regenerate")
	p.click("#confirm-ok")
	p.do("the regenerated key's dialog", chromedp.WaitVisible(chromedp.ID("secret-value")))
	regenRaw := eval[string](p, `document.getElementById('secret-value').textContent`)
	p.click("#secret-close")
	var inOrg struct{ Data []consoleKey }
	apiGet(t, s, boot, "/v1/keys?org_id="+org, &inOrg)
	var regenID string
	for _, k := range inOrg.Data {
		switch {
		case k.ID == slottedID && k.Status != "revoked":
			t.Fatalf("the key regenerated away from is %q", k.Status)
		case k.ID != slottedID && k.Slot == "primary":
			regenID = k.ID
		}
	}
	if regenID == "" || len(inOrg.Data) != 5 {
		t.Fatalf("the org's keys after regenerating in the UI: %+v", inOrg.Data)
	}
	p.until("the regenerated key's page", fmt.Sprintf(`(document.querySelector('#key-fields dd[data-field="id"]') || {}).textContent === %q`, regenID))
	if ok, code, _ := chk.check(regenRaw); !ok {
		t.Fatalf("Check with the regenerated key: status %d", code)
	}
	if ok, code, _ := chk.check(slottedRaw); ok || code != http.StatusUnauthorized {
		t.Fatalf("Check with the key regenerated away from: allowed %v, status %d", ok, code)
	}

	// A narrow screen: the table turns into cards, and nothing scrolls
	// sideways.
	p.do("narrow", chromedp.EmulateViewport(390, 844))
	p.click("#back-to-keys")
	p.until("keys as cards", `getComputedStyle(document.querySelector('#keys-table thead')).display === 'none' && document.querySelectorAll('#keys-body tr').length === 5`)
	if st := eval[string](p, fmt.Sprintf(`document.querySelector('#keys-body tr[data-key-id=%q] .badge').textContent`, oldID)); st != "rotating" {
		t.Errorf("a key in its rotation's grace period is listed %q", st)
	}
	if w := eval[int](p, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("at 390 px wide the page is %d px wide", w)
	}
	p.screenshot("keys-390x844")
	p.click(fmt.Sprintf(`#keys-body tr[data-key-id=%q] button.key-open`, regenID))
	p.until("a key's page, narrow", `document.querySelector('#usage-chart svg') && document.querySelector('#audit-body tr')`)
	if w := eval[int](p, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("a key's page at 390 px wide is %d px wide", w)
	}
	p.screenshot("key-390x844", true)
	p.click("#back-to-keys")
	p.until("the keys again", `document.querySelectorAll('#keys-body tr').length === 5`)
	p.do("wide again", chromedp.EmulateViewport(1280, 800))
	p.screenshot("keys-states-1280x800")

	// Every org of the tenant: the other org's key, named in markup, is
	// listed as text.
	eval[bool](p, `(() => { const s = document.getElementById('filter-org'); s.value = ''; s.dispatchEvent(new Event('change')); return true; })()`)
	otherRow := fmt.Sprintf(`#keys-body tr[data-key-id=%q]`, otherKey)
	p.until("every org's keys", fmt.Sprintf(`document.querySelector('%s')`, otherRow))
	if got := eval[string](p, fmt.Sprintf(`document.querySelector('%s button.key-open').textContent`, otherRow)); got != markup {
		t.Fatalf("a key named %q shows as %q", markup, got)
	}
	if n := eval[int](p, `document.querySelectorAll('#keys-body img, #keys-body b').length`); n != 0 || eval[string](p, `document.title`) == "owned" {
		t.Fatal("a key's name was parsed as markup")
	}

	// The API's cursor pagination: 26 keys are a page of 25 and one more.
	for i := range 26 {
		if code := apiPost(t, s, boot, "/v1/keys", fmt.Sprintf(`{"tenant_id": %q, "name": "bulk-%02d"}`, otherTenant, i)); code != http.StatusCreated {
			t.Fatalf("create key %d: %d", i, code)
		}
	}
	eval[bool](p, fmt.Sprintf(`(() => { const s = document.getElementById('filter-tenant'); s.value = %q; s.dispatchEvent(new Event('change')); return true; })()`, otherTenant))
	p.until("the first page", `document.querySelectorAll('#keys-body tr').length === 25 && !document.getElementById('keys-more').hidden`)
	p.click("#keys-more")
	p.until("the next page", `document.querySelectorAll('#keys-body tr').length === 26 && document.getElementById('keys-more').hidden`)
	if got := eval[string](p, `document.querySelector('#keys-body tr:last-child button.key-open').textContent`); got != "bulk-25" {
		t.Fatalf("the last key listed is %q, want bulk-25", got)
	}

	// Signing out forgets the token: the page can no longer call the API.
	p.click("#sign-out")
	p.do("signed out", chromedp.WaitVisible(chromedp.ID("signin-token")))
	if got := eval[string](p, `import('./api.js').then(m => m.call('GET', '/v1/tenants')).then(() => 'called', e => e.code)`, chromedp.EvalAwaitPromise); got != "unauthorized" {
		t.Fatalf("after signing out an API call from the page gave %q", got)
	}
	if n := eval[int](p, `document.querySelectorAll('#keys-body tr').length`); n != 0 {
		t.Fatalf("%d key rows left after signing out", n)
	}

	// A customer org's token sees its org's keys and nothing else.
	orgToken := s.cli(t, "admin-tokens", "create", "--name", "acme-eu-console", "--org", org,
		"--scopes", "keys:read,keys:write,tenants:read,usage:read,audit:read")["token"].(string)
	p.do("sign in as the org", chromedp.SendKeys(chromedp.ID("signin-token"), orgToken), chromedp.Click(chromedp.ID("signin-submit")), chromedp.WaitVisible(chromedp.ID("view-keys")))
	p.until("the org's keys", fmt.Sprintf(`document.querySelector('#keys-body tr[data-key-id=%q]') && document.querySelectorAll('#keys-body tr').length === 5`, rotated.RotatedTo))
	if eval[bool](p, fmt.Sprintf(`document.querySelector('#keys-body tr[data-key-id=%q]') !== null`, otherKey)) {
		t.Fatal("the org-bound token's console lists another org's key")
	}
	p.click("#tab-tenants")
	p.until("its tenant", fmt.Sprintf(`document.querySelector('#tenant-list li[data-tenant-id=%q]') && document.querySelector('#org-list li[data-org-id=%q]')`, tenant, org))
	for _, other := range []string{fmt.Sprintf(`#tenant-list li[data-tenant-id=%q]`, otherTenant), fmt.Sprintf(`#org-list li[data-org-id=%q]`, otherOrg)} {
		if eval[bool](p, fmt.Sprintf(`document.querySelector('%s') !== null`, other)) {
			t.Fatalf("the org-bound token's console shows %s", other)
		}
	}
	// What the API refuses the token is said, not broken: a new tenant.
	p.do("create a tenant as the org", chromedp.SendKeys(chromedp.ID("tenant-name"), "Mine"), chromedp.Click(chromedp.CSS("#tenant-form button")))
	p.until("the refusal shown", `!document.getElementById('notice').hidden && document.getElementById('notice').textContent.includes('Not allowed')`)

	// The org manages its own keys: one created here lands in its org.
	p.click("#tab-keys")
	p.click("#open-create")
	p.do("create as the org", chromedp.SendKeys(chromedp.ID("create-name"), "self-service"), chromedp.Click(chromedp.ID("create-submit")), chromedp.WaitVisible(chromedp.ID("secret-value")))
	selfRaw := eval[string](p, `document.getElementById('secret-value').textContent`)
	p.click("#secret-close")
	if ok, code, got := chk.check(selfRaw); !ok || got != tenant {
		t.Fatalf("Check with the org's own new key: allowed %v, status %d, tenant %q", ok, code, got)
	}
	var mine struct{ Data []consoleKey }
	apiGet(t, s, boot, "/v1/keys?org_id="+org, &mine)
	if len(mine.Data) != 6 || mine.Data[5].Name != "self-service" {
		t.Fatalf("the org's keys after its own create: %+v", mine.Data)
	}
	p.until("the org's new key listed", `document.querySelectorAll('#keys-body tr').length === 6`)

	p.checkConsole()
}
