package kubernetes

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/translate"
)

// targetGroupPolicyWrites are the status writes of the TargetGroupPolicies
// out has a status for: per target Service, whether the policy applies
// there (Accepted), and why not (Conflicted, TargetNotFound, Invalid).
// Like the AuthPolicies', every policy's status is compared on every
// reconcile: they are few.
func targetGroupPolicyWrites(in *translate.Input, out *translate.Output, now metav1.Time) []write {
	if len(out.Status.TargetGroupPolicies) == 0 {
		return nil
	}
	at := make(map[types.NamespacedName]int, len(in.TargetGroupPolicies))
	for i := range in.TargetGroupPolicies {
		at[types.NamespacedName{Namespace: in.TargetGroupPolicies[i].Namespace, Name: in.TargetGroupPolicies[i].Name}] = i
	}
	var writes []write
	for _, st := range out.Status.TargetGroupPolicies {
		i, ok := at[types.NamespacedName{Namespace: st.Namespace, Name: st.Name}]
		if !ok {
			continue
		}
		writes = append(writes, write{obj: &in.TargetGroupPolicies[i], steps: []change{{status: true, apply: func(o client.Object) bool {
			p := o.(*v1alpha1.TargetGroupPolicy)
			return setIfDifferent(&p.Status, policyStatus(st, p.Status, p.Generation, now))
		}}}})
	}
	return writes
}
