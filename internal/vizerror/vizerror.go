// Package vizerror keeps the message a client may see apart from the
// internal cause of an error (after tailscale's util/vizerror).
//
// An API that answers err.Error() shows its clients whatever the error
// chain carries: operation names ("create key: "), sentinel texts
// ("invalid: "), a backend's detail. An error made by WrapWithMessage
// carries, beside its cause, a message written for the client; the API
// shows that message, or a generic one when the chain has none, and logs
// the whole error.
//
// Unlike tailscale's, an Error's Error() is its cause's text, not the
// visible message: wrapping a cause in an Error changes nothing in logs or
// in errors.Is, only what As finds.
package vizerror

import "errors"

// Error is an error with a message safe to show a client.
type Error struct {
	visible string
	err     error
}

// WrapWithMessage returns err with msg as what a client may see of it. msg
// is shown as it is: it must carry no secret and no internal detail (never
// an error's text). err stays the error's text, for logs, and its chain.
func WrapWithMessage(err error, msg string) error {
	return &Error{visible: msg, err: err}
}

// Error returns the cause's text, for logs; Visible is for the client.
func (e *Error) Error() string { return e.err.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.err }

// Visible returns the message safe to show a client.
func (e *Error) Visible() string { return e.visible }

// As returns the visible message of the first Error in err's chain.
func As(err error) (msg string, ok bool) {
	var e *Error
	if !errors.As(err, &e) {
		return "", false
	}
	return e.visible, true
}
