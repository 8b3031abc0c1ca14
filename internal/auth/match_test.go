package auth

import (
	"testing"
	"unicode/utf8"
)

// refMatch is a plain glob matcher by dynamic programming over runes, the
// reference globMatch and the pattern fast paths are checked against. A
// literal rune matches the same bytes; an invalid byte of s is a rune of
// its own.
func refMatch(glob, s string) bool {
	g, r := runes(glob), runes(s)
	// m[i][j] reports whether g[i:] matches r[j:].
	m := make([][]bool, len(g)+1)
	for i := range m {
		m[i] = make([]bool, len(r)+1)
	}
	m[len(g)][len(r)] = true
	for i := len(g) - 1; i >= 0; i-- {
		for j := len(r); j >= 0; j-- {
			switch more := j < len(r); g[i] {
			case "*":
				m[i][j] = m[i+1][j] || more && m[i][j+1]
			case "?":
				m[i][j] = more && m[i+1][j+1]
			default:
				m[i][j] = more && g[i] == r[j] && m[i+1][j+1]
			}
		}
	}
	return m[0][0]
}

// runes splits s into its UTF-8 sequences.
func runes(s string) []string {
	var out []string
	for s != "" {
		_, n := utf8.DecodeRuneInString(s)
		out, s = append(out, s[:n]), s[n:]
	}
	return out
}

// checkMatch compares the compiled pattern, on every split of s into two
// parts, with refMatch. Splits inside a UTF-8 sequence are skipped: the
// parts are a service name and a path, and "?" takes a sequence from one.
func checkMatch(t *testing.T, glob, s string) bool {
	t.Helper()
	want := refMatch(glob, s)
	p := compilePattern(glob)
	for i := 0; i <= len(s); i++ {
		if i < len(s) && !utf8.RuneStart(s[i]) {
			continue
		}
		if got := p.match(s[:i], s[i:]); got != want {
			t.Errorf("pattern %q on %q split at %d: %v, want %v", glob, s, i, got, want)
			return want
		}
	}
	return want
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		glob, s string
		want    bool
	}{
		{"*", "", true},
		{"*", "anything/at/all", true},
		{"", "", true},
		{"", "a", false},
		{"abc", "abc", true},
		{"abc", "abcd", false},
		{"abc", "ab", false},
		{"ab*", "ab", true},
		{"ab*", "abxyz", true},
		{"ab*", "a", false},
		{"*c", "abc", true},
		{"*c", "abcd", false},
		{"a*c", "ac", true},
		{"a*c", "abbbc", true},
		{"a*c", "abbbcd", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxcyyb", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"a?c", "aéc", true},
		{"??", "é", false},
		{"?", "é", true},
		{"*?", "", false},
		{"*?", "x", true},
		{"**", "", true},
		{"a**b", "ab", true},
		{"*/api/*", "svc/api/items", true},
		{"*/api/*", "svc/apix/items", false},
		{"*aab", "aaaab", true},
		{"*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"é*", "éa", true},
		{"a*b*c*d", "abcd", true},
		{"a*bc*bc*d", "abcbcd", true},
		{"a*bc*bc*d", "abcd", false},
		{"ab*ba", "aba", false},
		{"*x*", "aaxaa", true},
		{"*xy*", "aaxaa", false},
		{"*/admin/*", "inventory-default.my-hotel/admin/users", true},
		{"*é", "aé", true},
	}
	for _, tt := range tests {
		if got := checkMatch(t, tt.glob, tt.s); got != tt.want {
			t.Errorf("reference on %q, %q: %v, want %v", tt.glob, tt.s, got, tt.want)
		}
	}
}

// FuzzPatternMatch checks the matcher against the reference on any input.
func FuzzPatternMatch(f *testing.F) {
	f.Add("a*b?c", "axxbyc")
	f.Add("*/api/*", "svc/api/items")
	f.Add("?*?", "é")
	f.Add("*********00", "00000000000\x95\xa0\xf3\xdb\b000\xf3\x8f\xb3000000\xb70")
	f.Fuzz(func(t *testing.T, glob, s string) {
		if len(glob) > 64 || len(s) > 256 || !utf8.ValidString(glob) { // globs from JSON are valid UTF-8
			return
		}
		checkMatch(t, glob, s)
	})
}
