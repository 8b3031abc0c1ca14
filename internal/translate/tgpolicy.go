package translate

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// only. A Service targeted by several policies takes the oldest valid one
// (by creationTimestamp, then namespace and name), and the others are
// Conflicted there. An invalid policy applies nowhere.
//
// An Incremental keeps the resolution: a call decides again only the
// Services that a changed policy targets (before or after the change) or
// that changed themselves, and makes again only the statuses of the
// policies targeting those.
func (t *translator) resolveTargetGroupPolicies() {
	if len(t.in.TargetGroupPolicies) == 0 {
		if t.inc != nil {
			t.inc.x.tgp = nil
		}
		return
	}
	var r *tgpResolution
	if t.inc != nil && t.inc.fast && t.inc.x.tgp != nil {
		r = t.inc.x.tgp
		t.updateTargetGroupPolicies(r)
	} else {
		r = t.newTGPResolution()
	}
	if t.inc != nil {
		t.inc.x.tgp = r
	}
	t.tgPolicies = r.winners
	t.out.Status.TargetGroupPolicies = r.statuses
	for _, k := range r.withProblems {
		for _, p := range r.problems[k] {
			t.addProblem(p)
		}
	}
}

// tgpResolution is the resolution of every TargetGroupPolicy of an Input.
type tgpResolution struct {
	entries map[objectKey]*tgpEntry
	// byService are the policies that target each Service.
	byService map[types.NamespacedName][]objectKey
	// winners are the policies that apply, by Service.
	winners map[types.NamespacedName]*tgPolicy
	// statuses are every policy's, by namespace and name.
	statuses []PolicyStatus
	// problems are the policies' problems, of those in withProblems.
	problems     map[objectKey][]Problem
	withProblems []objectKey
}

// tgpEntry is what the resolution keeps of one policy: a copy, since an
// Incremental's caller may replace the Input's elements.
type tgpEntry struct {
	namespace, name string
	created         metav1.Time
	generation      int64
	refs            []gatewayv1.LocalPolicyTargetReference
	hc              model.HealthCheck
	// invalid says what is wrong with the policy's spec, which problems
	// name field by field; empty when it is valid.
	invalid  string
	problems []Problem
	// targets are the Services its refs name.
	targets []types.NamespacedName
}

// older orders policies as they compete for a Service.
func (e *tgpEntry) older(o *tgpEntry) int {
	return cmp.Or(e.created.Compare(o.created.Time), cmp.Compare(e.namespace, o.namespace), cmp.Compare(e.name, o.name))
}

// tgPolicy is the TargetGroupPolicy that applies to a Service.
type tgPolicy struct {
	name string
	hc   model.HealthCheck
}

// newTGPResolution resolves every policy of the Input.
func (t *translator) newTGPResolution() *tgpResolution {
	r := &tgpResolution{
		entries:   make(map[objectKey]*tgpEntry, len(t.in.TargetGroupPolicies)),
		byService: make(map[types.NamespacedName][]objectKey, len(t.in.TargetGroupPolicies)),
		winners:   make(map[types.NamespacedName]*tgPolicy, len(t.in.TargetGroupPolicies)),
		problems:  map[objectKey][]Problem{},
	}
	for i := range t.in.TargetGroupPolicies {
		r.add(newTGPEntry(&t.in.TargetGroupPolicies[i]))
	}
	for svc := range r.byService {
		t.decide(r, svc)
	}
	keys := make([]objectKey, 0, len(r.entries))
	for k := range r.entries {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b objectKey) int {
		return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	r.statuses = make([]PolicyStatus, 0, len(keys))
	for _, k := range keys {
		st, problems := t.tgpStatus(r, r.entries[k])
		r.statuses = append(r.statuses, st)
		r.setProblems(k, problems)
	}
	return r
}

// updateTargetGroupPolicies brings the last call's resolution up to date
// with the policies and Services that changed.
func (t *translator) updateTargetGroupPolicies(r *tgpResolution) {
	c := t.inc
	if len(c.tgpChanged) == 0 && len(c.tgpServices) == 0 {
		return
	}
	services := map[types.NamespacedName]bool{}
	for _, svc := range c.tgpServices {
		services[svc] = true
	}
	policies := map[objectKey]bool{}
	for _, k := range c.tgpChanged {
		policies[k] = true
		if old := r.entries[k]; old != nil {
			for _, svc := range old.targets {
				services[svc] = true
			}
			r.remove(k)
		}
		if i, ok := c.tgpAt[k]; ok {
			e := newTGPEntry(&t.in.TargetGroupPolicies[i])
			r.add(e)
			for _, svc := range e.targets {
				services[svc] = true
			}
		}
	}
	for svc := range services {
		t.decide(r, svc)
		for _, k := range r.byService[svc] {
			policies[k] = true
		}
	}
	for k := range policies {
		c.tgpRemade = append(c.tgpRemade, ref(kindTargetGroupPolicy, k.namespace, k.name))
		i, found := slices.BinarySearchFunc(r.statuses, k, func(st PolicyStatus, k objectKey) int {
			return cmp.Or(cmp.Compare(st.Namespace, k.namespace), cmp.Compare(st.Name, k.name))
		})
		e := r.entries[k]
		switch {
		case e == nil && found:
			r.statuses = slices.Delete(r.statuses, i, i+1)
		case e != nil:
			st, problems := t.tgpStatus(r, e)
			if found {
				r.statuses[i] = st
			} else {
				r.statuses = slices.Insert(r.statuses, i, st)
			}
			r.setProblems(k, problems)
			continue
		}
		r.setProblems(k, nil)
	}
}

// add adds e to r's entries and index.
func (r *tgpResolution) add(e *tgpEntry) {
	k := objectKey{kindTargetGroupPolicy, e.namespace, e.name}
	r.entries[k] = e
	for _, svc := range e.targets {
		r.byService[svc] = append(r.byService[svc], k)
	}
}

// remove removes policy k from r's entries and index.
func (r *tgpResolution) remove(k objectKey) {
	for _, svc := range r.entries[k].targets {
		removeFromList(r.byService, svc, k)
	}
	delete(r.entries, k)
}

// setProblems records policy k's problems.
func (r *tgpResolution) setProblems(k objectKey, problems []Problem) {
	_, had := r.problems[k]
	switch {
	case len(problems) > 0:
		r.problems[k] = problems
		if !had {
			r.withProblems = append(r.withProblems, k)
		}
	case had:
		delete(r.problems, k)
		r.withProblems = slices.DeleteFunc(r.withProblems, func(o objectKey) bool { return o == k })
	}
}

// decide sets the policy that applies to Service svc: the oldest valid one
// targeting it, if it exists.
func (t *translator) decide(r *tgpResolution, svc types.NamespacedName) {
	var w *tgpEntry
	if t.kubeService(svc) != nil {
		for _, k := range r.byService[svc] {
			if e := r.entries[k]; e.invalid == "" && (w == nil || e.older(w) < 0) {
				w = e
			}
		}
	}
	if w == nil {
		delete(r.winners, svc)
		return
	}
	r.winners[svc] = &tgPolicy{name: w.name, hc: w.hc}
}

// newTGPEntry checks policy p's spec.
func newTGPEntry(p *v1alpha1.TargetGroupPolicy) *tgpEntry {
	e := &tgpEntry{
		namespace: p.Namespace, name: p.Name, created: p.CreationTimestamp, generation: p.Generation,
		refs: slices.Clone(p.Spec.TargetRefs),
	}
	src := ref(kindTargetGroupPolicy, p.Namespace, p.Name)
	e.hc, e.invalid, e.problems = policyHealthCheck(p.Spec.HealthCheck, src)
	if n := len(p.Spec.TargetRefs); n == 0 || n > maxTargetRefs {
		pr := Problem{Object: src, Field: "spec.targetRefs", Reason: string(gatewayv1.PolicyReasonInvalid),
			Message: fmt.Sprintf("a TargetGroupPolicy needs 1 to %d targetRefs, not %d", maxTargetRefs, n)}
		e.problems = append(e.problems, pr)
		if e.invalid == "" {
			e.invalid = pr.Field + ": " + pr.Message
		}
	}
	for _, d := range policyTargets(p) {
		e.targets = append(e.targets, types.NamespacedName{Namespace: d.namespace, Name: d.name})
	}
	return e
}

// tgpStatus is policy e's status, one ancestor per target, and its
// problems.
func (t *translator) tgpStatus(r *tgpResolution, e *tgpEntry) (PolicyStatus, []Problem) {
	src := ref(kindTargetGroupPolicy, e.namespace, e.name)
	st := PolicyStatus{Namespace: e.namespace, Name: e.name, Generation: e.generation}
	problems := slices.Clone(e.problems)
	problem := func(field, reason, format string, args ...any) string {
		p := Problem{Object: src, Field: field, Reason: reason, Message: fmt.Sprintf(format, args...)}
		if !slices.Contains(problems, p) {
			problems = append(problems, p)
		}
		return p.Message
	}
	outcome := func(tr gatewayv1.LocalPolicyTargetReference, reason, message string) {
		for _, a := range st.Ancestors {
			if *a.AncestorRef.Group == tr.Group && *a.AncestorRef.Kind == tr.Kind && a.AncestorRef.Name == tr.Name {
				return // the same target twice: said once
			}
		}
		st.Ancestors = append(st.Ancestors, PolicyAncestorStatus{
			AncestorRef: gatewayv1.ParentReference{
				Group: ptr(tr.Group), Kind: ptr(tr.Kind),
				Namespace: ptr(gatewayv1.Namespace(e.namespace)), Name: tr.Name,
			},
			ControllerName: ServiceNetworkController,
			Conditions: []Condition{{
				Type: string(gatewayv1.PolicyConditionAccepted), Status: reason == string(gatewayv1.PolicyReasonAccepted),
				Reason: reason, Message: message,
			}},
		})
	}
	invalid, accepted := string(gatewayv1.PolicyReasonInvalid), string(gatewayv1.PolicyReasonAccepted)
	for i, tr := range e.refs {
		field := fmt.Sprintf("spec.targetRefs[%d]", i)
		key := types.NamespacedName{Namespace: e.namespace, Name: string(tr.Name)}
		switch w := r.winners[key]; {
		case tr.Group != "":
			outcome(tr, invalid, problem(field+".group", invalid, "group %q: a TargetGroupPolicy targets Services (group \"\")", tr.Group))
		case tr.Kind != "Service":
			outcome(tr, invalid, problem(field+".kind", invalid, "kind %q: a TargetGroupPolicy targets Services only", tr.Kind))
		case e.invalid != "":
			outcome(tr, invalid, e.invalid+"; the Service's target groups keep the default health check until it is fixed")
		case t.kubeService(key) == nil:
			notFound := string(gatewayv1.PolicyReasonTargetNotFound)
			outcome(tr, notFound, problem(field, notFound, "Service %s not found", key))
		case w != nil && w.name != e.name:
			conflicted := string(gatewayv1.PolicyReasonConflicted)
			outcome(tr, conflicted, problem(field, conflicted, "Service %s already has TargetGroupPolicy %s, which is older", key, w.name))
		default:
			outcome(tr, accepted, fmt.Sprintf("the policy applies to the target groups of Service %s", key))
		}
	}
	return st, problems
}

// policyHealthCheck maps a policy's health check onto the model, field for
// field (unset fields stay zero: Lattice's defaults), and reports every
// field out of the CRD's bounds as a problem. invalid, when not empty, says
// what is wrong, and problems name each field.
func policyHealthCheck(h *v1alpha1.HealthCheckPolicy, src model.SourceRef) (hc model.HealthCheck, invalid string, problems []Problem) {
	if h == nil {
		return hc, "", nil
	}
	bad := func(field, format string, args ...any) {
		p := Problem{Object: src, Field: "spec.healthCheck." + field, Reason: string(gatewayv1.PolicyReasonInvalid), Message: fmt.Sprintf(format, args...)}
		problems = append(problems, p)
		if invalid == "" {
			invalid = p.Field + ": " + p.Message
		}
	}
	number := func(field string, v *int32) int32 {
		if v == nil {
			return 0
		}
		if r := model.HealthCheckRanges[field]; *v < r[0] || *v > r[1] {
			bad(field, "%d is not in %d-%d", *v, r[0], r[1])
			return 0
		}
		return *v
	}
	hc.Enabled = h.Enabled
	hc.IntervalSeconds = number("intervalSeconds", h.IntervalSeconds)
	hc.TimeoutSeconds = number("timeoutSeconds", h.TimeoutSeconds)
	hc.HealthyThresholdCount = number("healthyThresholdCount", h.HealthyThresholdCount)
	hc.UnhealthyThresholdCount = number("unhealthyThresholdCount", h.UnhealthyThresholdCount)
	hc.Port = number("port", h.Port)
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
		if err := model.CheckHealthProtocol(model.Protocol(*p)); err != nil {
			bad("protocol", "%v", err)
		} else {
			hc.Protocol = model.Protocol(*p)
		}
	}
	if v := h.ProtocolVersion; v != nil {
		if err := model.CheckHealthProtocolVersion(model.ProtocolVersion(*v)); err != nil {
			bad("protocolVersion", "%v", err)
		} else {
			hc.ProtocolVersion = model.ProtocolVersion(*v)
		}
	}
	if invalid != "" {
		return model.HealthCheck{}, invalid, problems
	}
	return hc, "", nil
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
