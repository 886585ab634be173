package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
)

// TestCLIKeysUsage: Checks through a real engine show in `keys usage`, as
// JSON and as a table with a bar for the busy hour only.
func TestCLIKeysUsage(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	k, err := f.store.CreateKey(t.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := authz.New(authz.Config{Recorder: f.store, RateLimits: authz.RateLimits{PerKeyOff: true},
		Policy: authz.Policy{Rules: []authz.Rule{{Name: "w", PathPrefix: "/w", Scopes: []string{"write"}}}}}, f.store)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		path := "/r"
		if i < 3 {
			path = "/w"
		}
		if _, err := e.Decide(context.Background(), &authz.Request{Method: "GET", Path: path, Peer: "10.0.0.1",
			Headers: map[string]string{"x-api-key": k.Secret.Reveal()}}); err != nil {
			t.Fatal(err)
		}
	}
	var u keyUsageAnswer
	f.json(&u, "keys", "usage", k.ID)
	want := keystore.UsageCounts{Allowed: 7, Denied403: 3}
	if len(u.Data) != 24 || u.Data[23].UsageCounts != want {
		t.Fatalf("json: %+v", u)
	}
	f.json(&u, "keys", "usage", k.ID, "--granularity", "day", "--from", time.Now().UTC().Format(time.DateOnly))
	if u.Granularity != "day" || len(u.Data) != 1 || u.Data[0].UsageCounts != want {
		t.Fatalf("json, days: %+v", u)
	}

	stdout, stderr, err := f.run("keys", "usage", k.ID)
	if err != nil {
		t.Fatalf("table: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 26 || !strings.HasPrefix(lines[0], "HOUR (UTC)") || !strings.HasPrefix(lines[25], "TOTAL") {
		t.Fatalf("table:\n%s", stdout)
	}
	if busy := lines[24]; !strings.Contains(busy, strings.Repeat("█", barWidth)) || !strings.Contains(lines[25], "10") {
		t.Errorf("busy hour without a full bar:\n%s", stdout)
	}
	if strings.Contains(lines[1], "█") {
		t.Errorf("idle hour with a bar:\n%s", stdout)
	}

	if _, _, err := f.run("keys", "usage", k.ID, "--granularity", "week"); err == nil {
		t.Error("--granularity week: want a usage error")
	}
	if _, _, err := f.run("keys", "usage", "key_unknown"); err == nil {
		t.Error("unknown key: want an error")
	}
}

func TestUsageBar(t *testing.T) {
	for _, c := range []struct {
		n, most int64
		want    string
	}{
		{0, 10, ""},
		{1, 1 << 40, "▏"},
		{10, 10, strings.Repeat("█", barWidth)},
		{5, 10, strings.Repeat("█", barWidth/2)},
		{1, 320, "▏"},
		{3, 320 * 8, "▏"},
	} {
		if got := bar(c.n, c.most); got != c.want {
			t.Errorf("bar(%d, %d) = %q, want %q", c.n, c.most, got, c.want)
		}
	}
}
