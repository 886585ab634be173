package envoy

import (
	"context"
	"maps"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/keystore"
)

// FuzzCheckRequest feeds arbitrary wire bytes, as a CheckRequest, through
// the adapter and the real core: nothing panics, every answer is a complete
// CheckResponse, and only the one stored key is ever allowed.
func FuzzCheckRequest(f *testing.F) {
	s, err := keystore.Open(filepath.Join(f.TempDir(), "keygate.db"), keystore.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	tn, _ := s.CreateTenant(f.Context(), "Acme")
	key, err := s.CreateKey(f.Context(), keystore.KeySpec{TenantID: tn.ID, Name: "k"})
	if err != nil {
		f.Fatal(err)
	}
	e, err := authz.New(authz.Config{}, s)
	if err != nil {
		f.Fatal(err)
	}
	srv := NewServer(e, nil)

	seed := func(h map[string]string, hm []*corev3.HeaderValue) {
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/a?b=c", Headers: h, HeaderMap: &corev3.HeaderMap{Headers: hm}},
		}}}
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(map[string]string{"x-api-key": key.Secret.Reveal()}, nil)
	seed(map[string]string{"authorization": "Bearer " + key.Secret.Reveal(), "x-tenant-id": "x"}, nil)
	seed(nil, []*corev3.HeaderValue{{Key: "x-api-key", RawValue: []byte(key.Secret.Reveal())}, {Key: "X-API-KEY", Value: "a"}})
	seed(map[string]string{"x-api-key": key.Secret.Reveal() + "," + key.Secret.Reveal()}, nil)
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, wire []byte) {
		var req authv3.CheckRequest
		if err := proto.Unmarshal(wire, &req); err != nil {
			return
		}
		resp, err := srv.Check(context.Background(), &req)
		if err != nil || resp.GetStatus() == nil {
			t.Fatalf("Check = %v, %v: want a complete response", resp, err)
		}
		if ok := resp.GetOkResponse(); ok != nil {
			r := requestOf(&req)
			carried := false
			for _, src := range authz.DefaultSources {
				if strings.Contains(r.Headers[src], key.Secret.Reveal()) {
					carried = true
				}
			}
			if !carried {
				t.Fatalf("allowed a request that does not carry the stored key: %v", r.Headers)
			}
			return
		}
		if resp.GetDeniedResponse().GetStatus().GetCode() == 0 {
			t.Fatalf("denial without an HTTP status (Envoy would answer 403): %v", resp)
		}
	})
}

// FuzzFoldHeaders: folding net/http's headers gives what authz.AddHeader
// gives one header at a time (lower-case names, repeated values joined in
// order), whatever the names' case or bytes.
func FuzzFoldHeaders(f *testing.F) {
	f.Add("X-Api-Key", "a", "x-api-key", "b", "c")
	f.Add("X-Forwarded-For", "1.2.3.4", "X_Forwarded_For", "5", "")
	f.Add("Émoji", "v", "émoji", "w", "x")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, v3 string) {
		h := http.Header{k1: {v1, v3}}
		h[k2] = append(h[k2], v2)
		got := foldHeaders(h)
		// The reference reads h in the same order as foldHeaders did:
		// map order decides which of two spellings of a name comes first.
		want := map[string]string{}
		for k, vs := range h {
			for _, v := range vs {
				authz.AddHeader(want, k, v)
			}
		}
		// Lower-case equality, as AddHeader folds (not EqualFold's
		// Unicode folding).
		name := strings.ToLower(k1)
		if len(h) == 1 || name != strings.ToLower(k2) {
			if !maps.Equal(got, want) {
				t.Fatalf("foldHeaders(%q) = %q, want %q", h, got, want)
			}
			return
		}
		// Two spellings of one name: the joined value holds every value,
		// in one of the two orders.
		a, b := strings.Join(h[k1], ","), strings.Join(h[k2], ",")
		if len(got) != 1 || got[name] != a+","+b && got[name] != b+","+a {
			t.Fatalf("foldHeaders(%q) = %q", h, got)
		}
	})
}
