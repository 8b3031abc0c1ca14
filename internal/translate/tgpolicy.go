package translate

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"

	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/model"
)

// kindTargetGroupPolicy is the kind of trellis.dev TargetGroupPolicies in
// source refs.
const kindTargetGroupPolicy = "TargetGroupPolicy"

// The TargetGroupPolicy CRD's patterns (api/v1alpha1), which files are held
// to as the API server holds objects.
var (
	statusMatchPattern = regexp.MustCompile(`^[2-4][0-9]{2}(-[2-4][0-9]{2})?(,[2-4][0-9]{2}(-[2-4][0-9]{2})?)*$`)
	healthPathPattern  = regexp.MustCompile(`^/[!-~]*$`)
)

// The TargetGroupPolicy CRD's bounds on strings.
const (
	maxStatusMatch = 256
	maxHealthPath  = 2048
)

// resolveTargetGroupPolicies decides which TargetGroupPolicy configures
// the target groups of each Service, before any target group is made, and
// the policies' status. A Service is looked up in its policy's namespace
// only. Policies are met oldest first (then by namespace and name): a
// Service targeted by several takes the first valid one, and the others
// are Conflicted there. An invalid policy applies nowhere.
func (t *translator) resolveTargetGroupPolicies() {
	if len(t.in.TargetGroupPolicies) == 0 {
		return
	}
	var x *Incremental
	if t.inc != nil {
		x = t.inc.x
		if r := x.tgp; r != nil && t.inc.fast && !x.tgpStale {
			// Nothing it depends on changed: the last call's, shared.
			t.tgPolicies = r.winners
			t.out.Status.TargetGroupPolicies = r.statuses
			for _, p := range r.problems {
				t.addProblem(p)
			}
			return
		}
	}
	problems := len(t.out.Problems)
	policies := sortedByName(t.in.TargetGroupPolicies, func(p *v1alpha1.TargetGroupPolicy) (string, string) { return p.Namespace, p.Name })
	slices.SortStableFunc(policies, func(a, b *v1alpha1.TargetGroupPolicy) int {
		return a.CreationTimestamp.Compare(b.CreationTimestamp.Time)
	})
	t.tgPolicies = map[types.NamespacedName]*tgPolicy{}
	for _, p := range policies {
		t.resolveTargetGroupPolicy(p)
	}
	st := t.out.Status.TargetGroupPolicies
	slices.SortFunc(st, func(a, b PolicyStatus) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	if x != nil {
		x.tgp = &tgpResolution{winners: t.tgPolicies, statuses: st, problems: slices.Clone(t.out.Problems[problems:])}
		x.tgpStale = false
	}
}

// tgpResolution is what resolveTargetGroupPolicies concluded, which an
// Incremental keeps for the next call.
type tgpResolution struct {
	winners  map[types.NamespacedName]*tgPolicy
	statuses []PolicyStatus
	problems []Problem
}

// tgPolicy is the TargetGroupPolicy that applies to a Service.
type tgPolicy struct {
	name string
	hc   model.HealthCheck
}

func (t *translator) resolveTargetGroupPolicy(p *v1alpha1.TargetGroupPolicy) {
	src := ref(kindTargetGroupPolicy, p.Namespace, p.Name)
	st := PolicyStatus{Namespace: p.Namespace, Name: p.Name, Generation: p.Generation}
	hc, invalid := t.policyHealthCheck(p.Spec.HealthCheck, src)
	if n := len(p.Spec.TargetRefs); n == 0 || n > maxTargetRefs {
		t.problem(src, "spec.targetRefs", string(gatewayv1.PolicyReasonInvalid), "a TargetGroupPolicy needs 1 to %d targetRefs, not %d", maxTargetRefs, n)
		if invalid == "" {
			invalid = fmt.Sprintf("spec.targetRefs: needs 1 to %d targetRefs, not %d", maxTargetRefs, n)
		}
	}
	outcome := func(tr gatewayv1.LocalPolicyTargetReference, reason, format string, args ...any) {
		anc := gatewayv1.ParentReference{
			Group: ptr(tr.Group), Kind: ptr(tr.Kind),
			Namespace: ptr(gatewayv1.Namespace(p.Namespace)), Name: tr.Name,
		}
		for _, a := range st.Ancestors {
			if *a.AncestorRef.Group == tr.Group && *a.AncestorRef.Kind == tr.Kind && a.AncestorRef.Name == tr.Name {
				return // the same target twice: said once
			}
		}
		st.Ancestors = append(st.Ancestors, PolicyAncestorStatus{
			AncestorRef:    anc,
			ControllerName: ServiceNetworkController,
			Conditions: []Condition{{
				Type: string(gatewayv1.PolicyConditionAccepted), Status: reason == string(gatewayv1.PolicyReasonAccepted),
				Reason: reason, Message: fmt.Sprintf(format, args...),
			}},
		})
	}
	for i, tr := range p.Spec.TargetRefs {
		field := fmt.Sprintf("spec.targetRefs[%d]", i)
		switch {
		case tr.Group != "":
			pr := t.problem(src, field+".group", string(gatewayv1.PolicyReasonInvalid), "group %q: a TargetGroupPolicy targets Services (group \"\")", tr.Group)
			outcome(tr, pr.Reason, "%s", pr.Message)
			continue
		case tr.Kind != "Service":
			pr := t.problem(src, field+".kind", string(gatewayv1.PolicyReasonInvalid), "kind %q: a TargetGroupPolicy targets Services only", tr.Kind)
			outcome(tr, pr.Reason, "%s", pr.Message)
			continue
		case invalid != "":
			outcome(tr, string(gatewayv1.PolicyReasonInvalid), "%s; the Service's target groups keep the default health check until it is fixed", invalid)
			continue
		}
		key := types.NamespacedName{Namespace: p.Namespace, Name: string(tr.Name)}
		if t.kubeService(key) == nil {
			pr := t.problem(src, field, string(gatewayv1.PolicyReasonTargetNotFound), "Service %s not found", key)
			outcome(tr, pr.Reason, "%s", pr.Message)
			continue
		}
		if w := t.tgPolicies[key]; w != nil {
			if w.name == p.Name {
				continue // the same target twice
			}
			pr := t.problem(src, field, string(gatewayv1.PolicyReasonConflicted), "Service %s already has TargetGroupPolicy %s, which is older", key, w.name)
			outcome(tr, pr.Reason, "%s", pr.Message)
			continue
		}
		t.tgPolicies[key] = &tgPolicy{name: p.Name, hc: hc}
		outcome(tr, string(gatewayv1.PolicyReasonAccepted), "the policy applies to the target groups of Service %s", key)
	}
	t.out.Status.TargetGroupPolicies = append(t.out.Status.TargetGroupPolicies, st)
}

// policyHealthCheck maps a policy's health check onto the model, field for
// field (unset fields stay zero: Lattice's defaults), and reports every
// field out of the CRD's bounds as a problem. invalid, when not empty, says
// what is wrong.
func (t *translator) policyHealthCheck(h *v1alpha1.HealthCheckPolicy, src model.SourceRef) (hc model.HealthCheck, invalid string) {
	if h == nil {
		return hc, ""
	}
	bad := func(field, format string, args ...any) {
		p := t.problem(src, "spec.healthCheck."+field, string(gatewayv1.PolicyReasonInvalid), format, args...)
		if invalid == "" {
			invalid = p.Field + ": " + p.Message
		}
	}
	number := func(field string, v *int32, lo, hi int32) int32 {
		if v == nil {
			return 0
		}
		if *v < lo || *v > hi {
			bad(field, "%d is not in %d-%d", *v, lo, hi)
			return 0
		}
		return *v
	}
	hc.Enabled = h.Enabled
	hc.IntervalSeconds = number("intervalSeconds", h.IntervalSeconds, 5, 300)
	hc.TimeoutSeconds = number("timeoutSeconds", h.TimeoutSeconds, 1, 120)
	hc.HealthyThresholdCount = number("healthyThresholdCount", h.HealthyThresholdCount, 2, 10)
	hc.UnhealthyThresholdCount = number("unhealthyThresholdCount", h.UnhealthyThresholdCount, 2, 10)
	hc.Port = number("port", h.Port, 1, 65535)
	if m := h.StatusMatch; m != nil {
		switch _, err := model.ParseMatcher(*m); {
		case len(*m) > maxStatusMatch:
			bad("statusMatch", "is %d bytes long; at most %d are allowed", len(*m), maxStatusMatch)
		case !statusMatchPattern.MatchString(*m):
			bad("statusMatch", "%q is not a list of status codes (200-499) and ranges, like \"200\", \"200,202\" or \"200-299\"", *m)
		case err != nil:
			bad("statusMatch", "%v", err)
		default:
			hc.Matcher = *m
		}
	}
	if p := h.Path; p != nil {
		switch {
		case len(*p) > maxHealthPath:
			bad("path", "is %d bytes long; at most %d are allowed", len(*p), maxHealthPath)
		case !healthPathPattern.MatchString(*p):
			bad("path", "%q must start with '/' and hold only printable ASCII without spaces", *p)
		default:
			hc.Path = *p
		}
	}
	if p := h.Protocol; p != nil {
		switch model.Protocol(*p) {
		case model.ProtocolHTTP, model.ProtocolHTTPS:
			hc.Protocol = model.Protocol(*p)
		default:
			bad("protocol", "must be HTTP or HTTPS, not %q", *p)
		}
	}
	if v := h.ProtocolVersion; v != nil {
		switch model.ProtocolVersion(*v) {
		case model.HTTP1, model.HTTP2:
			hc.ProtocolVersion = model.ProtocolVersion(*v)
		default:
			bad("protocolVersion", "must be HTTP1 or HTTP2, not %q", *v)
		}
	}
	if invalid != "" {
		return model.HealthCheck{}, invalid
	}
	return hc, ""
}

// policyTargets are the Services a TargetGroupPolicy names, for the
// Incremental: a change of the policy re-translates the routes that use
// them, before and after the change.
func policyTargets(p *v1alpha1.TargetGroupPolicy) []dep {
	var out []dep
	for _, tr := range p.Spec.TargetRefs {
		if tr.Group == "" && tr.Kind == "Service" {
			out = append(out, dep{"Service", p.Namespace, string(tr.Name)})
		}
	}
	slices.SortFunc(out, func(a, b dep) int { return cmp.Compare(a.name, b.name) })
	return slices.Compact(out)
}
