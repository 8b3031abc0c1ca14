package kubernetes

import (
	"cmp"
	"maps"
	"slices"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/translate"
)

// policyStatusState is what a policy kind's status writer keeps between
// reconciles: the policies whose status it found to differ and has not
// written yet, and the resourceVersion at which each policy's status was
// last written or found right (so that the event of its own write does not
// have it compared again).
type policyStatusState struct {
	mu       sync.Mutex
	pending  map[types.NamespacedName]bool
	versions map[types.NamespacedName]string
}

// policyObject is a policy kind of ours: its objects have a
// gatewayv1.PolicyStatus.
type policyObject[T any] interface {
	*T
	client.Object
}

// policyWrites are the status writes of the policies of kind (list, in the
// input in), whose statuses the translator gives in name order. With all
// it compares every policy's status; otherwise only those the translator
// named (Output.RetranslatedPolicies of kind), those the events named
// (changed) at another resourceVersion than their status was last written
// or found right at (created again, say, or their status changed by
// another), and those still to be written, so that a reconcile among
// 10,000 policies compares what changed. It returns the writes and how
// many policies it compared.
func policyWrites[T any, P policyObject[T]](r *Reconciler, s *policyStatusState, kind string, list []T, statuses []translate.PolicyStatus,
	out *translate.Output, all bool, changed map[objectKey]bool, now metav1.Time, status func(P) *gatewayv1.PolicyStatus) ([]write, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(statuses) == 0 {
		clear(s.pending)
		clear(s.versions)
		return nil, 0
	}
	if s.pending == nil {
		s.pending, s.versions = map[types.NamespacedName]bool{}, map[types.NamespacedName]string{}
	}
	nameOf := func(i int) (string, string) {
		o := P(&list[i])
		return o.GetNamespace(), o.GetName()
	}
	// Where each policy is in list: the kept input's index, when list is
	// its list.
	var at map[types.NamespacedName]int
	if kk := r.kept.kinds[kind]; kk != nil && kk.index != nil && len(kk.index) == len(list) {
		at = kk.index
	} else {
		at = make(map[types.NamespacedName]int, len(list))
		for i := range list {
			ns, name := nameOf(i)
			at[types.NamespacedName{Namespace: ns, Name: name}] = i
		}
	}
	compare := maps.Clone(s.pending)
	if !all {
		for _, p := range out.RetranslatedPolicies {
			if p.Kind == kind {
				compare[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = true
			}
		}
		for k := range changed {
			if k.kind != kind {
				continue
			}
			key := types.NamespacedName{Namespace: k.namespace, Name: k.name}
			i, ok := at[key]
			if !ok {
				delete(s.versions, key) // gone
				continue
			}
			if rv, seen := s.versions[key]; !seen || rv != P(&list[i]).GetResourceVersion() {
				compare[key] = true
			}
		}
		if len(compare) == 0 {
			return nil, 0
		}
	} else if len(s.versions) > len(at) {
		maps.DeleteFunc(s.versions, func(k types.NamespacedName, _ string) bool { _, ok := at[k]; return !ok })
	}
	// The statuses to compare: all, or those named, found by binary
	// search.
	if !all {
		named := statuses
		statuses = nil
		for _, key := range slices.SortedFunc(maps.Keys(compare), func(a, b types.NamespacedName) int {
			return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
		}) {
			if j, found := slices.BinarySearchFunc(named, key, func(st translate.PolicyStatus, k types.NamespacedName) int {
				return cmp.Or(cmp.Compare(st.Namespace, k.Namespace), cmp.Compare(st.Name, k.Name))
			}); found {
				statuses = append(statuses, named[j])
			}
		}
	}
	var writes []write
	for _, st := range statuses {
		key := types.NamespacedName{Namespace: st.Namespace, Name: st.Name}
		i, ok := at[key]
		if !ok || i >= len(list) {
			continue
		}
		if ns, name := nameOf(i); ns != key.Namespace || name != key.Name {
			continue
		}
		s.pending[key] = true
		writes = append(writes, write{key: objectKey{kind, key.Namespace, key.Name}, obj: P(&list[i]), steps: []change{{status: true, apply: func(o client.Object) bool {
			p := o.(P)
			have := status(p)
			return setIfDifferent(have, policyStatus(st, *have, p.GetGeneration(), now))
		}}}, done: func(_, after string) {
			s.mu.Lock()
			delete(s.pending, key)
			s.versions[key] = after
			s.mu.Unlock()
		}})
	}
	for key := range s.pending {
		if _, ok := at[key]; !ok {
			delete(s.pending, key) // gone
		}
	}
	for key := range compare {
		if _, ok := at[key]; !ok {
			delete(s.versions, key)
		}
	}
	return writes, len(statuses)
}

// targetGroupPolicyWrites are the status writes of the TargetGroupPolicies:
// per target Service, whether the policy applies there (Accepted), and why
// not (Conflicted, TargetNotFound, Invalid).
func (r *Reconciler) targetGroupPolicyWrites(in *translate.Input, out *translate.Output, all bool, changed map[objectKey]bool, now metav1.Time) ([]write, int) {
	return policyWrites(r, &r.tgpStatus, "TargetGroupPolicy", in.TargetGroupPolicies, out.Status.TargetGroupPolicies, out, all, changed, now,
		func(p *v1alpha1.TargetGroupPolicy) *gatewayv1.PolicyStatus { return &p.Status })
}

// authPolicyWrites are the status writes of the AuthPolicies: per Gateway
// the policy reaches (or target it misses), whether it applies there.
func (r *Reconciler) authPolicyWrites(in *translate.Input, out *translate.Output, all bool, changed map[objectKey]bool, now metav1.Time) ([]write, int) {
	return policyWrites(r, &r.authStatus, "AuthPolicy", in.AuthPolicies, out.Status.Policies, out, all, changed, now,
		func(p *v1alpha1.AuthPolicy) *gatewayv1.PolicyStatus { return &p.Status })
}
