package router

import (
	"strings"
	"testing"
)

func TestSameHost(t *testing.T) {
	for _, tc := range []struct {
		sni, host string
		want      bool
	}{
		{"a.example.com", "a.example.com", true},
		{"a.example.com", "A.EXAMPLE.COM", true},
		{"A.example.com", "a.example.com:8443", true},
		{"a.example.com.", "a.example.com", true},
		{"a.example.com", "a.example.com.:443", true},
		{"a.example.com", "b.example.com", false},
		{"a.example.com", "a.example.co", false},
		{"a.example.com", "a.example.comm", false},
		{"a.example.com", "", false},
		{"a.example.com", "[::1]:443", false},
		{"[::1]", "[::1]", false},                    // requestHost's to compare
		{"ex\u212aample.com", "exkample.com", false}, // not ASCII: requestHost's
		{"a-b.example.com", "a-B.example.com", true},
		{"a@b", "a`b", false}, // the bytes around the letters do not fold
	} {
		if got := sameHost(tc.sni, tc.host); got != tc.want {
			t.Errorf("sameHost(%q, %q) = %v, want %v", tc.sni, tc.host, got, tc.want)
		}
	}
}

// Whatever a client sends as its server name and Host, sameHost says they
// are the same only when requestHost makes them the same: its shortcut
// never hides a misdirected request.
func FuzzSameHost(f *testing.F) {
	for _, s := range [][2]string{
		{"a.example.com", "A.example.com:443"}, {"a.example.com.", "a.example.com"},
		{"[::1]", "[::1]:80"}, {"\u212a", "k"}, {"x", "x:"}, {"", ""}, {"a", "a.:1:2"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, sni, host string) {
		if sameHost(sni, host) && requestHost(sni) != requestHost(host) {
			t.Fatalf("sameHost(%q, %q) but requestHost gives %q and %q", sni, host, requestHost(sni), requestHost(host))
		}
		if sameHost(sni, host) != sameHost(strings.ToUpper(sni), host) && isASCII(sni) {
			t.Fatalf("sameHost(%q, %q) depends on the server name's case", sni, host)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
