package authz

// Reason says why a Decision came out as it did. Its string is the stable
// machine code of DESIGN.md's error table (the RFC 7807 `code`), the one
// clients and dashboards branch on.
type Reason string

// Reasons of Decisions. ReasonOK is the only allowing one.
const (
	ReasonOK                    Reason = "ok"
	ReasonMissingKey            Reason = "missing_api_key"
	ReasonInvalidKey            Reason = "invalid_api_key"
	ReasonExpiredKey            Reason = "expired_api_key"
	ReasonRevokedKey            Reason = "revoked_api_key"
	ReasonInactiveKey           Reason = "inactive_api_key"
	ReasonEnvironmentNotAllowed Reason = "environment_not_allowed"
	ReasonOrgForbidden          Reason = "org_forbidden"
	ReasonInsufficientScope     Reason = "insufficient_scope"
	ReasonIPNotAllowed          Reason = "ip_not_allowed"
	ReasonRouteNotAllowed       Reason = "route_not_allowed"
	ReasonRateLimited           Reason = "rate_limited"
	ReasonCreditsExhausted      Reason = "credits_exhausted"
	ReasonUnavailable           Reason = "unavailable"
	// ReasonInvalidPath refuses a path backends read in different ways: an
	// encoded slash or backslash, a backslash, or ";" parameters that
	// would move it to another route.
	ReasonInvalidPath Reason = "invalid_path"
	// ReasonAmbiguousRequest refuses a request whose routing headers
	// (original URI, method, host) arrived more than once, or not at all.
	ReasonAmbiguousRequest Reason = "ambiguous_request"
	// ReasonIntrospection answers the introspection path: not a refusal,
	// but Keygate replies itself (200, the principal as JSON) instead of
	// passing the request on.
	ReasonIntrospection Reason = "introspection"
)

// denial is the client-facing answer for one Reason: AlfaOne's exact error
// strings, and the HTTP status every adapter renders.
type denial struct {
	status  int
	title   string // RFC 7807 title
	message string // the `error` string / RFC 7807 detail
}

var denials = map[Reason]denial{
	ReasonMissingKey:            {401, "Missing API key", "API key is required"},
	ReasonInvalidKey:            {401, "Invalid API key", "Invalid API key"},
	ReasonExpiredKey:            {401, "Expired API key", "API key has expired"},
	ReasonRevokedKey:            {401, "Revoked API key", "API key has been revoked"},
	ReasonInactiveKey:           {401, "Inactive API key", "API key is inactive"},
	ReasonEnvironmentNotAllowed: {403, "Environment not allowed", "API key environment not allowed"},
	ReasonOrgForbidden:          {403, "Organization forbidden", "API key is not allowed for this organization"},
	ReasonInsufficientScope:     {403, "Insufficient scope", "API key is missing required scope"},
	ReasonIPNotAllowed:          {403, "IP address not allowed", "API key is not allowed from this IP address"},
	ReasonRouteNotAllowed:       {403, "Route not allowed", "Access to this route is not allowed"},
	ReasonRateLimited:           {429, "Rate limit exceeded", "Rate limit exceeded. Please try again later."},
	ReasonCreditsExhausted:      {429, "Credits exhausted", "API credits exhausted"},
	ReasonUnavailable:           {503, "Authorization unavailable", "Authorization temporarily unavailable"},
	ReasonInvalidPath:           {400, "Invalid path", "Request path is ambiguous: encoded slashes, backslashes, and path parameters or letter case that change the route are refused"},
	ReasonAmbiguousRequest:      {400, "Ambiguous request", "Request is ambiguous: a routing header is missing or was sent more than once"},
}

// Status is the HTTP status a denial with this reason is answered with, or
// 200 for ReasonOK and ReasonIntrospection.
func (r Reason) Status() int {
	if d, ok := denials[r]; ok {
		return d.status
	}
	return 200
}

// Message is the human string of the `error` field for this reason.
func (r Reason) Message() string { return denials[r].message }
