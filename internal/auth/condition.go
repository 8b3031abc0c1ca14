package auth

import (
	"fmt"
	"math"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
)

// matcher is how a condition compares a request value with a listed value.
// A negated operator uses the matcher of its positive counterpart.
type matcher uint8

const (
	matchStringEquals matcher = iota + 1
	matchStringEqualsIgnoreCase
	matchStringLike
	matchNumericEquals
	matchNumericLessThan
	matchNumericLessThanEquals
	matchNumericGreaterThan
	matchNumericGreaterThanEquals
	matchBool
	matchIP
	matchNull
)

// keyType is the type a condition key's values have, and the type of key
// a matcher needs; Null's matcher needs none and takes any key.
func (m matcher) keyType() valueType {
	switch m {
	case matchNumericEquals, matchNumericLessThan, matchNumericLessThanEquals,
		matchNumericGreaterThan, matchNumericGreaterThanEquals:
		return typeNumeric
	case matchIP:
		return typeIP
	case matchNull:
		return 0
	}
	return typeString
}

// baseOperators are the condition operators without set prefix and
// IfExists suffix.
var baseOperators = []struct {
	name    string
	match   matcher
	negated bool
}{
	{"StringEquals", matchStringEquals, false},
	{"StringNotEquals", matchStringEquals, true},
	{"StringEqualsIgnoreCase", matchStringEqualsIgnoreCase, false},
	{"StringNotEqualsIgnoreCase", matchStringEqualsIgnoreCase, true},
	{"StringLike", matchStringLike, false},
	{"StringNotLike", matchStringLike, true},
	{"NumericEquals", matchNumericEquals, false},
	{"NumericNotEquals", matchNumericEquals, true},
	{"NumericLessThan", matchNumericLessThan, false},
	{"NumericLessThanEquals", matchNumericLessThanEquals, false},
	{"NumericGreaterThan", matchNumericGreaterThan, false},
	{"NumericGreaterThanEquals", matchNumericGreaterThanEquals, false},
	{"Bool", matchBool, false},
	{"IpAddress", matchIP, false},
	{"NotIpAddress", matchIP, true},
	{"Null", matchNull, false},
}

// Set operator prefixes and the IfExists suffix.
const (
	prefixAnyValue  = "ForAnyValue:"
	prefixAllValues = "ForAllValues:"
	suffixIfExists  = "IfExists"
)

// setOp is an operator's set prefix.
type setOp uint8

const (
	setNone setOp = iota
	setAnyValue
	setAllValues
)

// operator is a parsed condition operator.
type operator struct {
	match    matcher
	negated  bool
	set      setOp
	ifExists bool
}

// parseOperator parses an operator name such as
// "ForAnyValue:StringLikeIfExists".
func parseOperator(name string) (operator, error) {
	var op operator
	base, prefix := name, ""
	if rest, ok := strings.CutPrefix(base, prefixAnyValue); ok {
		base, prefix, op.set = rest, prefixAnyValue, setAnyValue
	} else if rest, ok := strings.CutPrefix(base, prefixAllValues); ok {
		base, prefix, op.set = rest, prefixAllValues, setAllValues
	}
	if rest, ok := strings.CutSuffix(base, suffixIfExists); ok && rest != "" {
		base, op.ifExists = rest, true
	}
	for _, b := range baseOperators {
		if b.name != base {
			continue
		}
		op.match, op.negated = b.match, b.negated
		switch {
		case op.match == matchNull && op.ifExists:
			return op, fmt.Errorf("condition operator %s: Null does not take the IfExists suffix", quote(name))
		case op.match == matchNull && prefix != "":
			return op, fmt.Errorf("condition operator %s: Null does not take the %s prefix", quote(name), prefix)
		}
		return op, nil
	}
	hint := ""
	if fixed := fixOperatorCase(name); fixed != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", fixed)
	}
	return op, fmt.Errorf("unknown condition operator %s%s", quote(name), hint)
}

// fixOperatorCase returns the operator that name spells with the wrong
// case, or "" if there is none.
func fixOperatorCase(name string) string {
	fixed := ""
	for _, p := range []string{prefixAnyValue, prefixAllValues} {
		if len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) {
			fixed, name = p, name[len(p):]
			break
		}
	}
	suffix := ""
	if n := len(name) - len(suffixIfExists); n > 0 && strings.EqualFold(name[n:], suffixIfExists) {
		suffix, name = suffixIfExists, name[:n]
	}
	for _, b := range baseOperators {
		if strings.EqualFold(name, b.name) {
			return fixed + b.name + suffix
		}
	}
	return ""
}

// valueType is the type of a condition key's values.
type valueType uint8

const (
	typeString valueType = iota + 1
	typeNumeric
	typeIP
)

// String names t for error messages.
func (t valueType) String() string {
	switch t {
	case typeString:
		return "string"
	case typeNumeric:
		return "numeric"
	case typeIP:
		return "IP address"
	}
	return "untyped"
}

// article is t's name with an indefinite article, such as "an IP address".
func (t valueType) article() string {
	if t == typeIP {
		return "an " + t.String()
	}
	return "a " + t.String()
}

// keyKind is a condition key, aliases resolved.
type keyKind uint8

const (
	keyPort keyKind = iota + 1
	keyMethod
	keyPath
	keyHeader
	keyQuery
	keyNetwork
	keyService
	keySourceCluster
	keySourceIP
	keyPrincipalType
	keyPrincipal
)

// valueType is the type of the key's values.
func (k keyKind) valueType() valueType {
	switch k {
	case keyPort:
		return typeNumeric
	case keySourceIP:
		return typeIP
	}
	return typeString
}

// keyNames are the condition keys without a name part, aliases included.
var keyNames = []struct {
	name string
	kind keyKind
}{
	{"trellis:Port", keyPort},
	{"trellis:RequestMethod", keyMethod},
	{"trellis:RequestPath", keyPath},
	{"trellis:ServiceNetwork", keyNetwork},
	{"trellis:Service", keyService},
	{"trellis:SourceCluster", keySourceCluster},
	{"trellis:SourceIp", keySourceIP},
	{"trellis:PrincipalType", keyPrincipalType},
	{"trellis:Principal", keyPrincipal},
	{"vpc-lattice-svcs:Port", keyPort},
	{"vpc-lattice-svcs:RequestMethod", keyMethod},
	{"vpc-lattice-svcs:RequestPath", keyPath},
	{"vpc-lattice-svcs:ServiceNetworkArn", keyNetwork},
	{"vpc-lattice-svcs:ServiceArn", keyService},
	{"vpc-lattice-svcs:SourceVpc", keySourceCluster},
	{"aws:SourceIp", keySourceIP},
	{"aws:PrincipalType", keyPrincipalType},
}

// keyPrefixes are the condition keys that end in a name: a header's or a
// query parameter's.
var keyPrefixes = []struct {
	prefix string
	kind   keyKind
}{
	{"trellis:RequestHeader/", keyHeader},
	{"trellis:RequestQueryString/", keyQuery},
	{"vpc-lattice-svcs:RequestHeader/", keyHeader},
	{"vpc-lattice-svcs:RequestQueryString/", keyQuery},
}

// condKey is a parsed condition key.
type condKey struct {
	kind keyKind
	// arg is the header name, in canonical form, of keyHeader, and the
	// query key of keyQuery.
	arg string
}

// parseKey parses a condition key name.
func parseKey(name string) (condKey, error) {
	for _, k := range keyNames {
		if k.name == name {
			return condKey{kind: k.kind}, nil
		}
	}
	for _, k := range keyPrefixes {
		arg, ok := strings.CutPrefix(name, k.prefix)
		if !ok {
			continue
		}
		switch {
		case arg == "" && k.kind == keyHeader:
			return condKey{}, fmt.Errorf("condition key %s names no header; use %s<header-name>", quote(name), k.prefix)
		case arg == "":
			return condKey{}, fmt.Errorf("condition key %s names no query parameter; use %s<key>", quote(name), k.prefix)
		case k.kind == keyHeader && !isToken(arg):
			return condKey{}, fmt.Errorf("condition key %s: %s is not a valid header name", quote(name), quote(arg))
		}
		if k.kind == keyHeader {
			// Header names are looked up case-insensitively; the canonical
			// form spares http.Header.Values from canonicalizing the name
			// on every request.
			arg = textproto.CanonicalMIMEHeaderKey(arg)
		}
		return condKey{kind: k.kind, arg: arg}, nil
	}
	hint := ""
	for _, k := range keyNames {
		if strings.EqualFold(name, k.name) {
			hint = fmt.Sprintf(" (did you mean %q?)", k.name)
			break
		}
	}
	for _, k := range keyPrefixes {
		if len(name) > len(k.prefix) && strings.EqualFold(name[:len(k.prefix)], k.prefix) {
			hint = fmt.Sprintf(" (did you mean %q?)", k.prefix+name[len(k.prefix):])
			break
		}
	}
	return condKey{}, fmt.Errorf("unknown condition key %s%s", quote(name), hint)
}

// isToken reports whether s is an HTTP token (RFC 9110), as header names
// are.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}

// condition is one key under one operator, with the values listed for it.
type condition struct {
	op  operator
	key condKey
	// The listed values, in the field of the operator's matcher: strs for
	// the string matchers but StringLike, globs for StringLike, nums for
	// the Numeric ones, bools for Bool and Null, prefixes for IpAddress.
	strs     []string
	globs    []pattern
	nums     []float64
	bools    []bool
	prefixes []netip.Prefix
}

// conditions validates and compiles a statement's Condition, found at path.
func (ps *problems) conditions(n *node, path string) []condition {
	if n.kind != kindObject {
		ps.add(path, "must be an object of condition operators, not %s", describe(n))
		return nil
	}
	var conds []condition
	seen := map[string]bool{}
	for _, m := range n.members {
		opPath := child(path, m.name)
		if ps.repeated(seen, opPath, "condition operator", m.name) {
			continue
		}
		op, err := parseOperator(m.name)
		known := err == nil
		if err != nil {
			ps.add(opPath, "%v", err)
		}
		if m.value.kind != kindObject {
			ps.add(opPath, "must be an object of condition keys, not %s", describe(m.value))
			continue
		}
		if len(m.value.members) == 0 {
			ps.add(opPath, "must name at least one condition key")
		}
		keys := map[string]bool{}
		for _, km := range m.value.members {
			keyPath := child(opPath, km.name)
			if ps.repeated(keys, keyPath, "condition key", km.name) {
				continue
			}
			key, err := parseKey(km.name)
			if err != nil {
				ps.add(keyPath, "%v", err)
				continue
			}
			if !known {
				continue
			}
			if want, have := op.match.keyType(), key.kind.valueType(); want != 0 && want != have {
				ps.add(keyPath, "%s needs %s key; %s is %s key", m.name, want.article(), quote(km.name), have.article())
				continue
			}
			c := condition{op: op, key: key}
			if ps.values(km.value, keyPath, &c) {
				conds = append(conds, c)
			}
		}
	}
	return conds
}

// values validates and compiles the values n, found at path, listed for
// c's key, into c. It reports whether they were all valid.
func (ps *problems) values(n *node, path string, c *condition) bool {
	elems, paths := []*node{n}, []string{path}
	switch n.kind {
	case kindArray:
		if len(n.elems) == 0 {
			ps.add(path, "must list at least one value")
			return false
		}
		elems, paths = n.elems, make([]string, len(n.elems))
		for i := range paths {
			paths[i] = index(path, i)
		}
	case kindObject, kindNull:
		ps.add(path, "must be a value or an array of values, not %s", describe(n))
		return false
	}
	ok := true
	for i, e := range elems {
		if err := c.addValue(e); err != nil {
			ps.add(paths[i], "%v", err)
			ok = false
		}
	}
	return ok
}

// addValue validates one listed value and adds it to c.
func (c *condition) addValue(n *node) error {
	if n.kind != kindString && n.kind != kindNumber && n.kind != kindBool {
		return fmt.Errorf("must be a string, a number or a boolean, not %s", describe(n))
	}
	switch c.op.match {
	case matchStringEquals, matchStringEqualsIgnoreCase, matchStringLike:
		// Numbers and booleans compare as their JSON text, as in IAM.
		if strings.Contains(n.text, "${") {
			return fmt.Errorf("policy variables (${...}) are not supported: %s", quote(n.text))
		}
		if c.op.match == matchStringLike {
			c.globs = append(c.globs, compilePattern(n.text))
		} else {
			c.strs = append(c.strs, n.text)
		}
	case matchNumericEquals, matchNumericLessThan, matchNumericLessThanEquals,
		matchNumericGreaterThan, matchNumericGreaterThanEquals:
		if n.kind == kindBool || !isDecimal(n.text) {
			return fmt.Errorf("must be a number, not %s", describe(n))
		}
		f, err := strconv.ParseFloat(n.text, 64)
		if err != nil || math.IsInf(f, 0) {
			return fmt.Errorf("number %s is out of range", n.text)
		}
		c.nums = append(c.nums, f)
	case matchBool, matchNull:
		var b bool
		switch {
		case n.kind == kindNumber:
			return fmt.Errorf("must be true or false, not %s", describe(n))
		case strings.EqualFold(n.text, "true"):
			b = true
		case !strings.EqualFold(n.text, "false"):
			return fmt.Errorf("must be true or false, not %s", describe(n))
		}
		c.bools = append(c.bools, b)
	case matchIP:
		if n.kind != kindString {
			return fmt.Errorf("must be an IP address or a CIDR prefix, not %s", describe(n))
		}
		p, err := parsePrefix(n.text)
		if err != nil {
			return fmt.Errorf("%s is not an IP address or a CIDR prefix", quote(n.text))
		}
		c.prefixes = append(c.prefixes, p)
	}
	return nil
}

// parsePrefix parses a CIDR prefix, its host bits cleared, or a single
// address as the prefix of its full length. Zones are refused.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("zone in %q", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// isDecimal reports whether s is a decimal number: an optional minus,
// digits, optionally a fraction and an exponent (JSON's number syntax, with
// leading zeros allowed).
func isDecimal(s string) bool {
	i := 0
	digits := func() bool {
		start := i
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	if !digits() {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	return i == len(s)
}

// reqValues are the values a request has for one condition key: n of them,
// in many for the multi-valued keys and in one, num or ip for the others.
type reqValues struct {
	n    int
	one  string
	many []string
	num  float64
	ip   netip.Addr
}

// str is string value i.
func (v *reqValues) str(i int) string {
	if v.many != nil {
		return v.many[i]
	}
	return v.one
}

// single is the values of a single-valued string key; none for "".
func single(s string) reqValues {
	if s == "" {
		return reqValues{}
	}
	return reqValues{n: 1, one: s}
}

// values returns r's values for k.
func (k *condKey) values(r *Request) reqValues {
	switch k.kind {
	case keyPort:
		if r.Port > 0 {
			return reqValues{n: 1, num: float64(r.Port)}
		}
	case keyMethod:
		return single(r.Method)
	case keyPath:
		return single(r.Path)
	case keyHeader:
		if r.Header != nil {
			vs := r.Header(k.arg)
			return reqValues{n: len(vs), many: vs}
		}
	case keyQuery:
		if r.Query != nil {
			vs := r.Query(k.arg)
			return reqValues{n: len(vs), many: vs}
		}
	case keyNetwork:
		return single(r.Network)
	case keyService:
		return single(r.Service)
	case keySourceCluster:
		return single(r.SourceCluster)
	case keySourceIP:
		if r.SourceIP.IsValid() {
			return reqValues{n: 1, ip: r.SourceIP.Unmap().WithZone("")}
		}
	case keyPrincipalType:
		return single(r.Principal.Type)
	case keyPrincipal:
		if !r.Principal.anonymous() {
			return single(r.Principal.ID)
		}
	}
	return reqValues{}
}

// holds reports whether the condition holds for r.
func (c *condition) holds(r *Request) bool {
	v := c.key.values(r)
	if c.op.match == matchNull {
		missing := v.n == 0
		for _, b := range c.bools {
			if b == missing {
				return true
			}
		}
		return false
	}
	if v.n == 0 {
		switch {
		case c.op.ifExists:
			return true
		case c.op.set == setAllValues:
			return true
		case c.op.set == setAnyValue:
			return false
		}
		return c.op.negated
	}
	switch c.op.set {
	case setAnyValue:
		for i := 0; i < v.n; i++ {
			if c.matchesAny(&v, i) != c.op.negated {
				return true
			}
		}
		return false
	case setAllValues:
		for i := 0; i < v.n; i++ {
			if c.matchesAny(&v, i) == c.op.negated {
				return false
			}
		}
		return true
	}
	// No set prefix: a positive operator holds when any value matches, a
	// negated one when none does.
	for i := 0; i < v.n; i++ {
		if c.matchesAny(&v, i) {
			return !c.op.negated
		}
	}
	return c.op.negated
}

// matchesAny reports whether request value i of v matches any listed
// value, by the operator's positive matcher.
func (c *condition) matchesAny(v *reqValues, i int) bool {
	switch c.op.match {
	case matchStringEquals:
		s := v.str(i)
		for _, want := range c.strs {
			if s == want {
				return true
			}
		}
	case matchStringEqualsIgnoreCase:
		s := v.str(i)
		for _, want := range c.strs {
			if strings.EqualFold(s, want) {
				return true
			}
		}
	case matchStringLike:
		s := v.str(i)
		for j := range c.globs {
			if c.globs[j].match(s, "") {
				return true
			}
		}
	case matchBool:
		s := v.str(i)
		for _, want := range c.bools {
			if strings.EqualFold(s, strconv.FormatBool(want)) {
				return true
			}
		}
	case matchIP:
		for _, p := range c.prefixes {
			if p.Contains(v.ip) {
				return true
			}
		}
	default:
		for _, want := range c.nums {
			if compare(c.op.match, v.num, want) {
				return true
			}
		}
	}
	return false
}

// compare applies a Numeric matcher: have <op> want.
func compare(m matcher, have, want float64) bool {
	switch m {
	case matchNumericEquals:
		return have == want
	case matchNumericLessThan:
		return have < want
	case matchNumericLessThanEquals:
		return have <= want
	case matchNumericGreaterThan:
		return have > want
	case matchNumericGreaterThanEquals:
		return have >= want
	}
	return false
}
