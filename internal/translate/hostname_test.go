package translate

import (
	"strings"
	"testing"
)

func TestIntersect(t *testing.T) {
	tests := []struct {
		listener, route string
		want            string
		ok              bool
	}{
		{"", "foo.example.com", "foo.example.com", true},
		{"", "*.example.com", "*.example.com", true},
		{"foo.example.com", "foo.example.com", "foo.example.com", true},
		{"foo.example.com", "bar.example.com", "", false},
		{"*.example.com", "foo.example.com", "foo.example.com", true},
		{"*.example.com", "a.b.example.com", "a.b.example.com", true}, // a wildcard covers several labels
		{"*.example.com", "example.com", "", false},
		{"*.example.com", "fooexample.com", "", false},
		{"foo.example.com", "*.example.com", "foo.example.com", true},
		{"example.com", "*.example.com", "", false},
		{"*.example.com", "*.example.com", "*.example.com", true},
		{"*.example.com", "*.foo.example.com", "*.foo.example.com", true},
		{"*.foo.example.com", "*.example.com", "*.foo.example.com", true},
		{"*.foo.com", "*.bar.com", "", false},
	}
	for _, tt := range tests {
		got, ok := intersect(tt.listener, tt.route)
		if got != tt.want || ok != tt.ok {
			t.Errorf("intersect(%q, %q) = %q, %v; want %q, %v", tt.listener, tt.route, got, ok, tt.want, tt.ok)
		}
	}
}

func TestValidHostname(t *testing.T) {
	tests := []struct {
		host string
		want bool
	}{
		{"example.com", true},
		{"localhost", true},
		{"*.example.com", true},
		{"a-b.c1.example", true},
		{"", false},
		{"*", false},
		{"foo.*.com", false},
		{"Example.com", false}, // callers lower-case first
		{"-a.com", false},
		{"a..com", false},
		{"a.com.", false},
		{"10.0.0.1", false},
		{"foo_bar.com", false},
		{"example.com:80", false},
	}
	for _, tt := range tests {
		if got := validHostname(tt.host); got != tt.want {
			t.Errorf("validHostname(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

func TestGeneratedName(t *testing.T) {
	long := "specific-host-matches-listener-specific-host"
	tests := []struct {
		name, namespace, want string
	}{
		{"inventory", "default", "inventory-default.hotel.trellis.internal"},
		// 63 characters: still one label.
		{"r234567890123456789012345678901234567890123456789012345", "default", "r234567890123456789012345678901234567890123456789012345-default.hotel.trellis.internal"},
		// Longer: cut, and ended with a hash of namespace/name.
		{long, "gateway-conformance-infra", "specific-host-matches-listener-specific-host-gateway-c-72fc6d3e.hotel.trellis.internal"},
		{long, "gateway-conformance-infrb", "specific-host-matches-listener-specific-host-gateway-c-d233b39d.hotel.trellis.internal"},
	}
	for _, tt := range tests {
		got := generatedName(tt.name, tt.namespace, "hotel.trellis.internal")
		if got != tt.want {
			t.Errorf("generatedName(%q, %q) = %q; want %q", tt.name, tt.namespace, got, tt.want)
		}
		if label, _, _ := strings.Cut(got, "."); len(label) > maxLabel {
			t.Errorf("generatedName(%q, %q): label %q is longer than %d", tt.name, tt.namespace, label, maxLabel)
		}
	}
}
