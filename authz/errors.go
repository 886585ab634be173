package authz

import (
	"encoding/json"
	"fmt"
)

// Error body formats.
const (
	// FormatSimple bodies are `{"error": "<message>"}` (AlfaOne's).
	FormatSimple = "simple"
	// FormatProblem bodies are RFC 7807 application/problem+json
	// (Alloovium's), with `code` beside the standard members.
	FormatProblem = "problem"
)

// ErrorStyle shapes the bodies and challenge headers of denials.
type ErrorStyle struct {
	// Format is FormatSimple or FormatProblem. Empty: FormatSimple.
	Format string
	// ProblemTypeBase prefixes the code to make the RFC 7807 `type` URI,
	// e.g. "https://api.example.com/errors/". Empty: "urn:keygate:error:".
	ProblemTypeBase string
	// Realm is the realm of the WWW-Authenticate challenge on 401s.
	// Empty: "keygate".
	Realm string
}

const defaultProblemTypeBase = "urn:keygate:error:"

type simpleBody struct {
	Error string `json:"error"`
}

// problemBody is an RFC 7807 problem document.
type problemBody struct {
	Type          string   `json:"type"`
	Title         string   `json:"title"`
	Status        int      `json:"status"`
	Detail        string   `json:"detail"`
	Code          Reason   `json:"code"`
	MissingScopes []string `json:"missing_scopes,omitempty"`
}

// withDefaults fills in the zero fields of a style that validate accepted.
func (s ErrorStyle) withDefaults() ErrorStyle {
	if s.Format == "" {
		s.Format = FormatSimple
	}
	if s.ProblemTypeBase == "" {
		s.ProblemTypeBase = defaultProblemTypeBase
	}
	if s.Realm == "" {
		s.Realm = "keygate"
	}
	return s
}

// render precomputes every denial Decision of a style with its defaults
// applied, so that denying allocates nothing and costs an attacker's
// garbage no more than a customer's key.
func (s ErrorStyle) render() (map[Reason]Decision, error) {
	out := make(map[Reason]Decision, len(denials))
	for r := range denials {
		d, err := s.denial(r, "", nil)
		if err != nil {
			return nil, err
		}
		out[r] = d
	}
	return out, nil
}

// denial builds the Decision for reason r; detail, when set, replaces the
// standard message (e.g. with the missing scopes appended).
func (s ErrorStyle) denial(r Reason, detail string, missingScopes []string) (Decision, error) {
	info := denials[r]
	if detail == "" {
		detail = info.message
	}
	var (
		body        []byte
		err         error
		contentType string
	)
	switch s.Format {
	case FormatProblem:
		contentType = "application/problem+json"
		body, err = json.Marshal(problemBody{
			Type:          s.ProblemTypeBase + string(r),
			Title:         info.title,
			Status:        info.status,
			Detail:        detail,
			Code:          r,
			MissingScopes: missingScopes,
		})
	default:
		contentType = "application/json"
		body, err = json.Marshal(simpleBody{Error: detail})
	}
	if err != nil {
		return Decision{}, fmt.Errorf("render %s body: %w", r, err)
	}
	headers := []Header{{Name: "content-type", Value: contentType}}
	if info.status == 401 {
		headers = append(headers, Header{Name: "www-authenticate", Value: s.challenge(r)})
	}
	return Decision{
		Reason:          r,
		Status:          info.status,
		ResponseHeaders: headers,
		Body:            string(body),
	}, nil
}

// challenge is the RFC 6750 challenge: a bare one when no key was sent, and
// error="invalid_token" when the key was refused.
func (s ErrorStyle) challenge(r Reason) string {
	if r == ReasonMissingKey {
		return fmt.Sprintf("Bearer realm=%q", s.Realm)
	}
	return fmt.Sprintf("Bearer realm=%q, error=\"invalid_token\", error_description=%q", s.Realm, denials[r].message)
}
