package envoy

import (
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate/authz"
)

// wireSeeds are CheckRequests as Envoy sends them, and the odd shapes
// protobuf allows.
func wireSeeds(t testing.TB) [][]byte {
	peer := func(a *corev3.Address) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: a}
	}
	socket := &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 4000}}}}
	pipe := &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock"}}}
	reqs := []*authv3.CheckRequest{
		{},
		{Attributes: &authv3.AttributeContext{
			Source:      peer(socket),
			Destination: &authv3.AttributeContext_Peer{Address: socket, Principal: "spiffe://x"},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Id: "1", Method: "GET", Path: "/api/v1/x?y=z", Host: "api.example.com", Scheme: "https", Protocol: "HTTP/1.1",
				Headers: map[string]string{"x-api-key": "ak_live_abc", ":authority": "api.example.com", "": "empty name", "x-empty": ""},
			}},
			ContextExtensions: map[string]string{"keygate.route": "admin", "keygate.cost": "3"},
		}},
		{Attributes: &authv3.AttributeContext{
			Source: peer(pipe),
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/",
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
					{Key: "x-api-key", RawValue: []byte("ak_live_raw")}, {Key: "X-Api-Key", Value: "second"}, {Key: "latin", RawValue: []byte{0xe9}},
					{Key: "both", Value: "v", RawValue: []byte("raw")}, {Key: "empty-raw", Value: "v", RawValue: []byte{}},
				}}}},
		}},
		{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Headers:   map[string]string{"a": "1"},
			HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "ignored", Value: "headers win"}}},
		}}}},
	}
	var out [][]byte
	for _, r := range reqs {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	// Concatenated messages merge: the second's scalars win, maps and
	// lists add up, a oneof member replaces another.
	out = append(out, append(append([]byte{}, out[1]...), out[2]...), append(append([]byte{}, out[2]...), out[1]...), append(append([]byte{}, out[1]...), out[1]...))
	// A known field with the wrong wire type is an unknown field.
	out = append(out, protowire.AppendVarint(protowire.AppendTag(nil, fCheckAttributes, protowire.VarintType), 5))
	return out
}

// sameAsProto fails unless decodeRequest reads data as requestOf reads
// proto.Unmarshal's message: the same request, or, where proto refuses
// data, a refusal too unless the reason is a string field decodeRequest
// does not read.
func sameAsProto(t *testing.T, data []byte) {
	var msg authv3.CheckRequest
	perr := proto.Unmarshal(data, &msg)
	var w wireRequest
	werr := decodeRequest(append([]byte(nil), data...), &w)
	if perr != nil && werr == nil {
		// What proto refused must be in a part decodeRequest does not
		// read: without those parts proto reads what decodeRequest read.
		pruned, ok := prune(data, readFields)
		if !ok {
			t.Fatalf("proto refuses (%v), decodeRequest reads %+v from a message that does not prune", perr, w.Request)
		}
		msg.Reset()
		if err := proto.Unmarshal(pruned, &msg); err != nil {
			t.Fatalf("proto refuses (%v) even the fields decodeRequest reads (%+v): %v", perr, w.Request, err)
		}
		perr = nil
	}
	switch {
	case perr != nil:
		return
	case werr != nil:
		t.Fatalf("proto reads %v, decodeRequest refuses: %v", &msg, werr)
	}
	want := requestOf(&msg)
	if !reflect.DeepEqual(normal(want), normal(w.Request)) {
		t.Fatalf("decodeRequest reads\n%#v\nrequestOf(proto) reads\n%#v", w.Request, want)
	}
}

// field says which fields of a message decodeRequest reads: all of a
// field with no children (a string, a map entry, a header), only the
// listed ones of a message with children, none of an empty one's
// contents (a oneof member that only clears another).
type field struct {
	children map[protowire.Number]field
	empty    bool
}

var (
	whole     = field{}
	readHTTP  = field{children: map[protowire.Number]field{fHTTPMethod: whole, fHTTPHeaders: whole, fHTTPPath: whole, fHTTPHost: whole, fHTTPHeaderMap: {children: map[protowire.Number]field{fHeaderMapHeaders: whole}}}}
	readPeer  = field{children: map[protowire.Number]field{fPeerAddress: {children: map[protowire.Number]field{fAddressSocket: {children: map[protowire.Number]field{fSocketAddress: whole}}, fAddressPipe: {empty: true}, fAddressEnvoy: {empty: true}}}}}
	readAttrs = field{children: map[protowire.Number]field{fAttrSource: readPeer, fAttrRequest: {children: map[protowire.Number]field{fRequestHTTP: readHTTP}}, fAttrExtensions: whole}}
	// readFields is the CheckRequest as decodeRequest reads it.
	readFields = field{children: map[protowire.Number]field{fCheckAttributes: readAttrs}}
)

// prune re-encodes the message b with only the fields f reads (of the
// right wire type), in order.
func prune(b []byte, f field) ([]byte, bool) {
	var out []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil, false
		}
		child, read := f.children[num]
		if read && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			switch {
			case child.empty:
				v = nil
			case child.children != nil:
				var ok bool
				if v, ok = prune(v, child); !ok {
					return nil, false
				}
			}
			out = protowire.AppendBytes(protowire.AppendTag(out, num, typ), v)
		}
		b = b[m:]
	}
	return out, true
}

// normal treats an empty map as none: requestOf passes on whatever map
// proto built.
func normal(r authz.Request) authz.Request {
	if len(r.Headers) == 0 {
		r.Headers = nil
	}
	if len(r.Settings) == 0 {
		r.Settings = nil
	}
	return r
}

func TestWireRequestMatchesProto(t *testing.T) {
	for i, data := range wireSeeds(t) {
		t.Run("", func(t *testing.T) {
			sameAsProto(t, data)
			if i == 1 {
				var w wireRequest
				if err := decodeRequest(data, &w); err != nil || w.Headers["x-api-key"] != "ak_live_abc" || w.Peer != "203.0.113.7" || w.Settings["keygate.cost"] != "3" {
					t.Fatalf("decoded %+v, %v", w.Request, err)
				}
			}
		})
	}
	// Refusals: truncated, a string that is not UTF-8 where a decision
	// reads it.
	bad := protowire.AppendTag(nil, fCheckAttributes, protowire.BytesType)
	bad = protowire.AppendVarint(bad, 40)
	var w wireRequest
	if err := decodeRequest(bad, &w); err == nil {
		t.Fatal("a truncated message decodes")
	}
	http := protowire.AppendString(protowire.AppendTag(nil, fHTTPPath, protowire.BytesType), "/\xff")
	req := protowire.AppendBytes(protowire.AppendTag(nil, fRequestHTTP, protowire.BytesType), http)
	attrs := protowire.AppendBytes(protowire.AppendTag(nil, fAttrRequest, protowire.BytesType), req)
	msg := protowire.AppendBytes(protowire.AppendTag(nil, fCheckAttributes, protowire.BytesType), attrs)
	if err := decodeRequest(msg, &w); err == nil {
		t.Fatal("a path that is not UTF-8 decodes")
	}
	sameAsProto(t, msg)
}

// FuzzWireRequest: any bytes as a CheckRequest read the same through
// decodeRequest as through proto.Unmarshal and requestOf; nothing panics.
func FuzzWireRequest(f *testing.F) {
	for _, s := range wireSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(sameAsProto)
}
