package auth

import (
	"strings"
	"unicode/utf8"
)

// patternKind is the shape of a glob, which picks how it is matched.
type patternKind uint8

const (
	// patternGlob is any glob with a "?", matched by globMatch.
	patternGlob patternKind = iota
	// patternAny is "*", which matches everything.
	patternAny
	// patternExact has no wildcard: the text must equal it.
	patternExact
	// patternPrefix is a literal followed by one trailing "*".
	patternPrefix
	// patternStars has stars but no "?": literal parts between stars,
	// which are found with string comparisons and searches.
	patternStars
)

// pattern is a compiled glob: "*" matches any run of characters and "?"
// one character; everything else matches itself, case-sensitively. Globs
// from policies are valid UTF-8, as encoding/json decodes every string.
type pattern struct {
	kind patternKind
	// glob is the pattern as written.
	glob string
	// lit is the literal text of an exact or prefix pattern.
	lit string
	// head, mids and tail are the literal parts of a patternStars: before
	// the first star, between stars (empty ones left out), after the last.
	head, tail string
	mids       []string
}

// compilePattern compiles glob.
func compilePattern(glob string) pattern {
	p := pattern{glob: glob}
	switch i := strings.IndexAny(glob, "*?"); {
	case glob == "*":
		p.kind = patternAny
	case i < 0:
		p.kind, p.lit = patternExact, glob
	case i == len(glob)-1 && glob[i] == '*':
		p.kind, p.lit = patternPrefix, glob[:i]
	case !strings.Contains(glob, "?"):
		p.kind = patternStars
		parts := strings.Split(glob, "*")
		p.head, p.tail = parts[0], parts[len(parts)-1]
		for _, m := range parts[1 : len(parts)-1] {
			if m != "" {
				p.mids = append(p.mids, m)
			}
		}
	default:
		p.kind = patternGlob
	}
	return p
}

// match reports whether the pattern matches the text a+b. Taking the text
// in two parts lets a resource, a service name and a path, be matched
// without building it.
func (p *pattern) match(a, b string) bool {
	switch p.kind {
	case patternAny:
		return true
	case patternExact:
		return len(a)+len(b) == len(p.lit) && equalAt(a, b, 0, p.lit)
	case patternPrefix:
		return equalAt(a, b, 0, p.lit)
	case patternStars:
		return p.matchStars(a, b)
	}
	return globMatch(p.glob, a, b)
}

// matchStars matches a patternStars against a+b: the head must start the
// text and the tail end it, without overlapping; then each middle part is
// taken at its leftmost place after the previous one, which leaves the
// most room for the rest, so no choice needs undoing.
func (p *pattern) matchStars(a, b string) bool {
	n := len(a) + len(b)
	if n < len(p.head)+len(p.tail) || !equalAt(a, b, 0, p.head) || !equalAt(a, b, n-len(p.tail), p.tail) {
		return false
	}
	pos, limit := len(p.head), n-len(p.tail)
	for _, m := range p.mids {
		i := indexFrom(a, b, pos, m)
		if i < 0 || i+len(m) > limit {
			return false
		}
		pos = i + len(m)
	}
	return true
}

// equalAt reports whether the text a+b holds lit at byte i.
func equalAt(a, b string, i int, lit string) bool {
	if i >= len(a) {
		j := i - len(a)
		return len(b)-j >= len(lit) && b[j:j+len(lit)] == lit
	}
	if k := len(a) - i; len(lit) > k { // lit runs on into b
		return a[i:] == lit[:k] && strings.HasPrefix(b, lit[k:])
	}
	return a[i:i+len(lit)] == lit
}

// indexFrom is the byte index of the first lit, a non-empty string, in the
// text a+b at or after byte pos, or -1.
func indexFrom(a, b string, pos int, lit string) int {
	if pos < len(a) {
		if i := strings.Index(a[pos:], lit); i >= 0 {
			return pos + i
		}
		for i := max(pos, len(a)-len(lit)+1); i < len(a); i++ { // across the parts
			if a[i] == lit[0] && equalAt(a, b, i, lit) {
				return i
			}
		}
		pos = len(a)
	}
	if i := strings.Index(b[pos-len(a):], lit); i >= 0 {
		return pos + i
	}
	return -1
}

// globMatch reports whether glob matches the whole text a+b. It serves the
// globs with "?", which matches one UTF-8 sequence and so cannot be
// searched for as bytes. It walks glob and text once, and on a mismatch
// resumes after the latest "*" with that star swallowing one more
// character, which is enough when "*" and "?" are the only wildcards; the
// cost is at worst the product of the lengths, with no recursion and no
// allocation.
func globMatch(glob, a, b string) bool {
	n := len(a) + len(b)
	p, t := 0, 0         // positions in glob and in the text
	star, starT := -1, 0 // the latest "*" in glob, and where its match ends
	for t < n {
		if p < len(glob) {
			switch c := glob[p]; c {
			case '*':
				star, starT = p, t
				p++
				continue
			case '?':
				p++
				t += runeLen(a, b, t)
				continue
			default:
				if c == byteAt(a, b, t) {
					p++
					t++
					continue
				}
			}
		}
		if star < 0 {
			return false
		}
		starT += runeLen(a, b, starT)
		p, t = star+1, starT
	}
	for p < len(glob) && glob[p] == '*' {
		p++
	}
	return p == len(glob)
}

// byteAt is byte i of the text a+b.
func byteAt(a, b string, i int) byte {
	if i < len(a) {
		return a[i]
	}
	return b[i-len(a)]
}

// runeLen is the length of the UTF-8 sequence at byte i of the text a+b
// (1 for an invalid one). A sequence never spans the two parts.
func runeLen(a, b string, i int) int {
	var s string
	if i < len(a) {
		s = a[i:]
	} else {
		s = b[i-len(a):]
	}
	if s[0] < utf8.RuneSelf {
		return 1
	}
	_, size := utf8.DecodeRuneInString(s)
	return size
}
