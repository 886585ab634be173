package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate/keystore"
)

// requestTypes are the bodies of every route that takes one.
var requestTypes = []func() any{
	func() any { return new(tenantRequest) },
	func() any { return new(orgRequest) },
	func() any { return new(keyRequest) },
	func() any { return new(importRequest) },
	func() any { return new(updateRequest) },
	func() any { return new(revokeRequest) },
	func() any { return new(creditsRequest) },
	func() any { return new(rotateRequest) },
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    string // the 400's message; empty: accepted
		newV    func() any
		optnl   bool
		wantVal any
	}{
		{"exact names", `{"tenant_id":"t","name":"n","metadata":{"a":"1","A":"2"}}`, "", func() any { return new(keyRequest) }, false,
			&keyRequest{KeySpec: keySpec("t", "n", map[string]string{"a": "1", "A": "2"})}},
		{"escaped name is the same name", `{"n\u0061me":"x"}`, "", func() any { return new(tenantRequest) }, false, &tenantRequest{Name: "x"}},
		{"upper case", `{"NAME":"x"}`, `unknown field "NAME"`, func() any { return new(tenantRequest) }, false, nil},
		{"title case", `{"Name":"x"}`, `unknown field "Name"`, func() any { return new(tenantRequest) }, false, nil},
		{"Go field name of a tagged field", `{"TenantID":"t"}`, `unknown field "TenantID"`, func() any { return new(orgRequest) }, false, nil},
		{"Kelvin sign folds to k in encoding/json", "{\"\u212aey\":\"legacy-secret-raw-0000000000\"}", "unknown field \"\u212aey\"", func() any { return new(importRequest) }, false, nil},
		{"duplicate", `{"name":"a","name":"b"}`, `duplicate field "name"`, func() any { return new(tenantRequest) }, false, nil},
		{"duplicate through an escape", `{"name":"a","n\u0061me":"b"}`, `duplicate field "name"`, func() any { return new(tenantRequest) }, false, nil},
		{"duplicate of an embedded field", `{"tenant_id":"a","name":"n","tenant_id":"b"}`, `duplicate field "tenant_id"`, func() any { return new(keyRequest) }, false, nil},
		{"duplicate metadata key", `{"tenant_id":"t","name":"n","metadata":{"team":"a","team":"b"}}`, `duplicate field "metadata.team"`, func() any { return new(keyRequest) }, false, nil},
		{"duplicate in an optional body", `{"grace_period":"1h","grace_period":"87600h"}`, `duplicate field "grace_period"`, func() any { return new(rotateRequest) }, true, nil},
		{"unknown nested in a time", `{"tenant_id":"t","name":"n","expires_at":{"a":1,"a":2}}`, `duplicate field "expires_at.a"`, func() any { return new(keyRequest) }, false, nil},
		{"unknown field of revoke", `{"force":true}`, `unknown field "force"`, func() any { return new(revokeRequest) }, true, nil},
		{"empty object for revoke", `{}`, "", func() any { return new(revokeRequest) }, true, &revokeRequest{}},
		{"empty optional", " \n\t", "", func() any { return new(rotateRequest) }, true, &rotateRequest{}},
		{"empty required", " ", "request body is empty; want a JSON object", func() any { return new(tenantRequest) }, false, nil},
		{"null", `null`, "want a JSON object, not null", func() any { return new(rotateRequest) }, true, nil},
		{"null field", `{"tenant_id":"t","name":"n","metadata":null}`, "", func() any { return new(keyRequest) }, false, &keyRequest{KeySpec: keySpec("t", "n", nil)}},
		{"array", `["x"]`, "want a JSON object, not array", func() any { return new(tenantRequest) }, false, nil},
		{"wrong type", `{"name":5}`, `field "name": a JSON number is not allowed here`, func() any { return new(tenantRequest) }, false, nil},
		{"object for a map of strings", `{"tenant_id":"t","name":"n","metadata":{"a":{"b":1,"b":2}}}`, `duplicate field "metadata.a.b"`, func() any { return new(keyRequest) }, false, nil},
		{"scopes as object", `{"tenant_id":"t","name":"n","scopes":{"x":1}}`, `field "scopes": a JSON object is not allowed here`, func() any { return new(keyRequest) }, false, nil},
		{"trailing object", `{"name":"x"}{"name":"y"}`, "unexpected data after the JSON object", func() any { return new(tenantRequest) }, false, nil},
		{"trailing brace", `{"name":"x"}}`, "unexpected data after the JSON object", func() any { return new(tenantRequest) }, false, nil},
		{"cut off", `{"name":`, "request body ends in the middle of a JSON value", func() any { return new(tenantRequest) }, false, nil},
		{"cut off in an array", `{"tenant_id":"t","scopes":["a"`, "request body ends in the middle of a JSON value", func() any { return new(keyRequest) }, false, nil},
		{"syntax", `{"name" "x"}`, "malformed JSON at byte 8", func() any { return new(tenantRequest) }, false, nil},
		{"deep", `{"tenant_id":"t","name":"n","metadata":{"a":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}}`, "JSON nested deeper than 32 levels", func() any { return new(keyRequest) }, false, nil},
		{"long name shortened", `{"` + strings.Repeat("x", 100) + `":1}`, `unknown field "` + strings.Repeat("x", 64) + `..."`, func() any { return new(tenantRequest) }, false, nil},
		{"number too large is a type error", `{"set":1e400}`, `field "set": a JSON number 1e400 is not allowed here`, func() any { return new(creditsRequest) }, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.newV()
			err := decodeJSON([]byte(tt.body), v, tt.optnl)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("decode(%s) = %v, want accepted", tt.body, err)
				}
				if d := cmp.Diff(v, tt.wantVal); d != "" {
					t.Errorf("decoded (-got +want):\n%s", d)
				}
				return
			}
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != http.StatusBadRequest || ae.code != "invalid_request" {
				t.Fatalf("decode(%.80s) = %#v, want a 400 invalid_request", tt.body, err)
			}
			if ae.msg != tt.want && !strings.HasPrefix(ae.msg, tt.want) {
				t.Errorf("message %q, want %q", ae.msg, tt.want)
			}
		})
	}
}

func keySpec(tenant, name string, md map[string]string) keystore.KeySpec {
	return keystore.KeySpec{TenantID: tenant, Name: name, Metadata: md}
}

// TestStructFields: the names checkFields accepts are exactly those
// encoding/json fills from an exact-case key, embedded fields included,
// with its rules for hidden and shadowed names.
func TestStructFields(t *testing.T) {
	type inner struct {
		A      string `json:"a"`
		Shadow string `json:"s"`
		Tie    string `json:"tie"`
		Plain  string
	}
	type inner2 struct {
		Tie string `json:"tie"`
	}
	type outer struct {
		inner
		*inner2
		S       string `json:"s"` // shadows inner's
		Skip    string `json:"-"`
		private string // an unexported field is never a name
		T       time.Time
	}
	_ = outer{}.private
	got := map[string]string{}
	for name, typ := range structFields(reflect.TypeFor[outer]()) {
		got[name] = typ.String()
	}
	want := map[string]string{"a": "string", "s": "string", "Plain": "string", "T": "time.Time"}
	if d := cmp.Diff(got, want); d != "" {
		t.Errorf("fields (-got +want):\n%s", d)
	}
	// Each name checkFields accepts, encoding/json accepts too.
	for name := range want {
		if err := json.Unmarshal([]byte(`{"`+name+`":null}`), new(outer)); err != nil {
			t.Errorf("encoding/json refuses %q: %v", name, err)
		}
	}
}

// FuzzDecode: the body parser never panics, answers only 400 for a bad
// body, never accepts what is not one JSON object with exactly named
// fields, and always accepts what Keygate's own types encode to.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"name":"x"}`, `{"NAME":"x"}`, `{"name":"a","name":"b"}`, `{"n\u0061me":"x"}`,
		`{"tenant_id":"t","name":"n","metadata":{"a":"1","a":"2"},"scopes":["a","b"],"expires_at":"2030-01-02T15:04:05Z"}`,
		`{"tenant_id":"t","name":"n","key":"legacy-secret-raw-0000000000","key_sha256":"00"}`,
		`{"status":"inactive","scopes":["x"],"clear_expiry":true}`, `{"add":-5}`, `{"set":1e400}`,
		`{"grace_period":"87600h"}`, `{}`, ``, `null`, `[]`, `{"a":[[[[{}]]]]}`, `{"name":"x"} `, `{"name":"x"}{}`,
		"{\"\u212aey\":\"x\"}", `{"metadata":{"":"","":""}}`,
	} {
		for kind := range requestTypes {
			f.Add(uint8(kind), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		newV := requestTypes[int(kind)%len(requestTypes)]
		optional := kind&0x80 != 0
		v := newV()
		err := decodeJSON(body, v, optional)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != http.StatusBadRequest || ae.msg == "" {
				t.Fatalf("decode error %#v, want a 400 with a message", err)
			}
			return
		}
		if optional && strings.Trim(string(body), jsonSpace) == "" {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(body, &top); err != nil || top == nil {
			t.Fatalf("accepted %q, which is not a JSON object: %v", body, err)
		}
		names := map[string]bool{}
		for name := range exactNames(reflect.TypeOf(v).Elem()) {
			names[name] = true
		}
		for name := range top {
			if !names[name] {
				t.Fatalf("accepted field %q, which is not a json name of %T", name, v)
			}
		}
		if countKeys(t, body) != countUnique(t, body) {
			t.Fatalf("accepted %q, which repeats a key", body)
		}
		// What our own types encode to is never refused.
		again, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeJSON(again, newV(), false); err != nil {
			t.Fatalf("re-encoded %s refused: %v", again, err)
		}
	})
}

// exactNames lists the json names of a request type's fields by their
// tags, one level of embedding deep: an independent reading of the types
// for FuzzDecode's oracle.
func exactNames(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			for n := range exactNames(f.Type) {
				out[n] = true
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = true
	}
	return out
}

// countKeys counts the object keys anywhere in a JSON value; countUnique
// counts them after encoding/json has merged duplicates (into maps of raw
// values), so the two differ exactly when some object repeats a key.
func countKeys(t *testing.T, raw []byte) int {
	t.Helper()
	raw = []byte(strings.TrimLeft(string(raw), jsonSpace))
	if len(raw) == 0 || raw[0] != '{' && raw[0] != '[' {
		return 0
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	n := 0
	for dec.More() {
		if raw[0] == '{' {
			if _, err := dec.Token(); err != nil {
				t.Fatal(err)
			}
			n++
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		n += countKeys(t, v)
	}
	return n
}

func countUnique(t *testing.T, body []byte) int {
	t.Helper()
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) == nil && obj != nil {
		n := len(obj)
		for _, v := range obj {
			n += countUnique(t, v)
		}
		return n
	}
	var arr []json.RawMessage
	if json.Unmarshal(body, &arr) == nil {
		n := 0
		for _, v := range arr {
			n += countUnique(t, v)
		}
		return n
	}
	return 0
}
