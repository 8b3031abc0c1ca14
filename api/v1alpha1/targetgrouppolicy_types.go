package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TargetGroupPolicy sets the active health check of the target groups
// made from the Services it targets: every target group of every port of
// the Service, whichever routes (in whichever namespaces) use it. Unset
// fields keep VPC Lattice's defaults (docs/reference/health.md).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=trellis,shortName=tgp
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.ancestors[0].conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TargetGroupPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec TargetGroupPolicySpec `json:"spec"`
	// Status says, per target, whether the policy applies there.
	Status gatewayv1.PolicyStatus `json:"status,omitempty"`
}

// TargetGroupPolicySpec is a TargetGroupPolicy's desired state.
type TargetGroupPolicySpec struct {
	// TargetRefs are the Services, in the policy's namespace, whose target
	// groups the policy configures. Each Service takes one
	// TargetGroupPolicy: when several target one Service, the oldest
	// (then the first by name) applies and the others are Conflicted
	// there.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:message="a TargetGroupPolicy targets Services (group \"\", kind Service)",rule="self.all(r, r.group == '' && r.kind == 'Service')"
	// +listType=atomic
	TargetRefs []gatewayv1.LocalPolicyTargetReference `json:"targetRefs"`

	// HealthCheck configures the targets' active health check.
	//
	// +optional
	HealthCheck *HealthCheckPolicy `json:"healthCheck,omitempty"`
}

// HealthCheckPolicy is a target group's active health check, as VPC
// Lattice configures one. An unset field takes Lattice's default.
type HealthCheckPolicy struct {
	// Enabled turns checks on or off. Unset, checks run for HTTP/1.1
	// target groups and not for HTTP/2, gRPC and TLS ones.
	//
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// IntervalSeconds is the time between two checks of a target
	// (default 30).
	//
	// +optional
	// +kubebuilder:validation:Minimum=5
	// +kubebuilder:validation:Maximum=300
	IntervalSeconds *int32 `json:"intervalSeconds,omitempty"`
	// TimeoutSeconds is how long a check waits for an answer (default 5).
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=120
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`
	// HealthyThresholdCount is how many passed checks in a row make a
	// target healthy (default 5).
	//
	// +optional
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=10
	HealthyThresholdCount *int32 `json:"healthyThresholdCount,omitempty"`
	// UnhealthyThresholdCount is how many failed checks in a row make a
	// target unhealthy (default 2).
	//
	// +optional
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=10
	UnhealthyThresholdCount *int32 `json:"unhealthyThresholdCount,omitempty"`
	// StatusMatch lists the status codes of a passed check: "200",
	// "200,202", "200-299" (codes in 200-499; default "200").
	//
	// +optional
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[2-4][0-9]{2}(-[2-4][0-9]{2})?(,[2-4][0-9]{2}(-[2-4][0-9]{2})?)*$`
	// +kubebuilder:validation:XValidation:message="a range must not be backwards",rule="self.split(',').all(r, !r.contains('-') || r.split('-')[0] <= r.split('-')[1])"
	StatusMatch *string `json:"statusMatch,omitempty"`
	// Path is the request path of a check (default "/").
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^/[!-~]*$`
	Path *string `json:"path,omitempty"`
	// Port is the port checks go to (default: each target's own).
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`
	// Protocol is HTTP or HTTPS (default HTTP).
	//
	// +optional
	// +kubebuilder:validation:Enum=HTTP;HTTPS
	Protocol *string `json:"protocol,omitempty"`
	// ProtocolVersion is HTTP1 or HTTP2 (default HTTP1).
	//
	// +optional
	// +kubebuilder:validation:Enum=HTTP1;HTTP2
	ProtocolVersion *string `json:"protocolVersion,omitempty"`
}

// TargetGroupPolicyList is a list of TargetGroupPolicies.
//
// +kubebuilder:object:root=true
type TargetGroupPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TargetGroupPolicy `json:"items"`
}
