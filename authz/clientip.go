package authz

import (
	"fmt"
	"net/netip"
	"strings"
)

// ClientIP says where the client's address comes from. The zero value uses
// the peer Envoy reports (the CheckRequest's source address).
type ClientIP struct {
	// Header, with TrustedHops, reads the address from a header such as
	// x-forwarded-for, for Keygate behind proxies that append to it.
	Header string
	// TrustedHops is how many proxies at the right end of Header are
	// trusted: the client is the TrustedHops-th address from the right
	// (1: the one the nearest proxy appended). Addresses further left are
	// the client's own claims and are never used. With fewer addresses than
	// that, the peer address is used.
	TrustedHops int
}

func (c ClientIP) validate() error {
	switch {
	case c.Header == "" && c.TrustedHops != 0:
		return fmt.Errorf("client ip: trusted_hops needs a header")
	case c.Header != "" && c.TrustedHops < 1:
		return fmt.Errorf("client ip: header %q needs trusted_hops of at least 1", c.Header)
	case c.Header != "":
		return validHeaderName(c.Header)
	}
	return nil
}

// addr returns the client's address, or an invalid Addr when it cannot be
// told (which no allowlist admits).
func (c ClientIP) addr(req *Request) netip.Addr {
	if c.Header != "" {
		v := req.Headers[c.Header]
		for hop := 1; v != ""; hop++ {
			entry := v
			if i := strings.LastIndexByte(v, ','); i >= 0 {
				entry, v = v[i+1:], v[:i]
			} else {
				v = ""
			}
			if hop == c.TrustedHops {
				return parseAddr(strings.TrimSpace(entry))
			}
		}
	}
	return parseAddr(req.Peer)
}

// parseAddr skips ParseAddr for the empty string, whose error allocates.
func parseAddr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func allowedFrom(a netip.Addr, nets []netip.Prefix) bool {
	if !a.IsValid() {
		return false
	}
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}
