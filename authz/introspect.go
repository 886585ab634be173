package authz

import (
	"encoding/json"
)

// principal is the introspection answer: who a key acts as, in Alloovium's
// /me shape.
type principal struct {
	UserID       string   `json:"user_id,omitempty"`
	TenantID     string   `json:"tenant_id"`
	OrgID        string   `json:"org_id,omitempty"`
	AuthMethod   string   `json:"auth_method"`
	APIKeyID     string   `json:"api_key_id"`
	APIKeyName   string   `json:"api_key_name"`
	APIKeyPrefix string   `json:"api_key_prefix"`
	Environment  string   `json:"environment"`
	Tier         string   `json:"rate_limit_tier"`
	Scopes       []string `json:"scopes"`
}

// introspect answers the introspection path for an authenticated key.
func (e *Engine) introspect(c *Credential) Decision {
	scopes := c.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	body, err := json.Marshal(principal{
		UserID: c.UserID, TenantID: c.TenantID, OrgID: c.OrgID, AuthMethod: "api_key",
		APIKeyID: c.ID, APIKeyName: c.Name, APIKeyPrefix: c.DisplayPrefix,
		Environment: c.Environment, Tier: c.Tier, Scopes: scopes,
	})
	if err != nil {
		// Only strings and a slice of strings: Marshal cannot fail.
		return e.denials[ReasonUnavailable]
	}
	return Decision{
		Kind:            KindReply,
		Reason:          ReasonIntrospection,
		Status:          200,
		ResponseHeaders: []Header{{Name: "content-type", Value: "application/json"}, {Name: "cache-control", Value: "no-store"}},
		Body:            string(body),
		Credential:      c,
	}
}
