package envoy

import (
	"errors"
	"fmt"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/keygate/keygate/authz"
)

// The CheckRequest read straight from its wire bytes: only the fields a
// decision reads (requestOf's), into one copy of the message whose
// strings point into it. proto.Unmarshal allocates every header name and
// value and every field a decision never reads (the destination, the TLS
// session, metadata...); this allocates the copy and the maps.
//
// It follows protobuf's rules wherever they change what requestOf would
// see: a message field that occurs twice is merged, the last scalar and
// the last map entry of a name win, a field of the wrong wire type is an
// unknown field, setting one member of a oneof clears another, and a
// string field that is not UTF-8 is an error. FuzzWireRequest holds it to
// requestOf(proto.Unmarshal) for every message proto accepts. Fields it
// does not read are skipped, not checked: a message proto would refuse for
// an invalid string nobody reads is decided on.

// Field numbers of envoy.service.auth.v3 (attribute_context.proto,
// external_auth.proto) and envoy.config.core.v3 (address.proto,
// base.proto).
const (
	fCheckAttributes = 1 // CheckRequest.attributes

	fAttrSource     = 1  // AttributeContext.source
	fAttrRequest    = 4  // AttributeContext.request
	fAttrExtensions = 10 // AttributeContext.context_extensions

	fPeerAddress = 1 // AttributeContext.Peer.address

	fAddressSocket = 1 // Address.socket_address (a oneof member)
	fAddressPipe   = 2 // Address.pipe
	fAddressEnvoy  = 3 // Address.envoy_internal_address

	fSocketAddress = 2 // SocketAddress.address

	fRequestHTTP = 2 // AttributeContext.Request.http

	fHTTPMethod    = 2  // HttpRequest.method
	fHTTPHeaders   = 3  // HttpRequest.headers (map)
	fHTTPPath      = 4  // HttpRequest.path
	fHTTPHost      = 5  // HttpRequest.host
	fHTTPHeaderMap = 13 // HttpRequest.header_map

	fHeaderMapHeaders = 1 // HeaderMap.headers
	fHeaderRawValue   = 3 // HeaderValue.raw_value
)

// errMalformed is a CheckRequest that is not protobuf.
var errMalformed = errors.New("check request: malformed protobuf")

// wireRequest is what the gRPC server decodes a Check into.
type wireRequest struct {
	authz.Request
	// headerMap holds header_map's entries, folded into Headers only when
	// headers is empty (see requestOf).
	headerMap []rawHeader
	// socket is whether the peer's address is a socket address (the
	// oneof's member set last).
	socket bool
}

type rawHeader struct {
	key, value string
	raw        string
	hasRaw     bool
}

// decodeRequest fills w from data, which it keeps: w's strings point into
// it, so data must not change afterwards.
func decodeRequest(data []byte, w *wireRequest) error {
	err := eachField(data, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num == fCheckAttributes && typ == protowire.BytesType {
			return w.attributes(v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !w.socket {
		w.Peer = ""
	}
	if len(w.Headers) == 0 && len(w.headerMap) > 0 {
		h := make(map[string]string, len(w.headerMap))
		for _, hv := range w.headerMap {
			v := hv.value
			if hv.hasRaw && hv.raw != "" {
				v = hv.raw
			}
			authz.AddHeader(h, hv.key, v)
		}
		w.Headers = h
	}
	w.headerMap = nil
	return nil
}

func (w *wireRequest) attributes(b []byte) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fAttrSource:
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if num == fPeerAddress && typ == protowire.BytesType {
					return w.address(v)
				}
				return nil
			})
		case fAttrRequest:
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if num == fRequestHTTP && typ == protowire.BytesType {
					return w.http(v)
				}
				return nil
			})
		case fAttrExtensions:
			if w.Settings == nil {
				w.Settings = map[string]string{}
			}
			return mapEntry(v, w.Settings)
		}
		return nil
	})
}

func (w *wireRequest) address(b []byte) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fAddressSocket:
			if !w.socket {
				// A member set after another starts empty.
				w.Peer, w.socket = "", true
			}
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if num == fSocketAddress && typ == protowire.BytesType {
					return setString(&w.Peer, v)
				}
				return nil
			})
		case fAddressPipe, fAddressEnvoy:
			w.Peer, w.socket = "", false
		}
		return nil
	})
}

func (w *wireRequest) http(b []byte) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fHTTPMethod:
			return setString(&w.Method, v)
		case fHTTPPath:
			return setString(&w.Path, v)
		case fHTTPHost:
			return setString(&w.Host, v)
		case fHTTPHeaders:
			if w.Headers == nil {
				// Sized once for every header this message holds.
				w.Headers = make(map[string]string, countField(b, fHTTPHeaders))
			}
			return mapEntry(v, w.Headers)
		case fHTTPHeaderMap:
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if num != fHeaderMapHeaders || typ != protowire.BytesType {
					return nil
				}
				var hv rawHeader
				err := eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
					if typ != protowire.BytesType {
						return nil
					}
					switch num {
					case fHeaderKey:
						return setString(&hv.key, v)
					case fHeaderValue:
						return setString(&hv.value, v)
					case fHeaderRawValue:
						// bytes, not string: no UTF-8 to check.
						hv.raw, hv.hasRaw = view(v), true
					}
					return nil
				})
				w.headerMap = append(w.headerMap, hv)
				return err
			})
		}
		return nil
	})
}

// mapEntry adds one map<string, string> entry to m: a missing key or
// value is "", and a later entry of the same key replaces it.
func mapEntry(b []byte, m map[string]string) error {
	var k, v string
	err := eachField(b, func(num protowire.Number, typ protowire.Type, val []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fEntryKey:
			return setString(&k, val)
		case fEntryValue:
			return setString(&v, val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	m[k] = v
	return nil
}

// countField counts the occurrences of field num in the message b (a
// size hint: a malformed message is refused by the decoding that follows).
func countField(b []byte, num protowire.Number) int {
	n := 0
	for len(b) > 0 {
		f, typ, m := protowire.ConsumeTag(b)
		if m < 0 {
			return n
		}
		b = b[m:]
		m = protowire.ConsumeFieldValue(f, typ, b)
		if m < 0 {
			return n
		}
		b = b[m:]
		if f == num && typ == protowire.BytesType {
			n++
		}
	}
	return n
}

// eachField calls fn with every field of the message b in order; a
// length-delimited field's value is its contents, any other's is nil
// (none of the fields read here is a scalar).
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(m))
			}
			b = b[m:]
			if err := fn(num, typ, v); err != nil {
				return err
			}
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(m))
		}
		b = b[m:]
	}
	return nil
}

// setString sets a proto3 string field: UTF-8, as proto.Unmarshal
// requires of every string it reads.
func setString(dst *string, v []byte) error {
	if !utf8.Valid(v) {
		return fmt.Errorf("%w: a string field is not UTF-8", errMalformed)
	}
	*dst = view(v)
	return nil
}

// view is v as a string without a copy: v is part of the copy of the
// message decodeRequest owns, which nothing writes once it is decoded.
func view(v []byte) string {
	if len(v) == 0 {
		return ""
	}
	return unsafe.String(&v[0], len(v))
}
