package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The README is the manual: these tests hold it to the binary. Every
// command and flag the CLI has is in its CLI section (or, for serve, its
// Configuration table), every admin route in the Admin API table, the
// `keygate check` example prints what the README shows, and no file of the
// repository points at a document that is not in it.

const repoRoot = "../.."

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section is the README text from the heading named title to the next
// heading of the same or a higher level.
func section(t *testing.T, doc, title string) string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	start, level := -1, 0
	fence := false
	for i, l := range lines {
		if strings.HasPrefix(l, "```") {
			fence = !fence
		}
		if fence || !strings.HasPrefix(l, "#") {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, "#"))
		if start < 0 {
			if strings.TrimSpace(l[n:]) == title {
				start, level = i, n
			}
			continue
		}
		if n <= level {
			return strings.Join(lines[start:i], "\n")
		}
	}
	if start < 0 {
		t.Fatalf("README has no section %q", title)
	}
	return strings.Join(lines[start:], "\n")
}

// commonFlags are every management command's, documented once in the CLI
// section's prose rather than on each command's line.
var commonFlags = []string{"admin-url", "admin-token-file", "output"}

// cliEntry is the CLI block's text for `keygate group`: every line that
// starts with it and the indented lines that continue it.
func cliEntry(block string, path []string) string {
	var b strings.Builder
	in := false
	prefix := "keygate " + strings.Join(path, " ")
	for _, l := range strings.Split(block, "\n") {
		switch {
		case strings.HasPrefix(l, prefix+" ") || l == prefix:
			in = true
		case strings.HasPrefix(l, "keygate "):
			in = false
		}
		if in {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestReadmeListsEveryCommandAndFlag(t *testing.T) {
	doc := readme(t)
	cliSection := section(t, doc, "The CLI")
	m := regexp.MustCompile("(?s)```\n(keygate .*?)```").FindStringSubmatch(cliSection)
	if m == nil {
		t.Fatal("the CLI section has no block of keygate commands")
	}
	block := m[1]
	config := section(t, doc, "Configuration")
	for _, f := range commonFlags {
		if !strings.Contains(cliSection, "--"+f) {
			t.Errorf("the CLI section does not describe --%s", f)
		}
	}

	root := newRootCmd(&cli{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }})
	var leaves []*cobra.Command
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		if !c.HasSubCommands() && c != root {
			leaves = append(leaves, c)
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	if len(leaves) < 20 {
		t.Fatalf("found only %d commands: the walk is broken", len(leaves))
	}
	for _, c := range leaves {
		path := strings.Fields(c.CommandPath())[1:]
		var entry string
		switch path[0] {
		case "serve":
			// serve's flags are the Configuration table's rows.
			entry = config
		case "version":
			entry = cliSection
		default:
			entry = cliEntry(block, path)
			if entry == "" && len(path) == 2 {
				// One line may hold a group's commands: `keygate tenants
				// create --name N | list | get ID`.
				group := cliEntry(block, path[:1])
				if regexp.MustCompile(`(^keygate \S+ |\| )` + regexp.QuoteMeta(path[1]) + `\b`).MatchString(strings.ReplaceAll(group, "\n", " ")) {
					entry = group
				}
			}
		}
		if entry == "" {
			t.Errorf("README's CLI block does not list `keygate %s`", strings.Join(path, " "))
			continue
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Hidden || f.Name == "help" || slices.Contains(commonFlags, f.Name) {
				return
			}
			if !regexp.MustCompile(`--` + regexp.QuoteMeta(f.Name) + `\b`).MatchString(entry) {
				t.Errorf("README does not list `keygate %s --%s`", strings.Join(path, " "), f.Name)
			}
		})
	}
}

// routePattern finds the admin API's mux patterns in its source: every
// route is registered with a "METHOD /path" literal.
var routePattern = regexp.MustCompile(`"(GET|POST|PUT|PATCH|DELETE) (/[^" ]*)"`)

var placeholder = regexp.MustCompile(`\{[^}]*\}`)

func TestReadmeListsEveryAdminRoute(t *testing.T) {
	api := section(t, readme(t), "Admin API")
	// A route is listed as `METHOD /path` (a query may follow), with any
	// names in its braces.
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`(GET|POST|PUT|PATCH|DELETE) (/[^`?]*)").FindAllStringSubmatch(api, -1) {
		listed[m[1]+" "+placeholder.ReplaceAllString(m[2], "{}")] = true
	}
	files, err := filepath.Glob(filepath.Join(repoRoot, "keystore", "admin", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	routes := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range routePattern.FindAllStringSubmatch(string(src), -1) {
			routes++
			if r := m[1] + " " + placeholder.ReplaceAllString(m[2], "{}"); !listed[r] {
				t.Errorf("the Admin API section does not list `%s %s` (%s)", m[1], m[2], filepath.Base(f))
			}
		}
	}
	if routes < 25 {
		t.Fatalf("found only %d routes in keystore/admin: the pattern is broken", routes)
	}
}

// TestReadmeCheckExample runs the README's `keygate check` example as
// shown: the Route policy section's config, a key with the scope its
// org-projects rule asks, and the commands (a backup of the running
// server's store, then check on it) with $KEY and $ORG set.
func TestReadmeCheckExample(t *testing.T) {
	doc := readme(t)
	policy := section(t, doc, "Route policy")
	cfg := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindStringSubmatch(policy)
	ex := regexp.MustCompile("(?s)```sh\n(.*?keygate check .*?)```").FindStringSubmatch(policy)
	if cfg == nil || ex == nil {
		t.Fatal("the Route policy section lost its config or its keygate check example")
	}
	var cmdLines, want []string
	for _, l := range strings.Split(strings.TrimSpace(ex[1]), "\n") {
		if c, ok := strings.CutPrefix(l, "# "); ok {
			want = append(want, c)
		} else {
			cmdLines = append(cmdLines, l)
		}
	}
	if len(want) == 0 {
		t.Fatal("the example shows no output")
	}
	script := strings.Join(cmdLines, "\n")

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keygate.yaml"), []byte(cfg[1]), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, dir)
	tenant := s.cli(t, "tenants", "create", "--name", "Acme")
	org := s.cli(t, "orgs", "create", "--tenant", tenant["id"].(string), "--name", "Acme EU")
	key := s.cli(t, "keys", "create", "--tenant", tenant["id"].(string), "--org", org["id"].(string),
		"--user", "user-1", "--name", "Projects", "--scopes", "projects:read")

	// The example's own `keygate` is the binary under test.
	bin := t.TempDir()
	if err := os.Symlink(keygateBin, filepath.Join(bin, "keygate")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	cmd.Env = append(s.env, "PATH="+bin+":"+os.Getenv("PATH"), "KEYGATE_ADMIN_URL="+s.admin,
		"KEY="+key["key"].(string), "ORG="+org["id"].(string))
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the README's example failed: %v\n%s\n%s\n%s", err, script, out.String(), stderr.String())
	}
	got := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	for i, w := range want {
		// "..." in the README stands for what differs from run to run.
		re := "^" + strings.ReplaceAll(regexp.QuoteMeta(w), `\.\.\.`, `\S+`) + "$"
		if i >= len(got) || !regexp.MustCompile(re).MatchString(got[i]) {
			t.Fatalf("the README shows\n%s\nthe example printed\n%s", strings.Join(want, "\n"), out.String())
		}
	}
}

// ignored is a path git ignores: something a tool creates (bench/.tools),
// not a document that should be there.
func ignored(path string) bool {
	// A pattern for a directory ("dir/") matches only what is inside it
	// when the directory does not exist.
	for _, p := range []string{path, path + "/x"} {
		if exec.Command("git", "-C", repoRoot, "check-ignore", "-q", p).Run() == nil {
			return true
		}
	}
	return false
}

// TestNoReferencesToMissingFiles: a link or a path that names a file of the
// repository (a Markdown link, or a backquoted path under one of its
// top-level directories) in any tracked text file must name one that exists
// or one git ignores (what a tool creates).
func TestNoReferencesToMissingFiles(t *testing.T) {
	out, err := exec.Command("git", "-C", repoRoot, "ls-files").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	tracked := strings.Fields(string(out))
	tops := map[string]bool{}
	for _, f := range tracked {
		if top, _, ok := strings.Cut(f, "/"); ok {
			tops[top] = true
		}
	}
	tops["docs"] = true // a docs/ directory this repo does not have
	link := regexp.MustCompile(`\]\(([^)\s#]+)(#[^)]*)?\)`)
	quoted := regexp.MustCompile("`([A-Za-z0-9_.-]+/[A-Za-z0-9_./-]*)`")
	checked := 0
	for _, f := range tracked {
		switch filepath.Ext(f) {
		case ".md", ".yaml", ".yml", ".txt", ".conf", ".go", ".sh", "":
		default:
			continue
		}
		b, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		var refs []string
		if filepath.Ext(f) == ".md" {
			for _, m := range link.FindAllStringSubmatch(text, -1) {
				if !strings.Contains(m[1], "://") && !strings.HasPrefix(m[1], "mailto:") {
					refs = append(refs, filepath.Join(filepath.Dir(f), m[1]))
				}
			}
		}
		for _, m := range quoted.FindAllStringSubmatch(text, -1) {
			p := strings.TrimSuffix(m[1], "/")
			top, _, _ := strings.Cut(p, "/")
			if tops[top] && !strings.ContainsAny(p, "*{<") {
				refs = append(refs, p)
			}
		}
		for _, r := range refs {
			checked++
			if _, err := os.Stat(filepath.Join(repoRoot, r)); err != nil && !ignored(r) {
				t.Errorf("%s refers to %s, which is not in the repository", f, r)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked only %d references: the patterns are broken", checked)
	}
}
