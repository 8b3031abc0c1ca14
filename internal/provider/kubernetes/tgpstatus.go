package kubernetes

import (
	"cmp"
	"maps"
	"slices"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/translate"
)

// tgpStatusState is what the TargetGroupPolicies' status writer keeps
// between reconciles: the policies whose status it found to differ and has
// not written yet.
type tgpStatusState struct {
	mu      sync.Mutex
	pending map[types.NamespacedName]bool
}

// targetGroupPolicyWrites are the status writes of the TargetGroupPolicies:
// per target Service, whether the policy applies there (Accepted), and why
// not (Conflicted, TargetNotFound, Invalid). With all it compares every
// policy's status; otherwise only those the translator made again
// (Output.RetranslatedPolicies) and those still to be written, so that a
// reconcile among 10,000 policies compares what changed.
func (r *Reconciler) targetGroupPolicyWrites(in *translate.Input, out *translate.Output, all bool, now metav1.Time) []write {
	s := &r.tgpStatus
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(out.Status.TargetGroupPolicies) == 0 {
		clear(s.pending)
		return nil
	}
	if s.pending == nil {
		s.pending = map[types.NamespacedName]bool{}
	}
	compare := s.pending
	if !all {
		for _, p := range out.RetranslatedPolicies {
			compare[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = true
		}
		if len(compare) == 0 {
			return nil
		}
	}
	// Where each policy is in in: the kept input's index, when in is
	// its lists.
	var at map[types.NamespacedName]int
	if kk := r.kept.kinds["TargetGroupPolicy"]; kk != nil && kk.index != nil && len(kk.index) == len(in.TargetGroupPolicies) {
		at = kk.index
	} else {
		at = make(map[types.NamespacedName]int, len(in.TargetGroupPolicies))
		for i := range in.TargetGroupPolicies {
			at[types.NamespacedName{Namespace: in.TargetGroupPolicies[i].Namespace, Name: in.TargetGroupPolicies[i].Name}] = i
		}
	}
	// The statuses to compare: all, or those named, found by binary
	// search (the list is sorted by namespace and name).
	statuses := out.Status.TargetGroupPolicies
	if !all {
		statuses = nil
		for _, key := range slices.SortedFunc(maps.Keys(compare), func(a, b types.NamespacedName) int {
			return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
		}) {
			if j, found := slices.BinarySearchFunc(out.Status.TargetGroupPolicies, key, func(st translate.PolicyStatus, k types.NamespacedName) int {
				return cmp.Or(cmp.Compare(st.Namespace, k.Namespace), cmp.Compare(st.Name, k.Name))
			}); found {
				statuses = append(statuses, out.Status.TargetGroupPolicies[j])
			}
		}
	}
	var writes []write
	for _, st := range statuses {
		key := types.NamespacedName{Namespace: st.Namespace, Name: st.Name}
		i, ok := at[key]
		if !ok || i >= len(in.TargetGroupPolicies) || in.TargetGroupPolicies[i].Namespace != key.Namespace || in.TargetGroupPolicies[i].Name != key.Name {
			continue
		}
		s.pending[key] = true
		writes = append(writes, write{key: objectKey{"TargetGroupPolicy", key.Namespace, key.Name}, obj: &in.TargetGroupPolicies[i], steps: []change{{status: true, apply: func(o client.Object) bool {
			p := o.(*v1alpha1.TargetGroupPolicy)
			return setIfDifferent(&p.Status, policyStatus(st, p.Status, p.Generation, now))
		}}}, done: func(_, _ string) {
			s.mu.Lock()
			delete(s.pending, key)
			s.mu.Unlock()
		}})
	}
	for key := range s.pending {
		if _, ok := at[key]; !ok {
			delete(s.pending, key) // gone
		}
	}
	return writes
}
