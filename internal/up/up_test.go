package up

import (
	"net/netip"
	"testing"
)

// Edge Gateways without an address are published at the proxy's bind
// address only when it is one IP address.
func TestProxyAddress(t *testing.T) {
	for bind, want := range map[string]netip.Addr{
		"127.0.0.1":   netip.MustParseAddr("127.0.0.1"),
		"198.18.70.1": netip.MustParseAddr("198.18.70.1"),
		"::1":         netip.MustParseAddr("::1"),
		"0.0.0.0":     {},
		"::":          {},
		"localhost":   {},
		"":            {},
	} {
		if got := proxyAddress(bind); got != want {
			t.Errorf("proxyAddress(%q) = %v, want %v", bind, got, want)
		}
	}
}
