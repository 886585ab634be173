package main

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/keygate/keygate/keystore"
)

// TestCLIRefill: --refill on create and update, --no-refill, and the
// schedule and last refill in "keys get".
func TestCLIRefill(t *testing.T) {
	f := newCLIFixture(t)
	tn := f.tenant()
	var k keystore.CreatedKey
	f.json(&k, "keys", "create", "--tenant", tn.ID, "--name", "metered", "--refill", "monthly:1:100000")
	if k.Refill == nil || *k.Refill != (keystore.Refill{Interval: "monthly", Day: 1, Amount: 100000}) ||
		k.CreditsRemaining == nil || *k.CreditsRemaining != 100000 || k.LastRefillAt == nil {
		t.Fatalf("created: refill %+v credits %v last %v", k.Refill, k.CreditsRemaining, k.LastRefillAt)
	}
	stdout, _, err := f.run("keys", "get", k.ID)
	if err != nil {
		t.Fatal(err)
	}
	last := k.LastRefillAt.UTC().Format("2006-01-02T15:04:05Z07:00")
	for _, want := range []string{`(?m)^Refill\s+monthly on day 1 to 100000$`, `(?m)^Last refill\s+` + regexp.QuoteMeta(last) + `$`, `(?m)^Credits\s+100000$`} {
		if !regexp.MustCompile(want).MatchString(stdout) {
			t.Errorf("keys get lacks %s:\n%s", want, stdout)
		}
	}

	var got keystore.Key
	f.json(&got, "keys", "update", k.ID, "--refill", "daily:50")
	if got.Refill == nil || *got.Refill != (keystore.Refill{Interval: "daily", Amount: 50}) {
		t.Fatalf("update --refill daily:50: %+v", got.Refill)
	}
	if stdout, _, err = f.run("keys", "get", k.ID); err != nil || !regexp.MustCompile(`(?m)^Refill\s+daily to 50$`).MatchString(stdout) {
		t.Fatalf("keys get after update: %v\n%s", err, stdout)
	}
	got = keystore.Key{}
	f.json(&got, "keys", "update", k.ID, "--no-refill")
	if got.Refill != nil || got.LastRefillAt != nil || got.CreditsRemaining == nil {
		t.Fatalf("update --no-refill: %+v %v", got.Refill, got.LastRefillAt)
	}
	if stdout, _, err = f.run("keys", "get", k.ID); err != nil || strings.Contains(stdout, "Refill") || strings.Contains(stdout, "Last refill") {
		t.Fatalf("keys get after --no-refill: %v\n%s", err, stdout)
	}

	// A key created with both keeps the balance given.
	f.json(&k, "keys", "create", "--tenant", tn.ID, "--name", "both", "--credits", "7", "--refill", "daily:9")
	if *k.CreditsRemaining != 7 || k.Refill.Amount != 9 {
		t.Fatalf("--credits 7 --refill daily:9: %d %+v", *k.CreditsRemaining, k.Refill)
	}

	for _, args := range [][]string{
		{"keys", "create", "--tenant", tn.ID, "--name", "n", "--refill", "weekly:5"},
		{"keys", "create", "--tenant", tn.ID, "--name", "n", "--refill", "daily"},
		{"keys", "create", "--tenant", tn.ID, "--name", "n", "--refill", "daily:-1"},
		{"keys", "create", "--tenant", tn.ID, "--name", "n", "--refill", "daily:1:2"},
		{"keys", "create", "--tenant", tn.ID, "--name", "n", "--refill", "monthly:32:5"},
		{"keys", "create", "--tenant", tn.ID, "--name", "n", "--refill", "monthly:0:5"},
		{"keys", "create", "--tenant", tn.ID, "--name", "n", "--refill", "monthly:5"},
		{"keys", "update", k.ID, "--refill", "daily:x"},
		{"keys", "update", k.ID, "--refill", "daily:1", "--no-refill"},
	} {
		if _, _, err := f.run(args...); !errors.Is(err, errUsage) {
			t.Errorf("keygate %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
	// Beyond what a usage check knows, the server refuses.
	if _, _, err := f.run("keys", "create", "--tenant", tn.ID, "--name", "n", "--refill", "daily:99999999999999999"); err == nil || errors.Is(err, errUsage) {
		t.Errorf("an amount over the maximum: %v, want the server's refusal", err)
	}
}

func TestRefillRequestFieldNames(t *testing.T) {
	for _, tt := range []struct {
		v    any
		want string
	}{
		{createKeyRequest{keySpecRequest: keySpecRequest{TenantID: "t", Name: "n"}, Refill: &keystore.Refill{Interval: "monthly", Day: 3, Amount: 5}},
			`{"tenant_id":"t","name":"n","refill":{"interval":"monthly","day":3,"amount":5}}`},
		{updateKeyRequest{Refill: &keystore.Refill{Interval: "daily", Amount: 0}}, `{"refill":{"interval":"daily","amount":0}}`},
		{updateKeyRequest{ClearRefill: true}, `{"clear_refill":true}`},
	} {
		b, err := json.Marshal(tt.v)
		if err != nil || string(b) != tt.want {
			t.Errorf("%T: %s, %v; want %s", tt.v, b, err, tt.want)
		}
	}
}
