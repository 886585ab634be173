package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz/ratelimit"
	"github.com/keygate/keygate/keystore"
)

func TestParseLimit(t *testing.T) {
	for _, tt := range []struct {
		in   string
		name string
		want ratelimit.Limit
		err  string // substring; empty: parses
	}{
		{in: "per_minute=100/1m", name: "per_minute", want: ratelimit.Limit{Requests: 100, Window: time.Minute}},
		{in: "per_day=10000/1d", name: "per_day", want: ratelimit.Limit{Requests: 10000, Window: 24 * time.Hour}},
		{in: "burst_api=600/1m,algorithm=token_bucket,burst=50", name: "burst_api", want: ratelimit.Limit{Requests: 600, Window: time.Minute, Algorithm: ratelimit.TokenBucket, Burst: 50}},
		{in: "x=5/90s,algorithm=sliding_window", name: "x", want: ratelimit.Limit{Requests: 5, Window: 90 * time.Second}},
		{in: "per_day=0", name: "per_day", want: ratelimit.Limit{}},
		{in: "per_day", err: "want NAME=REQUESTS/WINDOW"},
		{in: "=100/1m", err: "limit name"},
		{in: "Per=100/1m", err: "limit name"},
		{in: "x=100", err: "want REQUESTS/WINDOW"},
		{in: "x=-1/1m", err: "at least 1"},
		{in: "x=0/1m", err: "NAME=0"},
		{in: "x=ten/1m", err: "requests"},
		{in: "x=100/1x", err: `limit "x"`},
		{in: "x=100/0s", err: "window"},
		{in: "x=100/1m,algorithm=leaky", err: `algorithm "leaky"`},
		{in: "x=100/1m,burst=5", err: "token_bucket only"},
		{in: "x=100/1m,algorithm=token_bucket,burst=0", err: "burst"},
		{in: "x=100/1m,algorithm=token_bucket,algorithm=token_bucket", err: "twice"},
		{in: "x=100/1m,colour=red", err: "option"},
		{in: "x=0,burst=5", err: "takes no options"},
		{in: "x=100/1ns", err: "finer than a nanosecond"},
	} {
		name, l, err := parseLimit(tt.in)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%q: %v", tt.in, err)
		case tt.err == "" && (name != tt.name || l != tt.want):
			t.Errorf("%q = %q %+v, want %q %+v", tt.in, name, l, tt.name, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: err %v, want one with %q", tt.in, err, tt.err)
		}
	}
}

// specOf writes a limit back in --limit's syntax.
func specOf(name string, l ratelimit.Limit) string {
	if l.Requests == 0 {
		return name + "=0"
	}
	s := fmt.Sprintf("%s=%d/%s", name, l.Requests, ratelimit.FormatWindow(l.Window))
	if l.Algorithm != ratelimit.SlidingWindow {
		s += ",algorithm=" + l.Algorithm.String()
	}
	if l.Burst != 0 {
		s += fmt.Sprintf(",burst=%d", l.Burst)
	}
	return s
}

// FuzzParseLimit: any input parses to a limit the store accepts, which
// reads back the same, or is refused; nothing panics.
func FuzzParseLimit(f *testing.F) {
	for _, s := range []string{"per_minute=100/1m", "per_day=10000/1d", "burst_api=600/1m,algorithm=token_bucket,burst=50", "per_day=0", "x=1/1ns", "x=9223372036854775807/1d", "x=1/106751d", "=", "x=/", "x=1/1m,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, l, err := parseLimit(s)
		if err != nil {
			return
		}
		if ratelimit.ValidName(name) != nil {
			t.Fatalf("%q: name %q accepted", s, name)
		}
		if l.Requests != 0 {
			if err := l.Validate(); err != nil {
				t.Fatalf("%q: %+v accepted: %v", s, l, err)
			}
		} else if l != (ratelimit.Limit{}) {
			t.Fatalf("%q: off limit %+v", s, l)
		}
		name2, l2, err := parseLimit(specOf(name, l))
		if err != nil || name2 != name || l2 != l {
			t.Fatalf("%q: %q %+v reads back as %q %+v, %v", s, name, l, name2, l2, err)
		}
	})
}

func TestCLIUsers(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	var u keystore.User
	f.json(&u, "users", "set", tn.ID, "ada@example.com", "--name", "Ada", "--metadata", "plan=pro",
		"--limit", "per_minute=100/1m", "--limit", "burst_api=600/1m,algorithm=token_bucket,burst=50", "--limit", "per_day=0")
	if u.ID != "ada@example.com" || u.Name != "Ada" || u.Metadata["plan"] != "pro" || len(u.Limits) != 3 || u.Limits["per_day"] != (ratelimit.Limit{}) {
		t.Fatalf("set: %+v", u)
	}
	stdout, _, err := f.run("users", "get", tn.ID, "ada@example.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"per_minute: 100 per 1m (sliding_window)", "burst_api: 600 per 1m (token_bucket, burst 50)", "per_day: off", "Ada", "plan=pro"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("users get lacks %q:\n%s", want, stdout)
		}
	}

	// A set replaces the record: limits not given are gone.
	u = keystore.User{}
	f.json(&u, "users", "set", tn.ID, "ada@example.com")
	if u.Name != "" || u.Limits != nil {
		t.Fatalf("replace: %+v", u)
	}
	stdout, _, err = f.run("users", "get", tn.ID, "ada@example.com")
	if err != nil || !strings.Contains(stdout, "defaults") {
		t.Fatalf("users get without limits: %v\n%s", err, stdout)
	}

	f.json(new(keystore.User), "users", "set", tn.ID, "bob", "--limit", "per_minute=5/1s")
	var page struct {
		Data    []keystore.User `json:"data"`
		HasMore bool            `json:"has_more"`
	}
	f.json(&page, "users", "list", tn.ID, "--limit", "1", "--all")
	if len(page.Data) != 2 || page.HasMore || page.Data[0].ID != "ada@example.com" || page.Data[1].ID != "bob" {
		t.Fatalf("list --all: %+v", page)
	}
	stdout, stderr, err := f.run("users", "list", tn.ID, "--limit", "1")
	if err != nil || !strings.Contains(stdout, "ada@example.com") || !strings.Contains(stderr, "--cursor ada@example.com") {
		t.Fatalf("list table: %v\n%s\n%s", err, stdout, stderr)
	}

	var del struct {
		Deleted bool `json:"deleted"`
	}
	f.json(&del, "users", "delete", tn.ID, "bob")
	if !del.Deleted {
		t.Fatal("delete did not say so")
	}
	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{"users", "get", tn.ID, "bob"}, 4},
		{[]string{"users", "get", "no-such-tenant", "ada@example.com"}, 4},
		{[]string{"users", "set", tn.ID, "x", "--limit", "per_minute=100"}, 2},
		{[]string{"users", "set", tn.ID, "x", "--limit", "x=1/1m", "--limit", "x=2/1m"}, 2},
		{[]string{"users", "set", tn.ID}, 2},
		{[]string{"users", "list", tn.ID, "--limit", "0"}, 2},
	} {
		if _, _, err := f.run(tt.args...); exitCode(err) != tt.want {
			t.Errorf("keygate %s: exit %d (%v), want %d", strings.Join(tt.args, " "), exitCode(err), err, tt.want)
		}
	}
}

func TestCLIKeyLimits(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	var k keystore.Key
	f.json(&k, "keys", "create", "--tenant", tn.ID, "--name", "k", "--limit", "per_minute=100/1m", "--limit", "per_day=0")
	if len(k.Limits) != 2 || k.Limits["per_minute"] != (ratelimit.Limit{Requests: 100, Window: time.Minute}) {
		t.Fatalf("create: %+v", k.Limits)
	}
	stdout, _, err := f.run("keys", "get", k.ID)
	if err != nil || !strings.Contains(stdout, "per_minute: 100 per 1m (sliding_window)") || !strings.Contains(stdout, "per_day: off") {
		t.Fatalf("keys get: %v\n%s", err, stdout)
	}
	id := k.ID
	k = keystore.Key{}
	f.json(&k, "keys", "update", id, "--limit", "per_hour=10/1h")
	if len(k.Limits) != 1 || k.Limits["per_hour"].Requests != 10 {
		t.Fatalf("update replaces: %+v", k.Limits)
	}
	k = keystore.Key{}
	f.json(&k, "keys", "update", id, "--clear-limits")
	if k.Limits != nil {
		t.Fatalf("clear: %+v", k.Limits)
	}
	if _, _, err := f.run("keys", "update", id, "--limit", "x=1/1m", "--clear-limits"); exitCode(err) != 2 {
		t.Fatalf("--limit with --clear-limits: %v", err)
	}
}

// TestLimitRequestFieldNames: the bodies carry limits as the admin API
// reads them.
func TestLimitRequestFieldNames(t *testing.T) {
	limits := map[string]ratelimit.Limit{"a": {Requests: 1, Window: time.Minute}, "b": {}}
	for _, tt := range []struct {
		v    any
		want string
	}{
		{putUserRequest{Name: "n", Metadata: map[string]string{"k": "v"}, Limits: limits},
			`{"name":"n","metadata":{"k":"v"},"limits":{"a":{"requests":1,"window":"1m","algorithm":"sliding_window"},"b":{"requests":0,"window":"0s","algorithm":"sliding_window"}}}`},
		{putUserRequest{}, `{}`},
		{updateKeyRequest{Limits: &map[string]ratelimit.Limit{}}, `{"limits":{}}`},
		{keySpecRequest{TenantID: "t", Name: "n", Limits: map[string]ratelimit.Limit{"a": {Requests: 1, Window: time.Second}}},
			`{"tenant_id":"t","name":"n","limits":{"a":{"requests":1,"window":"1s","algorithm":"sliding_window"}}}`},
	} {
		b, err := json.Marshal(tt.v)
		if err != nil || string(b) != tt.want {
			t.Errorf("%T: %s, %v; want %s", tt.v, b, err, tt.want)
		}
	}
}
