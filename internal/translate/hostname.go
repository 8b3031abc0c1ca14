package translate

import (
	"net/netip"
	"regexp"
	"strings"
)

// hostnameRE is the Gateway API Hostname pattern: DNS labels, optionally
// behind a "*." wildcard label.
var hostnameRE = regexp.MustCompile(`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// sectionNameRE is the Gateway API SectionName pattern (a listener's name):
// DNS labels, lower case.
var sectionNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// validHostname reports whether h (already lower-cased) is a Gateway API
// hostname: a DNS name or "*." wildcard, and not an IP address.
func validHostname(h string) bool {
	if len(h) > 253 || !hostnameRE.MatchString(h) {
		return false
	}
	_, err := netip.ParseAddr(h)
	return err != nil
}

// intersect returns the host name a route hostname serves on a listener with
// the listener hostname, as the Gateway API defines it: the more specific of
// the two when one matches the other, and false when neither does. An empty
// listener hostname matches every route hostname.
func intersect(listener, route string) (string, bool) {
	switch {
	case listener == "" || listener == route:
		return route, true
	case covers(listener, route):
		return route, true
	case covers(route, listener):
		return listener, true
	}
	return "", false
}

// covers reports whether the wildcard w ("*.example.com") matches name, which
// may itself be a narrower wildcard ("*.foo.example.com"). A Gateway API
// wildcard stands for one or more labels, so "*.example.com" covers
// "a.b.example.com" but not "example.com".
func covers(w, name string) bool {
	suffix, ok := strings.CutPrefix(w, "*")
	return ok && len(name) > len(suffix) && strings.HasSuffix(name, suffix)
}

// describeHost names a listener hostname in messages.
func describeHost(h string) string {
	if h == "" {
		return "no hostname"
	}
	return "hostname " + h
}
