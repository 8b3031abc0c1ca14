package model

import (
	"regexp"
	"strings"
	"testing"
)

// objectNameRE is ValidName's rule as the pattern it was written as before
// ValidName replaced the copies: the reference the test holds it to.
var objectNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// labelRE is an RFC 1123 label's pattern, ValidLabel's reference.
var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

var nameSeeds = []string{
	"", "a", "0", "a.b", "a-b", "-a", "a-", ".a", "a.", "a..b", "A", "a_b", "a b", "é",
	"kube-system", "default", "svc.shop.west", strings.Repeat("a", 63), strings.Repeat("a", 64),
	strings.Repeat("a", 253), strings.Repeat("a", 254),
}

func TestValidName(t *testing.T) {
	for _, s := range nameSeeds {
		want := len(s) <= 253 && objectNameRE.MatchString(s)
		if got := ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
		if got, want := ValidClusterName(s), want && len(s) <= 63; got != want {
			t.Errorf("ValidClusterName(%q) = %v, want %v", s, got, want)
		}
		if got, want := ValidLabel(s), len(s) <= 63 && labelRE.MatchString(s); got != want {
			t.Errorf("ValidLabel(%q) = %v, want %v", s, got, want)
		}
	}
}

// FuzzValidName holds ValidName to the pattern on any string.
func FuzzValidName(f *testing.F) {
	for _, s := range nameSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidName(s), len(s) <= 253 && objectNameRE.MatchString(s); got != want {
			t.Errorf("ValidName(%q) = %v, pattern says %v", s, got, want)
		}
		if got, want := ValidLabel(s), len(s) <= 63 && labelRE.MatchString(s); got != want {
			t.Errorf("ValidLabel(%q) = %v, pattern says %v", s, got, want)
		}
	})
}
