package auth

import "strconv"

// Decision is the outcome of evaluating one policy.
type Decision int

// The decisions of one policy.
const (
	// ImplicitDeny is a request no statement applies to.
	ImplicitDeny Decision = iota
	// Allow is a request an Allow statement applies to, and no Deny.
	Allow
	// ExplicitDeny is a request a Deny statement applies to.
	ExplicitDeny
)

// String returns the decision's name, such as "ExplicitDeny".
func (d Decision) String() string {
	switch d {
	case ImplicitDeny:
		return "ImplicitDeny"
	case Allow:
		return "Allow"
	case ExplicitDeny:
		return "ExplicitDeny"
	}
	return "Decision(" + strconv.Itoa(int(d)) + ")"
}

// Evaluate evaluates the policy alone against r, and returns the decision
// and the index of the statement that decided (-1 for ImplicitDeny).
// Statements are indexed in document order, the single-object form of
// Statement being statement 0. An explicit deny reports the first Deny that
// applies, an allow the first Allow that applies. A nil policy or request,
// or a request whose Action is neither ActionInvoke nor ActionConnect, is
// implicitly denied. Evaluate does not allocate, beyond what r's Header and
// Query functions do.
func (p *Policy) Evaluate(r *Request) (Decision, int) {
	if p == nil || r == nil {
		return ImplicitDeny, -1
	}
	act := requestAction(r.Action)
	if act == 0 {
		return ImplicitDeny, -1
	}
	allowed := -1
	for i := range p.statements {
		s := &p.statements[i]
		if !s.deny && allowed >= 0 {
			continue // an Allow already applies; only a Deny can change that
		}
		if s.applies(act, r) {
			if s.deny {
				return ExplicitDeny, i
			}
			allowed = i
		}
	}
	if allowed >= 0 {
		return Allow, allowed
	}
	return ImplicitDeny, -1
}

// applies reports whether s applies to r, whose action is act: its action,
// principal, resource and conditions all match, checked in that order, the
// cheapest first.
func (s *statement) applies(act actionSet, r *Request) bool {
	if s.actions&act == 0 {
		return false
	}
	if !s.anyPrincipal {
		if r.Principal.anonymous() || !matchAny(s.principals, r.Principal.ID, "") {
			return false
		}
	}
	if a, b := r.resource(); !matchAny(s.resources, a, b) {
		return false
	}
	for i := range s.conditions {
		if !s.conditions[i].holds(r) {
			return false
		}
	}
	return true
}

// matchAny reports whether any of patterns matches the text a+b.
func matchAny(patterns []pattern, a, b string) bool {
	for i := range patterns {
		if patterns[i].match(a, b) {
			return true
		}
	}
	return false
}

// Level names where a request was denied, as access logs report it.
const (
	// LevelNetwork is the service network's policy.
	LevelNetwork = "Network"
	// LevelService is the service's policy.
	LevelService = "Service"
)

// Result is the outcome of Authorize.
type Result struct {
	Allowed  bool
	DeniedBy string // LevelNetwork or LevelService when denied
	Explicit bool   // the denial came from a Deny statement
}

// Authorize evaluates a request against a service network's policy and a
// service's policy (nil: that level's auth is off).
//
// An explicit deny at either level denies, the network's reported when both
// deny explicitly; otherwise a level that is on and does not allow denies
// implicitly, again the network's reported first. A request that passes
// every level that is on, or that meets no level that is on, is allowed.
func Authorize(network, service *Policy, r *Request) Result {
	netDecision, svcDecision := Allow, Allow
	if network != nil {
		netDecision, _ = network.Evaluate(r)
		if netDecision == ExplicitDeny {
			return Result{DeniedBy: LevelNetwork, Explicit: true}
		}
	}
	if service != nil {
		svcDecision, _ = service.Evaluate(r)
		if svcDecision == ExplicitDeny {
			return Result{DeniedBy: LevelService, Explicit: true}
		}
	}
	switch {
	case netDecision != Allow:
		return Result{DeniedBy: LevelNetwork}
	case svcDecision != Allow:
		return Result{DeniedBy: LevelService}
	}
	return Result{Allowed: true}
}

// Message is the body of the 403 answer for a denied request, in Lattice's
// wording, e.g.
// "AccessDeniedException: User: anonymous is not authorized to perform: trellis:Invoke on resource: inventory-default.my-hotel/api with an explicit deny in a service-based policy"
// or "... because no network-based policy allows trellis:Invoke". The user
// is "anonymous" for anonymous principals, else the principal ID. Message
// is "" for an allowed request.
func (res Result) Message(r *Request) string {
	if res.Allowed {
		return ""
	}
	if r == nil {
		r = &Request{}
	}
	user := r.Principal.ID
	if r.Principal.anonymous() {
		user = "anonymous"
	}
	a, b := r.resource()
	msg := "AccessDeniedException: User: " + user + " is not authorized to perform: " +
		r.Action + " on resource: " + a + b
	var level string
	switch res.DeniedBy {
	case LevelNetwork:
		level = "network-based policy"
	case LevelService:
		level = "service-based policy"
	default:
		return msg
	}
	if res.Explicit {
		return msg + " with an explicit deny in a " + level
	}
	return msg + " because no " + level + " allows " + r.Action
}
