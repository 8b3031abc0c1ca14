package router

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/balancer"
)

// DefaultRetryBackoff is the least wait before a retry when the rule names
// none.
const DefaultRetryBackoff = 25 * time.Millisecond

// RetryPolicy is a compiled model.Retry.
type RetryPolicy struct {
	// Attempts is the most retries after the first try.
	Attempts int
	// Backoff is the least wait before the first retry.
	Backoff time.Duration
	// codes has bit c-400 set for each retried status c in 400-599.
	codes [4]uint64
}

// RetriesStatus reports whether a response with status code is retried.
func (p *RetryPolicy) RetriesStatus(code int) bool {
	c := code - 400
	return c >= 0 && c < 200 && p.codes[c/64]&(1<<(c%64)) != 0
}

func compileRetry(r *model.Retry) (*RetryPolicy, error) {
	if r.Attempts < 1 || r.Attempts > model.MaxRetryAttempts {
		return nil, fieldError("retry.attempts", "%d is not in 1-%d", r.Attempts, model.MaxRetryAttempts)
	}
	p := &RetryPolicy{Attempts: r.Attempts, Backoff: time.Duration(r.Backoff)}
	if p.Backoff <= 0 {
		p.Backoff = DefaultRetryBackoff
	}
	for i, c := range r.Codes {
		if c < 400 || c > 599 {
			return nil, fieldError(fmt.Sprintf("retry.codes[%d]", i), "%d is not in 400-599", c)
		}
		c -= 400
		p.codes[c/64] |= 1 << (c % 64)
	}
	return p, nil
}

// Session is compiled session persistence: it finds the target a session
// token names among the route's backends. Tokens are opaque: a hash of the
// target's cluster and address, so they stay valid across route tables and
// proxies while the target exists, followed by the session's expiry when it
// has an absolute timeout.
type Session struct {
	// Cookie is true for cookie sessions, false for header sessions.
	Cookie bool
	// Name is the cookie or header name.
	Name            string
	AbsoluteTimeout time.Duration
	// Permanent cookies get a Max-Age of AbsoluteTimeout.
	Permanent bool

	byKey  map[string]sessionTarget
	secret []byte
}

type sessionTarget struct {
	backend *Backend
	target  *Target
}

// compileSession indexes the targets of route's backends. It must run after
// the backends are compiled.
func compileSession(sp *model.SessionPersistence, route *Rule, secret []byte) (*Session, error) {
	s := &Session{
		Name:            sp.Name,
		AbsoluteTimeout: time.Duration(sp.AbsoluteTimeout),
		Permanent:       sp.Permanent,
		byKey:           map[string]sessionTarget{},
		secret:          secret,
	}
	switch sp.Type {
	case model.SessionCookie:
		s.Cookie = true
	case model.SessionHeader:
	default:
		return nil, fieldError("sessionPersistence.type", "must be Cookie or Header, not %q", sp.Type)
	}
	if !httpguts.ValidHeaderFieldName(sp.Name) {
		return nil, fieldError("sessionPersistence.name", "%q is not a valid cookie or header name", sp.Name)
	}
	for i := range route.backends {
		b := &route.backends[i]
		if b.group == nil {
			continue
		}
		for j := range b.group.targets {
			t := &b.group.targets[j]
			key := s.key(t)
			if _, dup := s.byKey[key]; !dup {
				s.byKey[key] = sessionTarget{b, t}
			}
		}
	}
	return s, nil
}

// key is the opaque name of a target in session tokens: a MAC of its
// cluster and address under the table's session secret, so that it is the
// same on every proxy and across table updates, but no client can name a
// target of its choosing.
func (s *Session) key(t *Target) string {
	return s.mac("target\x00" + t.Cluster + "\x00" + t.Addr)
}

// mac is a truncated HMAC-SHA256 of msg under the session secret, base64.
func (s *Session) mac(msg string) string {
	h := hmac.New(sha256.New, s.secret)
	h.Write([]byte(msg))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:12])
}

// Lookup returns the backend and target the session token names, or nil
// when the token is malformed, forged or expired, or names a target this
// route does not send new requests to: one no longer in its groups,
// draining, or failing its health checks or ejected.
func (s *Session) Lookup(token string, now time.Time) (*Backend, *Target) {
	key, rest, hasExpiry := strings.Cut(token, ".")
	if hasExpiry {
		expiry, sig, ok := strings.Cut(rest, ".")
		if !ok || !hmac.Equal([]byte(sig), []byte(s.mac("expiry\x00"+key+"."+expiry))) {
			return nil, nil
		}
		sec, err := strconv.ParseInt(expiry, 10, 64)
		if err != nil || now.Unix() >= sec {
			return nil, nil
		}
	} else if s.AbsoluteTimeout > 0 {
		return nil, nil
	}
	st, ok := s.byKey[key]
	if !ok || !st.target.Health.Routable() {
		// Gone, draining or unhealthy: the caller balances instead.
		return nil, nil
	}
	return st.backend, st.target
}

// Token returns the token of a session starting now on t, or "" when t is
// not one of the route's targets. With an absolute timeout the token
// carries its expiry, signed so that a client cannot extend it.
func (s *Session) Token(t *Target, now time.Time) string {
	key := s.key(t)
	if _, ok := s.byKey[key]; !ok {
		return ""
	}
	if s.AbsoluteTimeout > 0 {
		// At least a second ahead: expiries are whole seconds.
		expiry := strconv.FormatInt(max(now.Add(s.AbsoluteTimeout).Unix(), now.Unix()+1), 10)
		return key + "." + expiry + "." + s.mac("expiry\x00"+key+"."+expiry)
	}
	return key
}

// compileRule compiles a rule's action, filters, timeouts, retries and
// session persistence into its route.
func (b *builder) compileRule(rule *model.Rule) (*Rule, error) {
	var route *Rule
	a := &rule.Action
	if a.Forward == nil && a.FixedResponse == nil && slices.ContainsFunc(rule.Filters, func(f model.Filter) bool { return f.Redirect != nil }) {
		// Nothing after the redirect: a route that picks no backend.
		route = &Rule{weights: balancer.NewWeighted(nil)}
	} else {
		var err error
		if route, err = b.compileAction(a, rule.Locality); err != nil {
			return nil, err
		}
	}
	var err error
	if route.Filters, err = b.compileFilters(rule.Filters); err != nil {
		return nil, inField("filters", err)
	}
	if a.Forward != nil {
		for i := range a.Forward.Backends {
			if route.backends[i].Filters, err = b.compileFilters(a.Forward.Backends[i].Filters); err != nil {
				return nil, inField(fmt.Sprintf("action.forward.backends[%d].filters", i), err)
			}
		}
	}
	if t := rule.Timeouts; t != nil {
		if t.Request < 0 || t.BackendRequest < 0 {
			return nil, fieldError("timeouts", "negative timeout")
		}
		route.RequestTimeout, route.BackendTimeout = time.Duration(t.Request), time.Duration(t.BackendRequest)
	}
	if rule.Retry != nil {
		if route.Retry, err = compileRetry(rule.Retry); err != nil {
			return nil, err
		}
	}
	if rule.SessionPersistence != nil {
		if route.Session, err = compileSession(rule.SessionPersistence, route, b.sessionSecret); err != nil {
			return nil, err
		}
	}
	return route, nil
}

// Backends returns the route's weighted backends. Callers must not modify
// them.
func (r *Rule) Backends() []Backend { return r.backends }
