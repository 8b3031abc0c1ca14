package model

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"

	"trellis.dev/trellis/internal/auth"
)

// FieldError is one invalid field. Field is a JSON path into the object, such
// as "rules[0].action.forward.backends[1].weight".
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Detail }

// FieldErrors collects every invalid field of one object, so a user sees all
// problems at once rather than one per attempt.
type FieldErrors []*FieldError

func (es FieldErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// err returns es as an error, or nil when empty.
func (es FieldErrors) err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

type fieldErrs struct{ list FieldErrors }

func (f *fieldErrs) add(field, format string, args ...any) {
	f.list = append(f.list, &FieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
}

// Object is any stored object.
type Object interface {
	ObjectMeta() *Meta
	ObjectKind() Kind
	Validate() error
}

func (n *ServiceNetwork) ObjectMeta() *Meta { return &n.Meta }
func (s *Service) ObjectMeta() *Meta        { return &s.Meta }
func (t *TargetGroup) ObjectMeta() *Meta    { return &t.Meta }

func (*ServiceNetwork) ObjectKind() Kind { return KindServiceNetwork }
func (*Service) ObjectKind() Kind        { return KindService }
func (*TargetGroup) ObjectKind() Kind    { return KindTargetGroup }

// ParseKind maps a kind's name, case-insensitively and in singular or plural
// form ("service", "Services", "targetgroups"), to the Kind.
func ParseKind(s string) (Kind, error) {
	l := strings.TrimSuffix(strings.ToLower(s), "s")
	for _, k := range Kinds {
		if strings.ToLower(string(k)) == l {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown kind %q", s)
}

// Key is the store key of the object of kind k named name.
func Key(k Kind, name string) string { return "/" + string(k) + "/" + name }

// KindPrefix is the store key prefix of every object of kind k.
func KindPrefix(k Kind) string { return "/" + string(k) + "/" }

// ParseKey splits a store key into kind and name.
func ParseKey(key string) (Kind, string, error) {
	rest, ok := strings.CutPrefix(key, "/")
	if ok {
		if kind, name, ok := strings.Cut(rest, "/"); ok && name != "" {
			if k, err := ParseKind(kind); err == nil && string(k) == kind {
				return k, name, nil
			}
		}
	}
	return "", "", fmt.Errorf("malformed key %q", key)
}

// ValidName reports whether s has the DNS-subdomain-like form object names
// take (model objects', and Kubernetes namespaces' and service accounts'):
// at most 253 lower-case alphanumerics, '-' or '.', starting and ending
// alphanumeric.
func ValidName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (c != '-' && c != '.' || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}

// ValidClusterName says whether s may name a cluster: a ValidName of at
// most 63 bytes.
func ValidClusterName(s string) bool { return len(s) <= 63 && ValidName(s) }

func validateMeta(f *fieldErrs, m *Meta) {
	switch {
	case m.Name == "":
		f.add("name", "required")
	case !ValidName(m.Name):
		f.add("name", "%q must be at most 253 lower-case alphanumerics, '-' or '.', starting and ending alphanumeric", m.Name)
	}
	if m.Owner == "" {
		f.add("owner", "required")
	} else if !ValidClusterName(m.Owner) {
		f.add("owner", "%q is not a valid cluster name", m.Owner)
	}
}

// Validate checks a service network.
func (n *ServiceNetwork) Validate() error {
	var f fieldErrs
	validateMeta(&f, &n.Meta)
	switch n.Mode {
	case ModeServiceNetwork:
		if n.Domain == "" {
			f.add("domain", "required in mode %s", n.Mode)
		} else if !validHostname(n.Domain, false) {
			f.add("domain", "%q is not a valid DNS name", n.Domain)
		}
	case ModeEdge:
		if n.Domain != "" {
			f.add("domain", "must be empty in mode %s", n.Mode)
		}
		seen := map[netip.Addr]int{}
		for i, a := range n.Addresses {
			ip, err := netip.ParseAddr(a)
			switch {
			case err != nil || ip.Zone() != "" || ip.String() != a:
				f.add(fmt.Sprintf("addresses[%d]", i), "%q is not an IP address in canonical form", a)
			case seen[ip] != 0:
				f.add(fmt.Sprintf("addresses[%d]", i), "%s is already addresses[%d]", a, seen[ip]-1)
			default:
				seen[ip] = i + 1
			}
		}
	default:
		f.add("mode", "must be %s or %s, not %q", ModeServiceNetwork, ModeEdge, n.Mode)
	}
	validateAuth(&f, n.Auth)
	for i, c := range n.AllowedClusters {
		field := fmt.Sprintf("allowedClusters[%d]", i)
		switch {
		case c == AnyCluster && len(n.AllowedClusters) > 1:
			f.add(field, "%q allows every cluster and must be the only entry", c)
		case c == AnyCluster:
		case !ValidClusterName(c):
			f.add(field, "%q is not a valid cluster name", c)
		case slices.Index(n.AllowedClusters, c) < i:
			f.add(field, "%q is already allowedClusters[%d]", c, slices.Index(n.AllowedClusters, c))
		}
	}
	switch n.ForwardedFor {
	case "", ForwardedForAppend, ForwardedForPreserve, ForwardedForRemove:
	default:
		f.add("forwardedFor", "must be %s, %s or %s, not %q", ForwardedForAppend, ForwardedForPreserve, ForwardedForRemove, n.ForwardedFor)
	}
	if n.Mode != ModeEdge && len(n.Addresses) > 0 {
		f.add("addresses", "must be empty in mode %s", n.Mode)
	}
	validateAccessLogs(&f, n.AccessLogs)
	return f.list.err()
}

var accessLogRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidAccessLog says whether name may name an access-log sink of
// ServiceNetwork.AccessLogs or Service.AccessLogs: a proxy started with an
// access-log directory writes the entries of sink NAME to DIR/NAME.log,
// besides its own access log. A name is 1-128 letters, digits, '.', '_'
// or '-', starting with a letter or digit, so that it names a file of that
// directory and nothing else. The VPC Lattice API's access log
// subscriptions set them.
func ValidAccessLog(name string) bool { return accessLogRE.MatchString(name) }

func validateAccessLogs(f *fieldErrs, names []string) {
	if len(names) > MaxAccessLogs {
		f.add("accessLogs", "at most %d sinks, not %d", MaxAccessLogs, len(names))
		return
	}
	for i, name := range names {
		field := fmt.Sprintf("accessLogs[%d]", i)
		switch {
		case !ValidAccessLog(name):
			f.add(field, "%q is not a sink name: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
		case slices.Index(names, name) < i:
			f.add(field, "%q is already accessLogs[%d]", name, slices.Index(names, name))
		}
	}
}

// Validate checks a service and its rules.
func (s *Service) Validate() error {
	var f fieldErrs
	validateMeta(&f, &s.Meta)
	if s.Network == "" {
		f.add("network", "required")
	}
	if s.DNSName != "" && !validHostname(s.DNSName, false) {
		f.add("dnsName", "%q is not a valid DNS name", s.DNSName)
	}
	validateAccessLogs(&f, s.AccessLogs)
	for i, d := range s.CustomDomains {
		if !validHostname(d, true) {
			f.add(fmt.Sprintf("customDomains[%d]", i), "%q is not a valid host name or wildcard", d)
		}
	}
	if len(s.Listeners) == 0 {
		f.add("listeners", "at least one listener is required")
	}
	validateListeners(&f, s.Listeners)
	for i := range s.Rules {
		validateRule(&f, fmt.Sprintf("rules[%d]", i), &s.Rules[i])
	}
	validateAuth(&f, s.Auth)
	return f.list.err()
}

// validateAuth checks an auth policy document, naming each problem by its
// path inside the document: "auth.policy.Statement[0].Effect".
func validateAuth(f *fieldErrs, a *Auth) {
	if a == nil {
		return
	}
	if len(a.Policy) == 0 {
		f.add("auth.policy", "required")
		return
	}
	_, err := auth.Parse(a.Policy)
	var errs auth.Errors
	switch {
	case errors.As(err, &errs):
		for _, e := range errs {
			field := "auth.policy"
			if e.Field != "" {
				field += "." + e.Field
			}
			f.add(field, "%s", e.Detail)
		}
	case err != nil:
		f.add("auth.policy", "%v", err)
	}
}

// validateListeners checks a service's listeners. A port may carry several
// listeners of one protocol with different host names.
func validateListeners(f *fieldErrs, ls []Listener) {
	type portHost struct {
		port int32
		host string
	}
	seen := map[portHost]int{}
	protocols := map[int32]int{}
	for i, l := range ls {
		p := fmt.Sprintf("listeners[%d]", i)
		if l.Port < 1 || l.Port > 65535 {
			f.add(p+".port", "%d is not in 1-65535", l.Port)
		} else if j, dup := seen[portHost{l.Port, l.Hostname}]; dup {
			f.add(p+".port", "%d is already used by listeners[%d]", l.Port, j)
		} else if j, ok := protocols[l.Port]; ok && ls[j].Protocol != l.Protocol {
			f.add(p+".protocol", "port %d is %s in listeners[%d]", l.Port, ls[j].Protocol, j)
		}
		seen[portHost{l.Port, l.Hostname}] = i
		if _, ok := protocols[l.Port]; !ok {
			protocols[l.Port] = i
		}
		switch l.Protocol {
		case ProtocolHTTPS:
			if len(l.Certificates) == 0 {
				f.add(p+".certificates", "an HTTPS listener needs at least one certificate")
			}
		case ProtocolHTTP, ProtocolTLSPassthrough:
			if len(l.Certificates) > 0 {
				f.add(p+".certificates", "only HTTPS listeners terminate TLS; %s takes no certificates", l.Protocol)
			}
		default:
			f.add(p+".protocol", "must be HTTP, HTTPS or TLS_PASSTHROUGH, not %q", l.Protocol)
		}
		if l.Hostname != "" && !validHostname(l.Hostname, true) {
			f.add(p+".hostname", "%q is not a valid host name or wildcard", l.Hostname)
		}
		for j, h := range l.Hostnames {
			hp := fmt.Sprintf("%s.hostnames[%d]", p, j)
			switch {
			case !validHostname(h, true):
				f.add(hp, "%q is not a valid host name or wildcard", h)
			case l.Hostname != "" && !HostnameWithin(h, l.Hostname):
				f.add(hp, "%q is not within the listener's hostname %q", h, l.Hostname)
			}
		}
	}
}

// HostnameWithin reports whether every host name matches h also matches
// the listener hostname l: they are equal, or l is a wildcard ("*.a.com",
// one or more labels) covering h ("b.a.com", "*.b.a.com").
func HostnameWithin(h, l string) bool {
	if h == l {
		return true
	}
	suffix, ok := strings.CutPrefix(l, "*")
	return ok && len(h) > len(suffix) && strings.HasSuffix(h, suffix)
}

func validateRule(f *fieldErrs, p string, r *Rule) {
	for i, m := range r.Matches {
		mp := fmt.Sprintf("%s.matches[%d]", p, i)
		if m.Path != nil {
			validatePath(f, mp+".path", m.Path)
		}
		if m.Method != "" && !httpguts.ValidHeaderFieldName(m.Method) {
			f.add(mp+".method", "%q is not an HTTP method token", m.Method)
		}
		for j, h := range m.Headers {
			hp := fmt.Sprintf("%s.headers[%d]", mp, j)
			if !httpguts.ValidHeaderFieldName(h.Name) {
				f.add(hp+".name", "%q is not a valid header name", h.Name)
			}
			validateValueMatch(f, hp, h)
		}
		for j, q := range m.QueryParams {
			qp := fmt.Sprintf("%s.queryParams[%d]", mp, j)
			if q.Name == "" {
				f.add(qp+".name", "required")
			}
			validateValueMatch(f, qp, q)
		}
	}
	prefixOnly := !slices.ContainsFunc(r.Matches, func(m Match) bool { return m.Path != nil && m.Path.Type != PathPrefix })
	validateFilters(f, p+".filters", r.Filters, prefixOnly)
	if r.Timeouts != nil {
		validateTimeouts(f, p+".timeouts", r.Timeouts)
	}
	if r.Retry != nil {
		validateRetry(f, p+".retry", r.Retry)
	}
	if r.SessionPersistence != nil {
		validateSession(f, p+".sessionPersistence", r.SessionPersistence)
	}
	if r.Locality != "" && r.Locality != LocalityLocalFirst {
		f.add(p+".locality", "must be %s or empty, not %q", LocalityLocalFirst, r.Locality)
	}
	a := r.Action
	switch {
	case a.Forward == nil && a.FixedResponse == nil && slices.ContainsFunc(r.Filters, func(fl Filter) bool { return fl.Redirect != nil }):
		// The redirect answers every request; there is nothing to do after it.
	case a.Forward != nil && a.FixedResponse != nil:
		f.add(p+".action", "exactly one of forward and fixedResponse may be set")
	case a.Forward != nil:
		if len(a.Forward.Backends) == 0 {
			f.add(p+".action.forward.backends", "at least one backend is required")
		}
		for i, b := range a.Forward.Backends {
			bp := fmt.Sprintf("%s.action.forward.backends[%d]", p, i)
			if b.Weight < 0 || b.Weight > 1_000_000 {
				f.add(bp+".weight", "%d is not in 0-1000000", b.Weight)
			}
			if b.Import != nil {
				if b.TargetGroup != "" {
					f.add(bp+".import", "exactly one of targetGroup and import may be set")
				}
				validateImport(f, bp+".import", b.Import)
			}
			validateFilters(f, bp+".filters", b.Filters, prefixOnly)
		}
	case a.FixedResponse != nil:
		if c := a.FixedResponse.StatusCode; c < 200 || c > 599 {
			f.add(p+".action.fixedResponse.statusCode", "%d is not in 200-599", c)
		}
	default:
		f.add(p+".action", "one of forward and fixedResponse is required")
	}
}

// validateImport checks a backend's multi-cluster import reference.
func validateImport(f *fieldErrs, p string, im *ImportRef) {
	if !ValidLabel(im.Namespace) {
		f.add(p+".namespace", "%q is not a valid namespace name", im.Namespace)
	}
	if !ValidLabel(im.Name) {
		f.add(p+".name", "%q is not a valid Service name", im.Name)
	}
	if im.Port < 1 || im.Port > 65535 {
		f.add(p+".port", "%d is not in 1-65535", im.Port)
	}
	switch im.Protocol {
	case ProtocolHTTP, ProtocolHTTPS, ProtocolTCP:
	default:
		f.add(p+".protocol", "must be HTTP, HTTPS or TCP, not %q", im.Protocol)
	}
	switch im.ProtocolVersion {
	case HTTP1, HTTP2, GRPC:
	default:
		f.add(p+".protocolVersion", "must be HTTP1, HTTP2 or GRPC, not %q", im.ProtocolVersion)
	}
	if im.Hostname != "" && !ValidLabel(im.Hostname) {
		f.add(p+".hostname", "%q is not an RFC 1123 label", im.Hostname)
	}
	if len(im.ClusterWeights) == 0 {
		return
	}
	positive := false
	for _, c := range slices.Sorted(maps.Keys(im.ClusterWeights)) {
		w := im.ClusterWeights[c]
		cp := fmt.Sprintf("%s.clusterWeights[%s]", p, c)
		if !ValidClusterName(c) {
			f.add(cp, "%q is not a valid cluster name", c)
		}
		if w < 0 || w > 1_000_000 {
			f.add(cp, "%d is not in 0-1000000", w)
		}
		positive = positive || w > 0
	}
	if !positive {
		f.add(p+".clusterWeights", "at least one weight must be above 0 (leave it empty to pick every cluster alike)")
	}
}

func validatePath(f *fieldErrs, p string, m *PathMatch) {
	switch m.Type {
	case PathExact, PathPrefix:
		if !strings.HasPrefix(m.Value, "/") {
			f.add(p+".value", "%q must start with '/'", m.Value)
		}
	case PathRegularExpression:
		if _, err := regexp.Compile(m.Value); err != nil {
			f.add(p+".value", "invalid regular expression: %v", err)
		}
	default:
		f.add(p+".type", "must be Exact, PathPrefix or RegularExpression, not %q", m.Type)
	}
}

func validateValueMatch(f *fieldErrs, p string, m ValueMatch) {
	switch m.Type {
	case ValueExact:
	case ValueRegularExpression:
		if _, err := regexp.Compile(m.Value); err != nil {
			f.add(p+".value", "invalid regular expression: %v", err)
		}
	default:
		f.add(p+".type", "must be Exact or RegularExpression, not %q", m.Type)
	}
}

// Validate checks a target group and its targets.
func (t *TargetGroup) Validate() error {
	var f fieldErrs
	validateMeta(&f, &t.Meta)
	switch t.Protocol {
	case ProtocolHTTP, ProtocolHTTPS, ProtocolTCP:
	default:
		f.add("protocol", "must be HTTP, HTTPS or TCP, not %q", t.Protocol)
	}
	switch t.ProtocolVersion {
	case HTTP1, HTTP2, GRPC:
	default:
		f.add("protocolVersion", "must be HTTP1, HTTP2 or GRPC, not %q", t.ProtocolVersion)
	}
	if t.Port < 0 || t.Port > 65535 {
		f.add("port", "%d is not in 0-65535", t.Port)
	}
	validateHealthCheck(&f, &t.HealthCheck)
	for i, tg := range t.Targets {
		p := fmt.Sprintf("targets[%d]", i)
		if _, err := netip.ParseAddr(tg.Address); err != nil {
			f.add(p+".address", "%q is not an IP address", tg.Address)
		}
		if tg.Port < 0 || tg.Port > 65535 {
			f.add(p+".port", "%d is not in 0-65535", tg.Port)
		} else if tg.Port == 0 && t.Port == 0 {
			f.add(p+".port", "required when the target group has no port")
		}
		switch {
		case tg.Cluster == "":
			f.add(p+".cluster", "required")
		case t.Owner != "" && tg.Cluster != t.Owner:
			f.add(p+".cluster", "%q is not the owner %q: a cluster names targets only in its own cluster", tg.Cluster, t.Owner)
		}
		switch tg.State {
		case TargetActive, TargetDraining:
		default:
			f.add(p+".state", "must be Active or Draining, not %q", tg.State)
		}
	}
	return f.list.err()
}

// HealthCheckRanges are the ranges Lattice accepts for a health check's
// numbers, by field (0 means "use the default"): the one list the model's
// validation and the translator's TargetGroupPolicy check both read.
var HealthCheckRanges = map[string][2]int32{
	"port":                    {1, 65535},
	"intervalSeconds":         {5, 300},
	"timeoutSeconds":          {1, 120},
	"healthyThresholdCount":   {2, 10},
	"unhealthyThresholdCount": {2, 10},
}

func validateHealthCheck(f *fieldErrs, h *HealthCheck) {
	check := func(field string, v int32) {
		if r := HealthCheckRanges[field]; v != 0 && (v < r[0] || v > r[1]) {
			f.add("healthCheck."+field, "%d is not in %d-%d", v, r[0], r[1])
		}
	}
	check("port", h.Port)
	check("intervalSeconds", h.IntervalSeconds)
	check("timeoutSeconds", h.TimeoutSeconds)
	check("healthyThresholdCount", h.HealthyThresholdCount)
	check("unhealthyThresholdCount", h.UnhealthyThresholdCount)
	switch {
	case h.Path != "" && !strings.HasPrefix(h.Path, "/"):
		f.add("healthCheck.path", "%q must start with '/'", h.Path)
	case strings.ContainsFunc(h.Path, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		f.add("healthCheck.path", "%q must not contain spaces or control characters", h.Path)
	}
	if h.Matcher != "" {
		if err := validateMatcher(h.Matcher); err != nil {
			f.add("healthCheck.matcher", "%v", err)
		}
	}
	if h.Protocol != "" {
		if err := CheckHealthProtocol(h.Protocol); err != nil {
			f.add("healthCheck.protocol", "%v", err)
		}
	}
	if h.ProtocolVersion != "" {
		if err := CheckHealthProtocolVersion(h.ProtocolVersion); err != nil {
			f.add("healthCheck.protocolVersion", "%v", err)
		}
	}
}

// CheckHealthProtocol says why p is not a health check's protocol (HTTP or
// HTTPS), nil when it is one; CheckHealthProtocolVersion likewise for the
// version (HTTP1 or HTTP2). The model's validation and the translator's
// TargetGroupPolicy check both ask them.
func CheckHealthProtocol(p Protocol) error {
	switch p {
	case ProtocolHTTP, ProtocolHTTPS:
		return nil
	}
	return fmt.Errorf("must be HTTP or HTTPS, not %q", p)
}

// CheckHealthProtocolVersion: see CheckHealthProtocol.
func CheckHealthProtocolVersion(v ProtocolVersion) error {
	switch v {
	case HTTP1, HTTP2:
		return nil
	}
	return fmt.Errorf("must be HTTP1 or HTTP2, not %q", v)
}

// ParseMatcher parses a health-check matcher ("200", "200,202", "200-299")
// into inclusive ranges of status codes.
func ParseMatcher(s string) ([][2]int, error) {
	var out [][2]int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := parseStatus(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parseStatus(hi); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("range %q is backwards", part)
			}
		}
		out = append(out, [2]int{a, b})
	}
	return out, nil
}

func validateMatcher(s string) error {
	_, err := ParseMatcher(s)
	return err
}

func parseStatus(s string) (int, error) {
	var n int
	if len(s) != 3 {
		return 0, fmt.Errorf("%q is not a status code in 200-499", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a status code in 200-499", s)
		}
		n = n*10 + int(c-'0')
	}
	if n < 200 || n > 499 {
		return 0, fmt.Errorf("%q is not a status code in 200-499", s)
	}
	return n, nil
}

// validHostname reports whether s is a DNS name (lower-case labels of
// alphanumerics and '-'), optionally with a leading "*." wildcard label.
func validHostname(s string, wildcard bool) bool {
	if wildcard {
		s = strings.TrimPrefix(s, "*.")
	}
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if !ValidLabel(label) {
			return false
		}
	}
	return true
}
