package auth

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Action names.
const (
	// ActionInvoke is an HTTP, HTTPS or gRPC request to a service.
	ActionInvoke = "trellis:Invoke"
	// ActionConnect is a TCP connection to a TLS-passthrough service.
	ActionConnect = "trellis:Connect"
)

// Principal types.
const (
	// PrincipalAnonymous is a caller whose identity is unknown.
	PrincipalAnonymous = "Anonymous"
	// PrincipalWorkload is an authenticated workload, named by its ID.
	PrincipalWorkload = "Workload"
)

// Principal is who made a request.
type Principal struct {
	Type string // PrincipalAnonymous or PrincipalWorkload
	ID   string // empty for anonymous
}

// anonymous reports whether p is an anonymous caller: its type says so or
// it has no ID.
func (p *Principal) anonymous() bool {
	return p.Type == PrincipalAnonymous || p.ID == ""
}

// Request is what a policy is evaluated against. Header and Query may be nil
// (no headers / no query).
type Request struct {
	Action        string // ActionInvoke or ActionConnect
	Principal     Principal
	Network       string
	Service       string
	Port          int
	Method, Path  string                     // Invoke only
	Header        func(name string) []string // case-insensitive name lookup
	Query         func(key string) []string
	SourceIP      netip.Addr
	SourceCluster string
}

// resource is the request's resource in two parts, whose concatenation
// policies match: the service and path of an Invoke, the service alone
// otherwise.
func (r *Request) resource() (string, string) {
	if r.Action == ActionInvoke {
		return r.Service, r.Path
	}
	return r.Service, ""
}

// Policy is a parsed, validated, compiled policy. Safe for concurrent use.
type Policy struct {
	statements []statement
}

// statement is one compiled statement.
type statement struct {
	deny bool
	// anyPrincipal is Principal "*"; otherwise principals are the ID
	// patterns of a Trellis principal.
	anyPrincipal bool
	principals   []pattern
	actions      actionSet
	resources    []pattern
	conditions   []condition
}

// actionSet is a set of actions, one bit each.
type actionSet uint8

const (
	actInvoke actionSet = 1 << iota
	actConnect
	actAll = actInvoke | actConnect
)

// actionNames are the action values a statement may list. They are compared
// case-insensitively, as IAM compares action names.
var actionNames = []struct {
	name string
	set  actionSet
}{
	{ActionInvoke, actInvoke},
	{ActionConnect, actConnect},
	{"trellis:*", actAll},
	{"*", actAll},
	{"vpc-lattice-svcs:Invoke", actInvoke},
	{"vpc-lattice-svcs:Connect", actConnect},
	{"vpc-lattice-svcs:*", actAll},
}

// requestAction is the action set of a request's action; empty for an
// unknown action, which no statement matches.
func requestAction(action string) actionSet {
	switch action {
	case ActionInvoke:
		return actInvoke
	case ActionConnect:
		return actConnect
	}
	return 0
}

// maxPolicySize is the largest document Parse accepts, in bytes.
const maxPolicySize = 64 << 10

// policyVersion is the only policy language version there is.
const policyVersion = "2012-10-17"

// Error is one problem in a policy document.
type Error struct {
	Field  string // JSON path inside the document, e.g. "Statement[0].Effect"
	Detail string
}

// Error returns "Field: Detail", or the Detail alone for a problem of the
// whole document.
func (e *Error) Error() string {
	if e.Field == "" {
		return e.Detail
	}
	return e.Field + ": " + e.Detail
}

// Errors are all the problems of one document.
type Errors []*Error

// Error joins the problems with "; ".
func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// maxErrors is how many problems Parse reports before it gives up on a
// document.
const maxErrors = 50

// problems collects the problems of a document.
type problems struct {
	list Errors
}

// add records a problem of field, formatting its detail.
func (ps *problems) add(field, format string, args ...any) {
	switch {
	case len(ps.list) < maxErrors:
		ps.list = append(ps.list, &Error{Field: field, Detail: fmt.Sprintf(format, args...)})
	case len(ps.list) == maxErrors:
		ps.list = append(ps.list, &Error{Detail: fmt.Sprintf("too many problems; stopped after %d", maxErrors)})
	}
}

// Parse parses and validates a policy document. On invalid input it returns
// an Errors value listing every problem found, each naming the field by a
// JSON path like `Statement[1].Condition.StringLike["trellis:RequestPath"]`:
// members whose names are identifiers follow a dot, others are quoted in
// brackets, and array elements are indexed. When Statement is a single
// object its fields are named "Statement.Effect" and so on. Problems of the
// document as a whole (size, JSON syntax) have an empty Field. Parsing stops
// after 50 problems.
func Parse(doc []byte) (*Policy, error) {
	var ps problems
	if len(doc) > maxPolicySize {
		ps.add("", "policy document is %d bytes; the limit is %d", len(doc), maxPolicySize)
		return nil, ps.list
	}
	root, err := decode(doc)
	if err != nil {
		ps.add("", "%v", err)
		return nil, ps.list
	}
	p := ps.policy(root)
	if len(ps.list) > 0 {
		return nil, ps.list
	}
	return p, nil
}

// policy validates and compiles a document.
func (ps *problems) policy(root *node) *Policy {
	if root.kind != kindObject {
		ps.add("", "policy document must be a JSON object, not %s", describe(root))
		return nil
	}
	fields := ps.object(root, "", "Version", "Id", "Statement")
	if v, ok := fields["Version"]; ok {
		if v.kind != kindString || v.text != policyVersion {
			ps.add("Version", "must be %q, not %s", policyVersion, describe(v))
		}
	}
	if v, ok := fields["Id"]; ok && v.kind != kindString {
		ps.add("Id", "must be a string, not %s", describe(v))
	}
	st, ok := fields["Statement"]
	if !ok {
		ps.add("Statement", "is required")
		return nil
	}
	p := &Policy{}
	sids := map[string]string{} // Sid -> path of the statement that has it
	switch st.kind {
	case kindObject:
		p.statements = append(p.statements, ps.statement(st, "Statement", sids))
	case kindArray:
		if len(st.elems) == 0 {
			ps.add("Statement", "must list at least one statement")
		}
		for i, e := range st.elems {
			path := index("Statement", i)
			if e.kind != kindObject {
				ps.add(path, "must be a statement object, not %s", describe(e))
				continue
			}
			p.statements = append(p.statements, ps.statement(e, path, sids))
		}
	default:
		ps.add("Statement", "must be a statement object or an array of them, not %s", describe(st))
	}
	return p
}

// statement validates and compiles the statement n, found at path.
func (ps *problems) statement(n *node, path string, sids map[string]string) statement {
	var s statement
	fields := ps.object(n, path, "Sid", "Effect", "Principal", "NotPrincipal",
		"Action", "NotAction", "Resource", "NotResource", "Condition")
	for _, name := range []string{"NotPrincipal", "NotAction", "NotResource"} {
		if _, ok := fields[name]; ok {
			ps.add(child(path, name), "%s is not supported; use %s", name, strings.TrimPrefix(name, "Not"))
		}
	}

	if v, ok := fields["Sid"]; ok {
		switch {
		case v.kind != kindString:
			ps.add(child(path, "Sid"), "must be a string, not %s", describe(v))
		case sids[v.text] != "" && v.text != "":
			ps.add(child(path, "Sid"), "Sid %s is already used by %s", quote(v.text), sids[v.text])
		default:
			sids[v.text] = path
		}
	}

	field := child(path, "Effect")
	switch v, ok := fields["Effect"]; {
	case !ok:
		ps.add(field, `is required; must be "Allow" or "Deny"`)
	case v.kind == kindString && v.text == "Allow":
	case v.kind == kindString && v.text == "Deny":
		s.deny = true
	default:
		ps.add(field, `must be "Allow" or "Deny", not %s`, describe(v))
	}

	field = child(path, "Principal")
	if v, ok := fields["Principal"]; ok {
		s.anyPrincipal, s.principals = ps.principal(v, field)
	} else {
		ps.add(field, `is required; use "*" or {"Trellis": [...]}`)
	}

	field = child(path, "Action")
	if v, ok := fields["Action"]; ok {
		vals, paths := ps.strings(v, field)
		for i, a := range vals {
			set := actionSet(0)
			for _, known := range actionNames {
				if strings.EqualFold(a, known.name) {
					set = known.set
					break
				}
			}
			if set == 0 {
				ps.add(paths[i], "unknown action %s; use %q, %q or \"trellis:*\"", quote(a), ActionInvoke, ActionConnect)
			}
			s.actions |= set
		}
	} else {
		ps.add(field, "is required")
	}

	field = child(path, "Resource")
	if v, ok := fields["Resource"]; ok {
		vals, paths := ps.strings(v, field)
		for i, r := range vals {
			if ps.patternOK(r, paths[i]) {
				s.resources = append(s.resources, compilePattern(r))
			}
		}
	} else {
		ps.add(field, `is required; use "*" for every resource`)
	}

	if v, ok := fields["Condition"]; ok {
		s.conditions = ps.conditions(v, child(path, "Condition"))
	}
	return s
}

// principal validates and compiles a statement's Principal: "*", or a
// Trellis principal's patterns.
func (ps *problems) principal(n *node, path string) (everyone bool, patterns []pattern) {
	switch n.kind {
	case kindString:
		if n.text == "*" {
			return true, nil
		}
		ps.add(path, `must be "*" or {"Trellis": [...]}, not %s`, describe(n))
		return false, nil
	case kindObject:
	default:
		ps.add(path, `must be "*" or {"Trellis": [...]}, not %s`, describe(n))
		return false, nil
	}
	if len(n.members) == 0 {
		ps.add(path, `must name principals, as {"Trellis": [...]}`)
	}
	seen := map[string]bool{}
	for _, m := range n.members {
		field := child(path, m.name)
		switch {
		case ps.repeated(seen, field, "field", m.name):
		case m.name == "Trellis":
			vals, paths := ps.strings(m.value, field)
			for i, v := range vals {
				if ps.patternOK(v, paths[i]) {
					patterns = append(patterns, compilePattern(v))
				}
			}
		case m.name == "AWS":
			ps.add(field, `AWS principals are not supported; use "Trellis" with principal IDs`)
		default:
			ps.add(field, `principal type %s is not supported; use "Trellis" with principal IDs%s`, quote(m.name), didYouMean(m.name, []string{"Trellis"}))
		}
	}
	return false, patterns
}

// repeated reports whether name, a what found at path, is in seen,
// adding the problem when it is; name is in seen after.
func (ps *problems) repeated(seen map[string]bool, path, what, name string) bool {
	if seen[name] {
		ps.add(path, "%s %s appears more than once", what, quote(name))
		return true
	}
	seen[name] = true
	return false
}

// patternOK checks a glob of a principal or a resource, reporting problems
// at path.
func (ps *problems) patternOK(glob, path string) bool {
	switch {
	case glob == "":
		ps.add(path, "must not be empty")
		return false
	case strings.Contains(glob, "${"):
		ps.add(path, "policy variables (${...}) are not supported: %s", quote(glob))
		return false
	}
	return true
}

// object checks that n, found at path, is an object whose members are among
// known, each once, reporting any other member, and returns the known
// members by name.
func (ps *problems) object(n *node, path string, known ...string) map[string]*node {
	fields := make(map[string]*node, len(n.members))
	seen := make(map[string]bool, len(n.members))
	for _, m := range n.members {
		field := child(path, m.name)
		switch {
		case ps.repeated(seen, field, "field", m.name):
		case slices.Contains(known, m.name):
			fields[m.name] = m.value
		default:
			ps.add(field, "unknown field %s%s", quote(m.name), didYouMean(m.name, known))
		}
	}
	return fields
}

// strings returns the strings of n, found at path, which must be a string
// or a non-empty array of strings, each with its own path. It reports the
// values that are not strings and leaves them out.
func (ps *problems) strings(n *node, path string) (vals, paths []string) {
	switch n.kind {
	case kindString:
		return []string{n.text}, []string{path}
	case kindArray:
		if len(n.elems) == 0 {
			ps.add(path, "must not be an empty array")
		}
		for i, e := range n.elems {
			if e.kind != kindString {
				ps.add(index(path, i), "must be a string, not %s", describe(e))
				continue
			}
			vals = append(vals, e.text)
			paths = append(paths, index(path, i))
		}
		return vals, paths
	}
	ps.add(path, "must be a string or an array of strings, not %s", describe(n))
	return nil, nil
}

// didYouMean suggests the name among known that name misspells by case, as
// " (did you mean "X"?)", or returns "".
func didYouMean(name string, known []string) string {
	for _, k := range known {
		if strings.EqualFold(name, k) {
			return fmt.Sprintf(" (did you mean %q?)", k)
		}
	}
	return ""
}

// child is the path of the member name of the value at path.
func child(path, name string) string {
	if !isIdent(name) {
		return path + "[" + strconv.Quote(name) + "]"
	}
	if path == "" {
		return name
	}
	return path + "." + name
}

// index is the path of element i of the array at path.
func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// isIdent reports whether name can follow a dot in a path: a letter or
// underscore, then letters, digits and underscores (ASCII).
func isIdent(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
