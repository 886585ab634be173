package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate/keystore/apikey"
)

// TestKeysImportFile runs `keygate keys import --file` against a running
// server: a few thousand lines, some bad, imported in several batches;
// the good keys work on a Check, the bad lines are listed and the exit
// code is 1.
func TestKeysImportFile(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	tenant := s.cli(t, "tenants", "create", "--name", "Acme")["id"].(string)
	const n = 2500
	bad := map[int]string{ // line number: the code its outcome must carry
		7:    "invalid_request", // not JSON
		1200: "conflict",        // line 1199's key again
		2400: "not_found",       // unknown tenant
	}
	format := apikey.MustFormat(apikey.DefaultPrefix)
	raws := make([]string, n+1)
	var body bytes.Buffer
	for i := 1; i <= n; i++ {
		raw, err := format.Generate(apikey.EnvLive)
		if err != nil {
			t.Fatal(err)
		}
		raws[i] = raw
		switch i {
		case 7:
			body.WriteString("{not json\n")
			continue
		case 1200:
			raw = raws[1199]
		}
		tn := tenant
		if i == 2400 {
			tn = "tnt_missing"
		}
		fmt.Fprintf(&body, `{"tenant_id":%q,"name":"legacy %d","key":%q,"scopes":["vault:read"]}`+"\n", tn, i, raw)
	}
	file := filepath.Join(dir, "keys.jsonl")
	if err := os.WriteFile(file, body.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string, error) {
		cmd := exec.Command(keygateBin, append([]string{"keys", "import"}, args...)...)
		cmd.Env = append(slices.Clip(s.env), "KEYGATE_ADMIN_URL="+s.admin)
		cmd.Dir = s.dir
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}

	// --file excludes the single-key flags.
	if _, stderr, err := run("--file", file, "--tenant", tenant); exitOf(err) != exitUsage {
		t.Errorf("--file with --tenant: %v\n%s", err, stderr)
	}

	out, stderr, err := run("--file", file, "-o", "json")
	if exitOf(err) != exitFailure {
		t.Fatalf("exit %v, want 1 (some lines failed)\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "3 of 2500 lines failed") {
		t.Errorf("stderr %q does not say how many lines failed", stderr)
	}
	var outcomes []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var o map[string]any
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		outcomes = append(outcomes, o)
	}
	if len(outcomes) != n+1 {
		t.Fatalf("%d output lines, want %d outcomes and the summary", len(outcomes), n)
	}
	ids := map[int]bool{}
	for i, o := range outcomes[:n] {
		line := int(o["line"].(float64))
		if line != i+1 {
			t.Fatalf("outcome %d is of line %d", i+1, line)
		}
		if code, isBad := bad[line]; isBad {
			if o["code"] != code {
				t.Errorf("line %d: %v, want code %s", line, o, code)
			}
			continue
		}
		if o["status"] != "imported" {
			t.Errorf("line %d: %v", line, o)
		}
		ids[line] = true
	}
	if sum := outcomes[n]; sum["imported"] != float64(n-3) || sum["failed"] != float64(3) {
		t.Errorf("summary %v", sum)
	}

	// The keys work on a Check; the refused lines' keys do not.
	c := newChecker(t, s.grpcAddr)
	for _, i := range []int{1, 6, 8, 999, 1000, 1001, 1199, 2399, 2500} {
		if ok, status, tn := c.check(raws[i]); !ok || tn != tenant {
			t.Errorf("line %d's key: allowed %v (%d), tenant %q", i, ok, status, tn)
		}
	}
	for _, i := range []int{7, 1200, 2400} {
		if ok, _, _ := c.check(raws[i]); ok {
			t.Errorf("line %d was refused, yet its key works", i)
		}
	}

	// Again from standard input, as a table: every line is now a duplicate.
	cmd := exec.Command(keygateBin, "keys", "import", "--file", "-")
	cmd.Env = append(slices.Clip(s.env), "KEYGATE_ADMIN_URL="+s.admin)
	cmd.Dir = s.dir
	cmd.Stdin = bytes.NewReader(body.Bytes())
	var tout, terr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &tout, &terr
	if err := cmd.Run(); exitOf(err) != exitFailure {
		t.Fatalf("second import: %v\n%s", err, terr.String())
	}
	table := tout.String()
	for _, want := range []string{"IMPORTED", "0 ", "2500", "LINE", "conflict", "this key is already stored", "(-o json lists every line)"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table+terr.String(), raws[1]) {
		t.Error("the output holds a raw key")
	}
}

func exitOf(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
