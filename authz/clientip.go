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

// addr returns the client's address for allowlists (invalid when it cannot
// be told, which no allowlist admits) and the identity the failed-auth
// throttle counts it under: the address, unknownClient when a source was
// there but unreadable (every such client shares one budget: an unreadable
// address must never turn the throttle off), or invalid when there is no
// source at all (the HTTP listener without client_ip).
func (c ClientIP) addr(req *Request) (addr, throttle netip.Addr) {
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
				return known(parseAddr(strings.TrimSpace(entry)))
			}
		}
		if req.Peer == "" {
			// Told to read a header, and it holds fewer hops than trusted.
			return netip.Addr{}, unknownClient
		}
	}
	if req.Peer == "" {
		return netip.Addr{}, netip.Addr{}
	}
	return known(parseAddr(req.Peer))
}

// unknownClient is the throttle identity of every client whose address was
// given but could not be read; no client connects from 0.0.0.0.
var unknownClient = netip.IPv4Unspecified()

func known(a netip.Addr) (addr, throttle netip.Addr) {
	if !a.IsValid() {
		return a, unknownClient
	}
	return a, a
}

// parseAddr reads an address as proxies write it: "1.2.3.4", "2001:db8::1",
// and with a port, "1.2.3.4:80" or "[2001:db8::1]:80" (or "[2001:db8::1]").
// It skips ParseAddr for the empty string, whose error allocates.
func parseAddr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		if ap, perr := netip.ParseAddrPort(s); perr == nil {
			a, err = ap.Addr(), nil
		} else if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
			a, err = netip.ParseAddr(s[1 : len(s)-1])
		}
	}
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
