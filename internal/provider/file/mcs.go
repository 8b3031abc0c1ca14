package file

import (
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// serviceImportV1beta1 converts a v1alpha1 ServiceImport to v1beta1, the
// version the translator reads. The two versions have the same fields;
// only their Go types differ. The result shares no memory with im.
func serviceImportV1beta1(im *mcsv1alpha1.ServiceImport) *mcsv1beta1.ServiceImport {
	out := &mcsv1beta1.ServiceImport{
		TypeMeta:   im.TypeMeta,
		ObjectMeta: *im.ObjectMeta.DeepCopy(),
		Spec: mcsv1beta1.ServiceImportSpec{
			IPs:             append([]string(nil), im.Spec.IPs...),
			Type:            mcsv1beta1.ServiceImportType(im.Spec.Type),
			SessionAffinity: im.Spec.SessionAffinity,
			IPFamilies:      append(im.Spec.IPFamilies[:0:0], im.Spec.IPFamilies...),
		},
		Status: mcsv1beta1.ServiceImportStatus{
			EndpointSliceObjects: mcsv1beta1.EndpointSliceObjectsStatus(im.Status.EndpointSliceObjects),
		},
	}
	out.APIVersion = mcsv1beta1.GroupVersion.String()
	if im.Spec.SessionAffinityConfig != nil {
		out.Spec.SessionAffinityConfig = im.Spec.SessionAffinityConfig.DeepCopy()
	}
	if im.Spec.InternalTrafficPolicy != nil {
		p := *im.Spec.InternalTrafficPolicy
		out.Spec.InternalTrafficPolicy = &p
	}
	if im.Spec.TrafficDistribution != nil {
		d := *im.Spec.TrafficDistribution
		out.Spec.TrafficDistribution = &d
	}
	for _, p := range im.Spec.Ports {
		bp := mcsv1beta1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port}
		if p.AppProtocol != nil {
			ap := *p.AppProtocol
			bp.AppProtocol = &ap
		}
		out.Spec.Ports = append(out.Spec.Ports, bp)
	}
	for _, c := range im.Status.Clusters {
		out.Status.Clusters = append(out.Status.Clusters, mcsv1beta1.ClusterStatus{Cluster: c.Cluster})
	}
	for _, c := range im.Status.Conditions {
		out.Status.Conditions = append(out.Status.Conditions, *c.DeepCopy())
	}
	return out
}
