package examples

import (
	"bytes"
	"cmp"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The Dockerfile is checked by reading it the way Docker would (stages,
// ARG/ENV, exec-form JSON) and by running what it runs: its own go build
// line, then the binary that line produced, as the image would run it.
// Docker itself is not needed.

const dockerfilePath = "../Dockerfile"

// dfInstruction is one Dockerfile instruction, continuation lines joined.
type dfInstruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

type dfStage struct {
	from, name string
	platform   string // FROM --platform=...
	ins        []dfInstruction
}

// parseDockerfile splits a Dockerfile into the instructions before the
// first FROM (global ARGs) and its stages. Comment lines are dropped even
// inside a continuation, as Docker drops them.
func parseDockerfile(text string) (global []dfInstruction, stages []dfStage, err error) {
	var (
		cur   strings.Builder
		start int
	)
	flush := func() error {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" {
			return nil
		}
		cmd, args, _ := strings.Cut(s, " ")
		in := dfInstruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			// FROM [--platform=...] image [AS name]
			var platform string
			f = slices.DeleteFunc(f, func(s string) bool {
				if v, ok := strings.CutPrefix(s, "--platform="); ok {
					platform = v
				}
				return strings.HasPrefix(s, "--")
			})
			if len(f) == 0 {
				return fmt.Errorf("line %d: FROM without an image", in.line)
			}
			st := dfStage{from: f[0], platform: platform}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			return nil
		}
		if len(stages) == 0 {
			global = append(global, in)
		} else {
			stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
		}
		return nil
	}
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || trimmed == "" && cur.Len() == 0 {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		if err := flush(); err != nil {
			return nil, nil, err
		}
	}
	if err := flush(); err != nil {
		return nil, nil, err
	}
	if len(stages) == 0 {
		return nil, nil, errors.New("no FROM")
	}
	return global, stages, nil
}

// shellWords splits a shell command line into words and the operators
// between commands (&&, ||, ;, |), with POSIX quoting and $VAR / ${VAR}
// expansion from vars (unset variables expand to "", as in sh).
func shellWords(s string, vars map[string]string) ([]string, error) {
	var (
		words []string
		w     strings.Builder
		inW   bool
	)
	end := func() {
		if inW {
			words = append(words, w.String())
		}
		w.Reset()
		inW = false
	}
	expand := func(i int) int { // s[i] == '$'; returns the index after the reference
		j := i + 1
		if j < len(s) && s[j] == '{' {
			k := strings.IndexByte(s[j:], '}')
			if k < 0 {
				w.WriteByte('$')
				return j
			}
			w.WriteString(vars[s[j+1:j+k]])
			return j + k + 1
		}
		k := j
		for k < len(s) && (s[k] == '_' || s[k] >= 'a' && s[k] <= 'z' || s[k] >= 'A' && s[k] <= 'Z' || k > j && s[k] >= '0' && s[k] <= '9') {
			k++
		}
		if k == j {
			w.WriteByte('$')
			return j
		}
		w.WriteString(vars[s[j:k]])
		return k
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			end()
			i++
		case c == '&' || c == '|' || c == ';':
			end()
			op := string(c)
			if i+1 < len(s) && (c == '&' || c == '|') && s[i+1] == c {
				op += string(c)
			}
			words = append(words, op)
			i += len(op)
		case c == '\'':
			inW = true
			k := strings.IndexByte(s[i+1:], '\'')
			if k < 0 {
				return nil, errors.New("unterminated '")
			}
			w.WriteString(s[i+1 : i+1+k])
			i += k + 2
		case c == '"':
			inW = true
			i++
			for {
				if i >= len(s) {
					return nil, errors.New(`unterminated "`)
				}
				if s[i] == '"' {
					i++
					break
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0 {
					w.WriteByte(s[i+1])
					i += 2
					continue
				}
				if s[i] == '$' {
					i = expand(i)
					continue
				}
				w.WriteByte(s[i])
				i++
			}
		case c == '\\' && i+1 < len(s):
			inW = true
			w.WriteByte(s[i+1])
			i += 2
		case c == '$':
			inW = true
			i = expand(i)
		default:
			inW = true
			w.WriteByte(c)
			i++
		}
	}
	end()
	return words, nil
}

// dfVars parses ARG, ENV and LABEL arguments: NAME=value pairs (quoted as
// in shell), or ENV's legacy "NAME value". An ARG without a value takes
// its default from before the first FROM (global), as Docker's does.
func dfVars(in dfInstruction, vars, global map[string]string) (map[string]string, error) {
	out := map[string]string{}
	if f := strings.Fields(in.args); len(f) == 0 {
		return nil, fmt.Errorf("line %d: %s without arguments", in.line, in.cmd)
	} else if in.cmd == "ENV" && !strings.Contains(f[0], "=") {
		name, value, _ := strings.Cut(in.args, " ")
		out[name] = strings.TrimSpace(value)
		return out, nil
	}
	words, err := shellWords(in.args, vars)
	if err != nil {
		return nil, fmt.Errorf("line %d: %w", in.line, err)
	}
	for _, w := range words {
		name, value, ok := strings.Cut(w, "=")
		if !ok && in.cmd != "ARG" {
			return nil, fmt.Errorf("line %d: %s %q without a value", in.line, in.cmd, w)
		}
		if !ok {
			value = global[name]
		}
		out[name] = value
	}
	return out, nil
}

// goBuild is the go build command of the Dockerfile's build stage.
type goBuild struct {
	env    []string // NAME=value: the stage's ARGs and ENVs, then the command's own
	args   []string // after "go": build, flags, packages
	output string   // the -o path inside the image
	// target is the command's own GOOS and GOARCH as written, with the
	// platform ARGs buildx sets left unexpanded: "$TARGETOS".
	target map[string]string
}

// platformArgs are the ARGs buildx sets for each platform it builds.
var platformArgs = []string{"TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT"}

// dockerfile is what the checks need to know about the Dockerfile.
type dockerfile struct {
	build      goBuild
	builder    string // the build stage's image
	buildStage string // its name
	buildFrom  string // its FROM --platform
	final      dfStage
	finalEnv   map[string]string
	labels     map[string]string // the final stage's, expanded
	versionArg string            // the default of ARG VERSION, if the build stamps one
}

// readDockerfile finds the stage that runs go build and the final stage.
func readDockerfile(text string) (*dockerfile, error) {
	globalIns, stages, err := parseDockerfile(text)
	if err != nil {
		return nil, err
	}
	global := map[string]string{}
	for _, in := range globalIns {
		if in.cmd != "ARG" {
			continue
		}
		kv, err := dfVars(in, global, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range kv {
			global[k] = v
		}
	}
	d := &dockerfile{final: stages[len(stages)-1], finalEnv: map[string]string{}, labels: map[string]string{}}
	found := 0
	for _, st := range stages {
		vars := map[string]string{}
		// raw is vars with the platform ARGs declared here unexpanded.
		raw := map[string]string{}
		var env []string
		for _, in := range st.ins {
			switch in.cmd {
			case "ARG", "ENV":
				kv, err := dfVars(in, vars, global)
				if err != nil {
					return nil, err
				}
				for k, v := range kv {
					vars[k], raw[k] = v, v
					if in.cmd == "ARG" && v == "" && slices.Contains(platformArgs, k) {
						raw[k] = "$" + k
					}
					env = append(env, k+"="+v)
					if in.cmd == "ARG" && k == "VERSION" {
						d.versionArg = v
					}
				}
			case "RUN":
				words, err := shellWords(in.args, vars)
				if err != nil {
					return nil, fmt.Errorf("line %d: %w", in.line, err)
				}
				for cmd := range splitCommands(words) {
					i := 0
					var own []string
					for i < len(cmd) && strings.Contains(cmd[i], "=") && !strings.HasPrefix(cmd[i], "-") {
						own = append(own, cmd[i])
						i++
					}
					if len(cmd)-i < 2 || cmd[i] != "go" || cmd[i+1] != "build" {
						continue
					}
					found++
					d.build = goBuild{env: append(slices.Clone(env), own...), args: cmd[i+1:], target: map[string]string{}}
					d.builder, d.buildStage, d.buildFrom = st.from, st.name, st.platform
					rawWords, err := shellWords(in.args, raw)
					if err != nil {
						return nil, fmt.Errorf("line %d: %w", in.line, err)
					}
					for rawCmd := range splitCommands(rawWords) {
						if !slices.Contains(rawCmd, "go") || !slices.Contains(rawCmd, "build") {
							continue
						}
						for _, w := range rawCmd[:slices.Index(rawCmd, "go")] {
							if k, v, ok := strings.Cut(w, "="); ok && (k == "GOOS" || k == "GOARCH") {
								d.build.target[k] = v
							}
						}
					}
				}
			}
		}
	}
	if found != 1 {
		return nil, fmt.Errorf("want exactly one go build command in a RUN, found %d", found)
	}
	for i, a := range d.build.args {
		switch {
		case a == "-o" && i+1 < len(d.build.args):
			d.build.output = d.build.args[i+1]
		case strings.HasPrefix(a, "-o="):
			d.build.output = strings.TrimPrefix(a, "-o=")
		}
	}
	vars := map[string]string{}
	for _, in := range d.final.ins {
		if in.cmd == "ENV" || in.cmd == "ARG" || in.cmd == "LABEL" {
			kv, err := dfVars(in, vars, global)
			if err != nil {
				return nil, err
			}
			for k, v := range kv {
				switch in.cmd {
				case "LABEL":
					d.labels[k] = v
				case "ENV":
					d.finalEnv[k] = v
					vars[k] = v
				default:
					vars[k] = v
				}
			}
		}
	}
	return d, nil
}

// splitCommands yields the simple commands of a word list, split at
// shell operators.
func splitCommands(words []string) func(func([]string) bool) {
	return func(yield func([]string) bool) {
		var cur []string
		for _, w := range words {
			if w == "&&" || w == "||" || w == ";" || w == "|" {
				if len(cur) > 0 && !yield(cur) {
					return
				}
				cur = nil
				continue
			}
			cur = append(cur, w)
		}
		if len(cur) > 0 {
			yield(cur)
		}
	}
}

// last returns the arguments of the stage's last instruction cmd (the one
// Docker uses), and whether there is one.
func (st dfStage) last(cmd string) (dfInstruction, bool) {
	for i := len(st.ins) - 1; i >= 0; i-- {
		if st.ins[i].cmd == cmd {
			return st.ins[i], true
		}
	}
	return dfInstruction{}, false
}

// execForm parses a JSON exec form (["a", "b"]); the shell form is
// refused because the runtime image has no shell to run it.
func execForm(args string) ([]string, error) {
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil || len(argv) == 0 {
		return nil, fmt.Errorf("%q is not the exec form [\"/path\", \"arg\"...]: the image has no /bin/sh to run a shell form", args)
	}
	return argv, nil
}

// healthcheckArgv returns the command of HEALTHCHECK [--option=...] CMD [...].
func healthcheckArgv(in dfInstruction) ([]string, error) {
	rest := in.args
	for strings.HasPrefix(rest, "--") {
		_, rest, _ = strings.Cut(rest, " ")
		rest = strings.TrimSpace(rest)
	}
	word, cmd, _ := strings.Cut(rest, " ")
	switch strings.ToUpper(word) {
	case "NONE":
		return nil, errors.New("HEALTHCHECK NONE")
	case "CMD":
		return execForm(strings.TrimSpace(cmd))
	}
	return nil, fmt.Errorf("HEALTHCHECK %q has no CMD", in.args)
}

var runtimeImage = regexp.MustCompile(`^(scratch|gcr\.io/distroless/static[-\w.]*(:[\w.-]+)?|cgr\.dev/chainguard/static(:[\w.-]+)?)$`)

// checkDockerfile returns what is wrong with the Dockerfile, read without
// building it: the promises its runtime stage makes to operators.
func checkDockerfile(d *dockerfile, goVersion string) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	// A build without CGO_ENABLED=0 links libc dynamically (net and
	// os/user use cgo), and distroless/static has no libc to load.
	cgo := ""
	for _, kv := range d.build.env {
		if v, ok := strings.CutPrefix(kv, "CGO_ENABLED="); ok {
			cgo = v
		}
	}
	if cgo != "0" {
		add("go build must run with CGO_ENABLED=0 (got %q): the runtime image has no libc", cgo)
	}
	if d.build.output == "" {
		add("go build has no -o: the binary's path cannot be copied into the final stage")
	}
	// Multi-arch without emulation: the compiler runs on the builder's
	// platform and cross-compiles to the one buildx asks for. Without
	// --platform=$BUILDPLATFORM each platform's build stage runs under
	// QEMU; without GOOS/GOARCH from the target ARGs every image would
	// hold a binary for the builder's architecture.
	if d.buildFrom != "$BUILDPLATFORM" {
		add("build stage FROM has --platform=%q, want --platform=$BUILDPLATFORM: the compiler would run emulated", d.buildFrom)
	}
	for k, want := range map[string]string{"GOOS": "$TARGETOS", "GOARCH": "$TARGETARCH"} {
		if got := d.build.target[k]; got != want {
			add("go build runs with %s=%q, want %s=%s (declared with ARG TARGETOS TARGETARCH): the binary would not be the target platform's", k, got, k, want)
		}
	}
	// golang:1.26 must be able to build a module that says go 1.26.x.
	if tag, ok := strings.CutPrefix(d.builder, "golang:"); !ok {
		add("build stage image %q is not golang:<version>", d.builder)
	} else if mm := majorMinor(goVersion); !strings.HasPrefix(tag, mm) {
		add("build stage image %s does not match go.mod's go %s", d.builder, goVersion)
	}

	st := d.final
	if !runtimeImage.MatchString(st.from) {
		add("final stage FROM %s: want a shell-less static image (distroless static, chainguard static, scratch)", st.from)
	}
	binary := ""
	for _, in := range st.ins {
		if in.cmd == "COPY" && strings.Contains(in.args, "--from="+d.buildStage+" ") {
			f := strings.Fields(in.args)
			if len(f) >= 2 && f[len(f)-2] == d.build.output {
				binary = f[len(f)-1]
			}
		}
	}
	if binary == "" {
		add("final stage does not COPY --from=%s %s", d.buildStage, d.build.output)
	}
	if in, ok := st.last("USER"); !ok {
		add("final stage has no USER: the container would run as root")
	} else if u, _, _ := strings.Cut(in.args, ":"); u == "root" || u == "0" || u == "" {
		add("USER %s is root", in.args)
	}
	volumes := map[string]bool{}
	for _, in := range st.ins {
		if in.cmd != "VOLUME" {
			continue
		}
		var vs []string
		if json.Unmarshal([]byte(in.args), &vs) != nil {
			vs = strings.Fields(in.args)
		}
		for _, v := range vs {
			volumes[path.Clean(v)] = true
		}
	}
	if !volumes["/data"] {
		add("final stage does not declare VOLUME /data: the store would live in the container's writable layer")
	}
	store := d.finalEnv["KEYGATE_STORE"]
	if store == "" || !volumes[path.Dir(store)] {
		add("KEYGATE_STORE=%q is not in a VOLUME: keys would be lost with the container", store)
	}
	// The CLI's default token file is ./keygate.admin-token; serve
	// generates it beside the store. Working there, they meet.
	if in, ok := st.last("WORKDIR"); !ok || store != "" && path.Clean(in.args) != path.Dir(store) {
		add("final stage WORKDIR %q is not the store's directory %q: `keygate` CLI commands in the container would not find the generated admin token", in.args, path.Dir(store))
	}
	exposed := map[string]bool{}
	for _, in := range st.ins {
		if in.cmd == "EXPOSE" {
			for _, port := range strings.Fields(in.args) {
				exposed[strings.TrimSuffix(port, "/tcp")] = true
			}
		}
	}
	listeners := []string{"KEYGATE_GRPC_LISTEN", "KEYGATE_HTTP_LISTEN"}
	// The metrics listener is optional (loopback by default, unreachable
	// from outside the container); an image that opens it must expose it.
	if v, ok := d.finalEnv["KEYGATE_METRICS_LISTEN"]; ok && v != "off" {
		listeners = append(listeners, "KEYGATE_METRICS_LISTEN")
	}
	for _, name := range listeners {
		host, port, err := net.SplitHostPort(d.finalEnv[name])
		switch {
		case err != nil:
			add("ENV %s=%q: %v", name, d.finalEnv[name], err)
		case host != "0.0.0.0" && host != "" && host != "::":
			add("ENV %s=%s: a container must listen on every interface, or Envoy cannot reach it", name, d.finalEnv[name])
		case !exposed[port]:
			add("port %s of %s is not EXPOSEd", port, name)
		}
	}
	// OCI labels: registries and scanners show them; version and revision
	// must be the build's, the ones stamped into the binary.
	for _, k := range []string{"title", "description", "source"} {
		if d.labels["org.opencontainers.image."+k] == "" {
			add("final stage has no LABEL org.opencontainers.image.%s", k)
		}
	}
	if got := d.labels["org.opencontainers.image.licenses"]; got != "Apache-2.0" {
		add("LABEL org.opencontainers.image.licenses=%q, want Apache-2.0 (LICENSE)", got)
	}
	if got, ok := d.labels["org.opencontainers.image.version"]; !ok || got != d.versionArg {
		add("LABEL org.opencontainers.image.version=%q is not the VERSION build arg (%q) stamped into the binary", got, d.versionArg)
	}
	if _, ok := d.labels["org.opencontainers.image.revision"]; !ok {
		add("final stage has no LABEL org.opencontainers.image.revision")
	}
	if in, ok := st.last("HEALTHCHECK"); !ok {
		add("final stage has no HEALTHCHECK")
	} else if argv, err := healthcheckArgv(in); err != nil {
		add("HEALTHCHECK: %v", err)
	} else if argv[0] != binary {
		add("HEALTHCHECK runs %s, not the binary %s", argv[0], binary)
	}
	if in, ok := st.last("ENTRYPOINT"); !ok {
		add("final stage has no ENTRYPOINT")
	} else if argv, err := execForm(in.args); err != nil {
		add("ENTRYPOINT: %v", err)
	} else if argv[0] != binary {
		add("ENTRYPOINT runs %s, not the binary %s", argv[0], binary)
	}
	return p
}

func majorMinor(v string) string {
	f := strings.SplitN(v, ".", 3)
	if len(f) < 2 {
		return v
	}
	return f[0] + "." + f[1]
}

func goModVersion(t testing.TB) string {
	data, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

func readRepoDockerfile(t testing.TB) (*dockerfile, string) {
	data, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	d, err := readDockerfile(string(data))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	return d, string(data)
}

// The binary is built once per test process, the way the Dockerfile
// builds it, and shared by the tests that run keygate (config validation
// of the examples included).
var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// keygateBinary runs the Dockerfile's go build line from the repository
// root (the Dockerfile's COPY . . puts it in WORKDIR), with its env and
// flags, writing the binary to a temporary directory instead of its -o.
func keygateBinary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		data, err := os.ReadFile(dockerfilePath)
		if err != nil {
			built.err = err
			return
		}
		d, err := readDockerfile(string(data))
		if err != nil {
			built.err = err
			return
		}
		if built.dir, built.err = os.MkdirTemp("", "keygate-dockerfile-test"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "keygate")
		args := slices.Clone(d.build.args)
		for i, a := range args {
			switch {
			case a == "-o" && i+1 < len(args):
				args[i+1] = built.path
			case strings.HasPrefix(a, "-o="):
				args[i] = "-o=" + built.path
			}
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = ".."
		// golang images build with cgo on unless told otherwise: so does
		// this run, whatever the caller's environment says.
		cmd.Env = append(append(os.Environ(), "CGO_ENABLED=1"), d.build.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if built.err != nil {
		t.Fatalf("building keygate as the Dockerfile does: %v", built.err)
	}
	return built.path
}

// staticELF tells whether an ELF binary runs without a dynamic loader.
func staticELF(file string) (bool, error) {
	f, err := elf.Open(file)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return false, nil
		}
	}
	return f.Section(".dynamic") == nil, nil
}

func TestDockerfile(t *testing.T) {
	d, _ := readRepoDockerfile(t)
	for _, p := range checkDockerfile(d, goModVersion(t)) {
		t.Error(p)
	}
	if t.Failed() {
		return
	}
	bin := keygateBinary(t)

	t.Run("static", func(t *testing.T) {
		ok, err := staticELF(bin)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatal("the binary is dynamically linked: it cannot run on distroless/static")
		}
	})

	// The licenses label (checked above) must say what LICENSE holds.
	t.Run("license", func(t *testing.T) {
		data, err := os.ReadFile("../LICENSE")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(data, []byte("Apache License")) || !bytes.Contains(data, []byte("Version 2.0, January 2004")) {
			t.Error("LICENSE is not the Apache License 2.0 the image's licenses label names")
		}
	})

	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin, "version").CombinedOutput()
		if err != nil {
			t.Fatalf("keygate version: %v\n%s", err, out)
		}
		want := "keygate " + cmp.Or(d.versionArg, "dev")
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("keygate version = %q, want %q (the Dockerfile's VERSION stamped by -ldflags)", got, want)
		}
	})

	// Run the image's entrypoint and its HEALTHCHECK as Docker would, with
	// the image's environment: the check passes while serve runs, and
	// fails once it has stopped.
	t.Run("healthcheck", func(t *testing.T) {
		hc, _ := d.final.last("HEALTHCHECK")
		hcArgv, _ := healthcheckArgv(hc)
		ep, _ := d.final.last("ENTRYPOINT")
		epArgv, _ := execForm(ep.args)
		cmdIn, ok := d.final.last("CMD")
		if !ok {
			t.Fatal("final stage has no CMD")
		}
		cmdArgv, err := execForm(cmdIn.args)
		if err != nil {
			t.Fatal(err)
		}

		dir := t.TempDir()
		_, grpcPort, _ := net.SplitHostPort(d.finalEnv["KEYGATE_GRPC_LISTEN"])
		port := freePort(t)
		env := os.Environ()
		for k, v := range d.finalEnv {
			env = append(env, k+"="+v)
		}
		env = append(env,
			// Same host as the image (every interface), a free port
			// instead of the image's, which a running keygate may hold.
			"KEYGATE_GRPC_LISTEN="+strings.Replace(d.finalEnv["KEYGATE_GRPC_LISTEN"], ":"+grpcPort, ":"+port, 1),
			"KEYGATE_HTTP_LISTEN=127.0.0.1:0",
			"KEYGATE_ADMIN_LISTEN=127.0.0.1:0",
			"KEYGATE_METRICS_LISTEN=127.0.0.1:0",
			"KEYGATE_STORE="+filepath.Join(dir, "keygate.db"),
			"KEYGATE_ADMIN_TOKEN=", "KEYGATE_ADMIN_TOKEN_FILE=", "KEYGATE_CONFIG=",
		)
		health := func() error {
			c := exec.Command(bin, hcArgv[1:]...)
			c.Env, c.Dir = env, dir
			out, err := c.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}
		if err := health(); err == nil {
			t.Fatal("HEALTHCHECK passed with no server running: it checks nothing")
		}

		var stderr bytes.Buffer
		srv := exec.Command(bin, append(epArgv[1:], cmdArgv...)...)
		srv.Env, srv.Dir, srv.Stderr = env, dir, &stderr
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Wait() }()
		stopped := false
		defer func() {
			if !stopped {
				srv.Process.Kill()
				<-done
			}
		}()
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := health()
			if err == nil {
				break
			}
			select {
			case werr := <-done:
				stopped = true
				t.Fatalf("serve exited (%v) before it was healthy:\n%s", werr, stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("HEALTHCHECK never passed: %v\nserve:\n%s", err, stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		// WORKDIR is the store's directory: the CLI's default token file
		// is the one serve generated.
		if _, err := os.Stat(filepath.Join(dir, "keygate.admin-token")); err != nil {
			t.Errorf("no admin token generated beside the store: %v", err)
		}
		srv.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			stopped = true
			if err != nil {
				t.Errorf("serve did not stop cleanly on SIGTERM: %v\n%s", err, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("serve did not stop on SIGTERM")
		}
		if err := health(); err == nil {
			t.Error("HEALTHCHECK still passes after serve stopped")
		}
	})
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// TestStaticELFCatchesDynamic proves the static check can fail: a
// dynamically linked system binary must be reported as such.
func TestStaticELFCatchesDynamic(t *testing.T) {
	for _, f := range []string{"/bin/ls", "/usr/bin/env"} {
		ok, err := staticELF(f)
		if err != nil {
			continue
		}
		if ok {
			t.Logf("%s is static here; trying another", f)
			continue
		}
		return
	}
	t.Skip("no dynamically linked binary to compare with on this machine")
}

// TestDockerfileChecksCatch mutates the real Dockerfile and expects each
// mistake to be reported.
func TestDockerfileChecksCatch(t *testing.T) {
	_, text := readRepoDockerfile(t)
	goVersion := goModVersion(t)
	cases := []struct {
		name, old, new, want string
	}{
		{"cgo on", "CGO_ENABLED=0 GOOS=", "GOOS=", "CGO_ENABLED=0"},
		{"runtime image with a shell", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM debian:12-slim", "shell-less"},
		{"root user", "USER nonroot:nonroot", "USER root", "is root"},
		{"numeric root user", "USER nonroot:nonroot", "USER 0:0", "is root"},
		{"no user", "USER nonroot:nonroot\n", "", "no USER"},
		{"no volume", "VOLUME /data\n", "", "VOLUME /data"},
		{"no healthcheck", `HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/keygate", "health"]`, "", "no HEALTHCHECK"},
		{"shell-form healthcheck", `CMD ["/usr/local/bin/keygate", "health"]`, "CMD keygate health || exit 1", "/bin/sh"},
		{"healthcheck of another binary", `CMD ["/usr/local/bin/keygate", "health"]`, `CMD ["/bin/keygate", "health"]`, "not the binary"},
		{"binary not copied", "COPY --from=build /out/keygate /usr/local/bin/keygate", "COPY --from=build /out/kg /usr/local/bin/keygate", "does not COPY"},
		{"loopback listener", "KEYGATE_GRPC_LISTEN=0.0.0.0:9001", "KEYGATE_GRPC_LISTEN=127.0.0.1:9001", "every interface"},
		{"port not exposed", "EXPOSE 9001 9002", "EXPOSE 9001", "not EXPOSEd"},
		{"store outside the volume", "KEYGATE_STORE=/data/keygate.db", "KEYGATE_STORE=/var/keygate.db", "not in a VOLUME"},
		{"workdir elsewhere", "WORKDIR /data\n", "WORKDIR /\n", "admin token"},
		{"old Go", "golang:1.26 AS build", "golang:1.22 AS build", "go.mod"},
		{"emulated build stage", "FROM --platform=$BUILDPLATFORM golang", "FROM golang", "--platform=$BUILDPLATFORM"},
		{"no GOARCH", "GOARCH=$TARGETARCH go build", "go build", "GOARCH"},
		{"fixed GOOS", "GOOS=$TARGETOS", "GOOS=linux", "GOOS"},
		{"target args not declared", "ARG TARGETOS TARGETARCH\n", "", "GOOS"},
		{"metrics port not exposed", "EXPOSE 9001 9002 9004", "EXPOSE 9001 9002", "port 9004"},
		{"other license", `licenses="Apache-2.0"`, `licenses="MIT"`, "Apache-2.0"},
		{"version label not the build's", `image.version="${VERSION}"`, `image.version="1.0"`, "VERSION build arg"},
		{"no revision label", ` \
      org.opencontainers.image.revision="${REVISION}"`, "", "image.revision"},
		{"no source label", `org.opencontainers.image.source=`, `org.opencontainers.image.homepage=`, "image.source"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if strings.Count(text, c.old) != 1 {
				t.Fatalf("the Dockerfile no longer contains %q exactly once: update this case", c.old)
			}
			d, err := readDockerfile(strings.Replace(text, c.old, c.new, 1))
			if err != nil {
				t.Fatal(err)
			}
			problems := checkDockerfile(d, goVersion)
			for _, p := range problems {
				if strings.Contains(p, c.want) {
					t.Logf("reported: %s", p)
					return
				}
			}
			t.Errorf("want a problem mentioning %q, got %q", c.want, problems)
		})
	}
	t.Run("no go build", func(t *testing.T) {
		if _, err := readDockerfile(strings.Replace(text, "$TARGETARCH go build", "$TARGETARCH go vet", 1)); err == nil {
			t.Error("a Dockerfile without go build was accepted")
		}
	})
}

// TestShellWords pins the parts of shell parsing the build line relies on.
func TestShellWords(t *testing.T) {
	got, err := shellWords(`CGO_ENABLED=0 go build -ldflags="-s -w -X main.version=${VERSION}" -o '/out/a b' ./cmd/x && mkdir -p $D`,
		map[string]string{"VERSION": "1.2", "D": "/out/data"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"CGO_ENABLED=0", "go", "build", "-ldflags=-s -w -X main.version=1.2", "-o", "/out/a b", "./cmd/x", "&&", "mkdir", "-p", "/out/data"}
	if !slices.Equal(got, want) {
		t.Errorf("shellWords = %q, want %q", got, want)
	}
}
