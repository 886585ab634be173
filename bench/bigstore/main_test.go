package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestRun keeps the program running in CI: a small store, every sampled
// key allowed, every figure reported.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-keys", "3000", "-sample", "200", "-tenants", "3", "-batch", "1000", "-dir", t.TempDir(), "-in-process"}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"keys:        3000 over 3 tenants", "bytes per key", "first Check answered", "uncached:    199 Checks", "cached:      200 Checks", "memory:", "page cache"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestMeasureKept: a store kept by one run is measured by another, as the
// program's own second process does.
func TestMeasureKept(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run([]string{"-keys", "500", "-sample", "20", "-tenants", "2", "-dir", dir, "-keep", "-in-process"}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	out.Reset()
	if err := run([]string{"-measure", dir}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "cached:      20 Checks") {
		t.Fatalf("measure output:\n%s", out.String())
	}
}

func TestRefusesBadSettings(t *testing.T) {
	if err := run([]string{"-keys", "0"}, &bytes.Buffer{}); err == nil {
		t.Fatal("-keys 0 accepted")
	}
}
