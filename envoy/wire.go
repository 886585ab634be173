package envoy

import (
	"math"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/keygate/keygate/authz"
)

// The CheckResponse Response builds, written straight to protobuf's wire
// format. Building the message tree and marshalling it was most of what a
// cached allow cost on the wire path (a dozen allocations, and reflection
// over every field); this writes the same bytes' meaning into one buffer
// sized up front. wire_test.go holds it to proto.Equal with Response for
// the decision matrix, and FuzzWire for any decision.
//
// Field numbers are those of envoy.service.auth.v3 (external_auth.proto),
// envoy.config.core.v3 (base.proto), google.rpc.Status, envoy.type.v3
// HttpStatus and google.protobuf.Struct.
const (
	fResponseStatus   = 1 // CheckResponse.status
	fResponseDenied   = 2 // CheckResponse.denied_response
	fResponseOK       = 3 // CheckResponse.ok_response
	fResponseMetadata = 4 // CheckResponse.dynamic_metadata

	fStatusCode    = 1 // google.rpc.Status.code
	fStatusMessage = 2 // google.rpc.Status.message

	fOKHeaders         = 2 // OkHttpResponse.headers
	fOKRemove          = 5 // OkHttpResponse.headers_to_remove
	fOKResponseHeaders = 6 // OkHttpResponse.response_headers_to_add

	fDeniedStatus  = 1 // DeniedHttpResponse.status
	fDeniedHeaders = 2 // DeniedHttpResponse.headers
	fDeniedBody    = 3 // DeniedHttpResponse.body

	fHTTPStatusCode = 1 // envoy.type.v3.HttpStatus.code

	fOptionHeader       = 1 // HeaderValueOption.header
	fOptionAppend       = 2 // HeaderValueOption.append (BoolValue)
	fOptionAppendAction = 3 // HeaderValueOption.append_action

	fHeaderKey   = 1 // HeaderValue.key
	fHeaderValue = 2 // HeaderValue.value

	fStructFields = 1 // Struct.fields (map entries)
	fEntryKey     = 1 // map entry key
	fEntryValue   = 2 // map entry value
	fValueNumber  = 2 // Value.number_value
	fValueString  = 3 // Value.string_value
)

// overwriteAction is HeaderValueOption's append_action that replaces a
// header the client sent (see overwrite).
const overwriteAction = uint64(corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)

// AppendResponse appends to b the wire encoding of Response(d), without
// dynamic metadata when metadata is false. What a proxy decodes from it is
// what Response's message says, field for field.
func AppendResponse(b []byte, d *authz.Decision, metadata bool) []byte {
	var meta metaFields
	if metadata {
		meta = metadataOf(d)
	}
	return appendResponse(b, d, &meta, responseSize(d, &meta))
}

// ResponseSize is len(AppendResponse(nil, d, metadata)).
func ResponseSize(d *authz.Decision, metadata bool) int {
	var meta metaFields
	if metadata {
		meta = metadataOf(d)
	}
	return responseSize(d, &meta).total
}

// sizes are the lengths of a response and of its two largest parts, so
// that writing it measures each part once.
type sizes struct {
	total, answer, meta int // answer: the ok_response or denied_response
}

func appendResponse(b []byte, d *authz.Decision, meta *metaFields, sz sizes) []byte {
	if d.Kind == authz.KindAllow {
		b = appendMessage(b, fResponseStatus, statusSize(int64(code.Code_OK), ""))
		b = appendStatus(b, int64(code.Code_OK), "")
		b = appendMessage(b, fResponseOK, sz.answer)
		b = appendOptions(b, fOKHeaders, d.Set, nil)
		for _, name := range d.Remove {
			b = protowire.AppendTag(b, fOKRemove, protowire.BytesType)
			b = protowire.AppendString(b, name)
		}
		b = appendOptions(b, fOKResponseHeaders, d.ResponseHeaders, nil)
	} else {
		c, msg := int64(grpcCode(d.Status)), string(d.Reason)
		b = appendMessage(b, fResponseStatus, statusSize(c, msg))
		b = appendStatus(b, c, msg)
		b = appendMessage(b, fResponseDenied, sz.answer)
		b = appendMessage(b, fDeniedStatus, scalarSize(fHTTPStatusCode, uint64(d.Status)))
		b = appendScalar(b, fHTTPStatusCode, uint64(d.Status))
		b = appendOptions(b, fDeniedHeaders, d.ResponseHeaders, nil)
		b = appendIDOption(b, fDeniedHeaders, d.ID)
		b = appendString(b, fDeniedBody, d.Body)
	}
	if meta.n > 0 {
		b = appendMessage(b, fResponseMetadata, sz.meta)
		b = meta.append(b)
	}
	return b
}

func responseSize(d *authz.Decision, meta *metaFields) sizes {
	var sz sizes
	if d.Kind == authz.KindAllow {
		sz.answer = okSize(d)
		sz.total = messageSize(fResponseStatus, statusSize(int64(code.Code_OK), "")) + messageSize(fResponseOK, sz.answer)
	} else {
		sz.answer = deniedSize(d)
		sz.total = messageSize(fResponseStatus, statusSize(int64(grpcCode(d.Status)), string(d.Reason))) + messageSize(fResponseDenied, sz.answer)
	}
	if meta.n > 0 {
		sz.meta = meta.size()
		sz.total += messageSize(fResponseMetadata, sz.meta)
	}
	return sz
}

func okSize(d *authz.Decision) int {
	n := optionsSize(fOKHeaders, d.Set, nil) + optionsSize(fOKResponseHeaders, d.ResponseHeaders, nil)
	for _, name := range d.Remove {
		n += bytesSize(fOKRemove, len(name))
	}
	return n
}

func deniedSize(d *authz.Decision) int {
	return messageSize(fDeniedStatus, scalarSize(fHTTPStatusCode, uint64(d.Status))) +
		optionsSize(fDeniedHeaders, d.ResponseHeaders, &idHeader) + stringSize(fDeniedBody, d.Body)
}

// idHeader has the shape of the decision id header every local reply
// carries (see Response): its value is as long as any FormatID's.
var idHeader = authz.Header{Name: authz.DecisionIDHeader, Value: authz.FormatID(0)}

// appendIDOption writes the decision id header with the id's digits
// written in place (no string to allocate).
func appendIDOption(b []byte, field protowire.Number, id uint64) []byte {
	b = appendMessage(b, field, optionSize(&idHeader))
	b = appendMessage(b, fOptionHeader, headerSize(&idHeader))
	b = appendString(b, fHeaderKey, idHeader.Name)
	b = protowire.AppendTag(b, fHeaderValue, protowire.BytesType)
	b = appendID(protowire.AppendVarint(b, uint64(len(idHeader.Value))), id)
	b = appendMessage(b, fOptionAppend, 0)
	return appendScalar(b, fOptionAppendAction, overwriteAction)
}

// appendID appends authz.FormatID(id).
func appendID(b []byte, id uint64) []byte {
	const hexdigits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexdigits[id>>uint(shift)&0xf])
	}
	return b
}

func statusSize(c int64, msg string) int {
	return scalarSize(fStatusCode, uint64(c)) + stringSize(fStatusMessage, msg)
}

func appendStatus(b []byte, c int64, msg string) []byte {
	b = appendScalar(b, fStatusCode, uint64(c))
	return appendString(b, fStatusMessage, msg)
}

// appendOptions writes hs, then extra if not nil, as HeaderValueOptions
// that overwrite (see overwrite).
func appendOptions(b []byte, field protowire.Number, hs []authz.Header, extra *authz.Header) []byte {
	for i := range hs {
		b = appendOption(b, field, &hs[i])
	}
	if extra != nil {
		b = appendOption(b, field, extra)
	}
	return b
}

func optionsSize(field protowire.Number, hs []authz.Header, extra *authz.Header) int {
	n := 0
	for i := range hs {
		n += messageSize(field, optionSize(&hs[i]))
	}
	if extra != nil {
		n += messageSize(field, optionSize(extra))
	}
	return n
}

func headerSize(h *authz.Header) int {
	return stringSize(fHeaderKey, h.Name) + stringSize(fHeaderValue, h.Value)
}

// optionSize: the header, append as an empty BoolValue (false, present),
// and append_action.
func optionSize(h *authz.Header) int { return optionSizeOf(headerSize(h)) }

// optionSizeOf is optionSize of a header of encoded length n.
func optionSizeOf(n int) int {
	return messageSize(fOptionHeader, n) + messageSize(fOptionAppend, 0) + scalarSize(fOptionAppendAction, overwriteAction)
}

func appendOption(b []byte, field protowire.Number, h *authz.Header) []byte {
	n := headerSize(h)
	b = appendMessage(b, field, optionSizeOf(n))
	b = appendMessage(b, fOptionHeader, n)
	b = appendString(b, fHeaderKey, h.Name)
	b = appendString(b, fHeaderValue, h.Value)
	b = appendMessage(b, fOptionAppend, 0)
	return appendScalar(b, fOptionAppendAction, overwriteAction)
}

// metaFields are the string fields of the dynamic metadata (see
// metadata), in a fixed array: no map, no allocation.
type metaFields struct {
	names  [maxMetaFields]string
	values [maxMetaFields]string
	n      int
	cost   float64
	// id is the decision id, the value of names[idAt] (written as digits,
	// values[idAt] is empty).
	id   uint64
	idAt int
}

// value is the string value of field i, for the message form.
func (m *metaFields) value(i int) string {
	if i == m.idAt {
		return authz.FormatID(m.id)
	}
	return m.values[i]
}

func (m *metaFields) add(name, v string) {
	m.names[m.n], m.values[m.n] = name, v
	m.n++
}

func (m *metaFields) size() int {
	n := messageSize(fStructFields, numberEntrySize())
	for i := range m.n {
		n += messageSize(fStructFields, stringEntrySize(m.names[i], m.valueShape(i)))
	}
	return n
}

// valueShape is a string as long as field i's value.
func (m *metaFields) valueShape(i int) string {
	if i == m.idAt {
		return idHeader.Value
	}
	return m.values[i]
}

func stringEntrySize(name, v string) int {
	return stringSize(fEntryKey, name) + messageSize(fEntryValue, bytesSize(fValueString, len(v)))
}

func numberEntrySize() int {
	return stringSize(fEntryKey, metaCost) + messageSize(fEntryValue, protowire.SizeTag(fValueNumber)+protowire.SizeFixed64())
}

func (m *metaFields) append(b []byte) []byte {
	for i := range m.n {
		v := m.valueShape(i)
		b = appendMessage(b, fStructFields, stringEntrySize(m.names[i], v))
		b = appendString(b, fEntryKey, m.names[i])
		b = appendMessage(b, fEntryValue, bytesSize(fValueString, len(v)))
		// A oneof member is written even when empty: "" is still a
		// string_value, not a Value of no kind.
		b = protowire.AppendTag(b, fValueString, protowire.BytesType)
		if i == m.idAt {
			b = appendID(protowire.AppendVarint(b, uint64(len(v))), m.id)
			continue
		}
		b = protowire.AppendString(b, v)
	}
	b = appendMessage(b, fStructFields, numberEntrySize())
	b = appendString(b, fEntryKey, metaCost)
	b = appendMessage(b, fEntryValue, protowire.SizeTag(fValueNumber)+protowire.SizeFixed64())
	b = protowire.AppendTag(b, fValueNumber, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(m.cost))
}

// Wire primitives. Proto3 leaves out a scalar or string at its zero value;
// an embedded message is written whenever it is set, empty or not.

func messageSize(field protowire.Number, n int) int {
	return protowire.SizeTag(field) + protowire.SizeBytes(n)
}

func appendMessage(b []byte, field protowire.Number, n int) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(n))
}

func bytesSize(field protowire.Number, n int) int {
	return protowire.SizeTag(field) + protowire.SizeBytes(n)
}

func stringSize(field protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return bytesSize(field, len(s))
}

// appendString writes a singular string field, left out when empty.
func appendString(b []byte, field protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func scalarSize(field protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(field) + protowire.SizeVarint(v)
}

func appendScalar(b []byte, field protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}
