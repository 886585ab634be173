package main

import (
	"debug/buildinfo"
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseBuild runs the Makefile's per-binary release rule for one
// cross target, linux/arm64: one target, not `make release`'s three, since
// each costs a compile of every dependency for its architecture on a fresh
// machine.
func TestReleaseBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles every dependency on a cold build cache")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	dist := t.TempDir()
	bin := filepath.Join(dist, "keygate_vtest_linux_arm64")
	cmd := exec.Command("make", "--no-print-directory", "VERSION=vtest", "DIST="+dist, bin)
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make %s: %v\n%s", bin, err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 {
		t.Errorf("ELF machine %v, want EM_AARCH64", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the release binary asks for a dynamic loader: it is not static")
		}
	}

	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for k, want := range map[string]string{"GOOS": "linux", "GOARCH": "arm64", "CGO_ENABLED": "0", "-trimpath": "true"} {
		if settings[k] != want {
			t.Errorf("build setting %s=%q, want %q", k, settings[k], want)
		}
	}
	// -trimpath keeps -ldflags (main.version's stamp) out of the build
	// information; TestVersionStamped covers the stamp.
	if exec.Command("git", "rev-parse", "HEAD").Run() == nil && settings["vcs.revision"] == "" {
		t.Error("the release binary records no commit (vcs.revision) although this is a git checkout")
	}
}

// TestVersionStamped: a version stamped with -ldflags wins over the
// module's, and the commit still comes from the VCS, in both `keygate
// version` and `keygate --version`.
func TestVersionStamped(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs keygate")
	}
	bin := filepath.Join(t.TempDir(), "keygate")
	// -buildvcs=auto as in the Makefile's release rule, whatever GOFLAGS says.
	build := exec.Command("go", "build", "-buildvcs=auto", "-ldflags=-X main.version=v9.9.9-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want := "keygate v9.9.9-test"
	// Go reads the commit only from a checkout with git on PATH.
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	vcs := err == nil
	if vcs {
		want += " (" + strings.TrimSpace(string(head))
	}
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if err != nil {
			t.Fatalf("keygate %s: %v\n%s", arg, err, out)
		}
		got := strings.TrimSpace(string(out))
		switch {
		case !vcs && got != want:
			t.Errorf("keygate %s = %q, want %q", arg, got, want)
		case vcs && got != want+")" && got != want+"-dirty)":
			t.Errorf("keygate %s = %q, want %q) or with -dirty", arg, got, want)
		}
	}
}
