package translate

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/internal/mcs"
	"trellis.dev/trellis/internal/model"
)

// kindServiceImport is the Multi-Cluster Services kind a backendRef may
// name (GEP-1748), in group multicluster.x-k8s.io.
const kindServiceImport gatewayv1.Kind = mcsv1beta1.ServiceImportKindName

// ClusterWeightsAnnotation on a ServiceImport splits each route's share of
// the import among the exporting clusters by weight: "east=90,west=10".
// A cluster it does not list gets no share. Without it every exporting
// cluster's endpoints are picked alike.
const ClusterWeightsAnnotation = mcs.ClusterWeightsAnnotation

// importBackend translates a backendRef to a ServiceImport: a backend
// naming the import's port, which proxies resolve to every exporting
// cluster's endpoints. out already carries the weight and filters; an
// invalid reference returns it without an import, so that its share
// answers 500.
func (t *translator) importBackend(r *route, src model.SourceRef, p string, b *gatewayv1.HTTPBackendRef, out model.WeightedTargetGroup) model.WeightedTargetGroup {
	fail := func(field string, reason gatewayv1.RouteConditionReason, format string, args ...any) model.WeightedTargetGroup {
		t.problem(src, p+field, string(reason), format, args...)
		return out
	}
	ns := string(deref(b.Namespace, gatewayv1.Namespace(r.Namespace)))
	key := types.NamespacedName{Namespace: ns, Name: string(b.Name)}
	t.read(dep{string(kindServiceImport), key.Namespace, key.Name})
	if ns != r.Namespace && !t.granted(r.kind, r.Namespace, mcsv1beta1.GroupName, kindServiceImport, key) {
		return fail(".namespace", gatewayv1.RouteReasonRefNotPermitted,
			"ServiceImport %s is in another namespace and no ReferenceGrant there allows %ss from namespace %q to use it", key, r.kind, r.Namespace)
	}
	if b.Port == nil {
		return fail(".port", gatewayv1.RouteReasonUnsupportedValue, "port is required when referring to a ServiceImport")
	}
	if errs := validation.IsDNS1123Label(key.Name); len(errs) > 0 {
		// An import has the name of the exported Services, which are labels.
		return fail(".name", gatewayv1.RouteReasonUnsupportedValue, "ServiceImport name %q is not a DNS label, as an exported Service's name is", key.Name)
	}
	si := t.imports[key]
	if si == nil {
		return fail(".name", gatewayv1.RouteReasonBackendNotFound, "ServiceImport %s not found", key)
	}
	// The TCP port of that number, when an import has it under several
	// protocols (tcp/42 and udp/42); otherwise the one there is, refused
	// below unless TCP.
	i := slices.IndexFunc(si.Spec.Ports, func(sp mcsv1beta1.ServicePort) bool {
		return sp.Port == *b.Port && (sp.Protocol == "" || sp.Protocol == corev1.ProtocolTCP)
	})
	if i < 0 {
		i = slices.IndexFunc(si.Spec.Ports, func(sp mcsv1beta1.ServicePort) bool { return sp.Port == *b.Port })
	}
	if i < 0 {
		return fail(".port", gatewayv1.RouteReasonBackendNotFound, "ServiceImport %s has no port %d", key, *b.Port)
	}
	sp := &si.Spec.Ports[i]
	protocol, version, _, err := backendProtocol(r.kind, sp.Protocol, sp.AppProtocol)
	if err != nil {
		return fail(".port", gatewayv1.RouteReasonUnsupportedProtocol, "ServiceImport %s port %d %v", key, sp.Port, err)
	}
	weights, err := parseClusterWeights(si.Annotations)
	if err != nil {
		t.problem(ref(string(kindServiceImport), si.Namespace, si.Name), "metadata.annotations["+ClusterWeightsAnnotation+"]",
			string(gatewayv1.RouteReasonUnsupportedValue), "%v", err)
		// The route cannot be served as its author meant: its reference
		// does not resolve.
		pr := t.problem(src, p, string(gatewayv1.RouteReasonUnsupportedValue),
			"ServiceImport %s: annotation %s: %v", key, ClusterWeightsAnnotation, err)
		if t.cur != nil {
			t.cur.unresolved = append(t.cur.unresolved, pr)
		}
		return out
	}
	out.Import = &model.ImportRef{
		Namespace: key.Namespace, Name: key.Name, Port: sp.Port,
		Protocol: protocol, ProtocolVersion: version, ClusterWeights: weights,
	}
	return out
}

// parseClusterWeights reads the ClusterWeightsAnnotation of a
// ServiceImport's annotations (mcs.ParseClusterWeights).
func parseClusterWeights(annotations map[string]string) (map[string]int32, error) {
	return mcs.ParseClusterWeights(annotations)
}
