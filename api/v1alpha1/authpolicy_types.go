package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// AuthPolicy turns auth on for what it targets and says who may call it:
// a Gateway of class trellis (the whole service network) or trellis-edge
// (every route on it), or an HTTPRoute, GRPCRoute or TLSRoute (that
// service). A request must be explicitly allowed at every level that has a
// policy, and an explicit Deny at any level refuses it: Lattice's AWS_IAM
// auth type, with the policy language of IAM (docs/reference/auth.md).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=gateway-api;trellis,shortName=authp
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.ancestors[0].conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AuthPolicySpec `json:"spec"`
	// Status says, per Gateway the policy reaches, whether it was accepted.
	Status gatewayv1.PolicyStatus `json:"status,omitempty"`
}

// AuthPolicySpec is an AuthPolicy's desired state.
type AuthPolicySpec struct {
	// TargetRefs are the Gateways and routes, in the policy's namespace,
	// the policy applies to. Each may carry one AuthPolicy; when several
	// target one object, the oldest applies and the others are Conflicted.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	TargetRefs []gatewayv1.LocalPolicyTargetReference `json:"targetRefs"`

	// Policy is the policy document: {"Statement": [{"Effect": "Allow" or
	// "Deny", "Principal": "*", "Action": "trellis:Invoke", "Resource":
	// "*", "Condition": {...}}]}, as IAM and VPC Lattice write them.
	//
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	Policy apiextensionsv1.JSON `json:"policy"`
}

// AuthPolicyList is a list of AuthPolicies.
//
// +kubebuilder:object:root=true
type AuthPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthPolicy `json:"items"`
}
