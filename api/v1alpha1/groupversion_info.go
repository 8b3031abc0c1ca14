// Package v1alpha1 holds trellis's own Kubernetes API types, group
// trellis.dev. Everything the Gateway API or the Multi-Cluster Services API
// already defines is used from upstream; these are what they leave to
// implementations (policy attachment, GEP-713).
//
// +kubebuilder:object:generate=true
// +groupName=trellis.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is trellis.dev/v1alpha1.
	GroupVersion = schema.GroupVersion{Group: "trellis.dev", Version: "v1alpha1"}
	// SchemeBuilder registers the types with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &AuthPolicy{}, &AuthPolicyList{}, &TargetGroupPolicy{}, &TargetGroupPolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
