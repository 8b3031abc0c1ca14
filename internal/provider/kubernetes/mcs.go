package kubernetes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	tclient "trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/mcs"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/translate"
)

// The Multi-Cluster Services API (KEP-1645) in the controller. Every
// ServiceExport of the cluster becomes a model.ServiceExport, sent with
// the rest of the cluster's objects. The controller follows the control
// plane for every cluster's exports, merges those of one namespaced name
// (package mcs) and, from the merge, writes the conditions of its own
// ServiceExports and the ServiceImport in every namespace its cluster has.

// Labels and annotations the controller puts on the ServiceImports it
// manages.
const (
	// ManagedByLabel marks a ServiceImport the controller created and
	// keeps; it deletes those whose exports are all gone.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is ManagedByLabel's value.
	ManagedByValue = "trellis"
	// ExportedLabelsAnnotation and ExportedAnnotationsAnnotation list the
	// keys of the labels and annotations the controller copied from the
	// exports (comma-separated, sorted), so that it removes one an export
	// no longer carries and never touches anybody else's.
	ExportedLabelsAnnotation      = "trellis.dev/exported-labels"
	ExportedAnnotationsAnnotation = "trellis.dev/exported-annotations"
)

// exportView is the control plane's exports of every cluster, as the
// controller last saw them in the followed snapshot.
type exportView struct {
	mu sync.Mutex
	// synced is false until the first snapshot: before it the controller
	// neither creates nor deletes imports, nor reports conflicts.
	synced bool
	// exports are the exports the control plane serves (mcs.Served);
	// stored are all it holds, by name, served or not.
	exports []*model.ServiceExport
	stored  map[string]*model.ServiceExport
	// versions is each export's name and revision, to tell a snapshot that
	// changed exports from one that changed other objects.
	versions map[string]int64
	// admissions are the admitted clusters by name: the namespaces each
	// may export from.
	admissions map[string]*model.Cluster
	// networks are the service networks by name: who owns each and which
	// clusters it allows (see associate).
	networks map[string]networkOwner
}

// networkOwner is what association needs of a network.
type networkOwner struct {
	owner   string
	allowed string // AllowedClusters, joined
	network *model.ServiceNetwork
}

// network returns the control plane's network name, if it has one.
func (v *exportView) network(name string) (*model.ServiceNetwork, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n, ok := v.networks[name]
	return n.network, ok
}

func (v *exportView) get() (exports []*model.ServiceExport, synced bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.exports, v.synced
}

// stamped returns the export named name as the control plane holds it,
// nil when it holds none.
func (v *exportView) stamped(name string) *model.ServiceExport {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.stored[name]
}

// admission returns cluster's admission as the control plane publishes
// it, nil when it publishes none (a cluster authenticated by a bearer
// token, or before the first snapshot).
func (v *exportView) admission(cluster string) *model.Cluster {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.admissions[cluster]
}

// set records the exports and networks of s and reports whether they
// changed.
func (v *exportView) set(s *model.Snapshot) bool {
	versions := make(map[string]int64, len(s.Exports))
	stored := make(map[string]*model.ServiceExport, len(s.Exports))
	for i := range s.Exports {
		stored[s.Exports[i].Name] = &s.Exports[i]
		versions[s.Exports[i].Name] = s.Exports[i].Revision
	}
	exports, _ := mcs.Served(&s.Objects)
	admissions := make(map[string]*model.Cluster, len(s.Clusters))
	for i := range s.Clusters {
		admissions[s.Clusters[i].Name] = &s.Clusters[i]
	}
	sameAdmissions := func(a, b *model.Cluster) bool { return slices.Equal(a.ExportNamespaces, b.ExportNamespaces) }
	networks := make(map[string]networkOwner, len(s.Networks))
	for i := range s.Networks {
		n := &s.Networks[i]
		networks[n.Name] = networkOwner{owner: n.Owner, allowed: strings.Join(n.AllowedClusters, ","), network: n}
	}
	sameNetworks := func(a, b networkOwner) bool { return a.owner == b.owner && a.allowed == b.allowed }
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.synced && maps.Equal(v.versions, versions) && maps.EqualFunc(v.networks, networks, sameNetworks) &&
		maps.EqualFunc(v.admissions, admissions, sameAdmissions) {
		return false
	}
	v.synced, v.exports, v.stored, v.versions, v.networks, v.admissions = true, exports, stored, versions, networks, admissions
	return true
}

// follow keeps the view of every cluster's exports until ctx ends and
// asks for a reconcile whenever they change.
func (r *Reconciler) follow(ctx context.Context, cp *tclient.Client, events chan<- event.GenericEvent) error {
	// Only the kinds the view reads: the control plane holds every
	// cluster's services and target groups, which it need not decode.
	opts := tclient.FollowOptions{Kinds: []model.Kind{model.KindServiceExport, model.KindCluster, model.KindServiceNetwork}}
	err := cp.Follow(ctx, opts, func(s *model.Snapshot) {
		if !r.view.set(s) {
			return
		}
		select {
		case events <- event.GenericEvent{Object: &mcsv1beta1.ServiceExport{}}:
		default: // a reconcile is already pending; it reads the newest view
		}
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ReasonNamespaceNotAllowed is the reason of a ServiceExport's Valid=False
// condition when the control plane does not let the cluster export from
// the ServiceExport's namespace (model.Cluster.ExportNamespaces). The MCS
// API lets controllers raise Valid with reasons of their own.
const ReasonNamespaceNotAllowed = "NamespaceNotAllowed"

// exportResult is what the controller makes of one ServiceExport.
type exportResult struct {
	se *mcsv1beta1.ServiceExport
	// valid is the Valid condition; reason and message say why.
	valid           bool
	reason, message string
	// export is the model export to send; nil when invalid, or when the
	// model refuses it (failed says why).
	export *model.ServiceExport
	failed string
}

// exports makes the model export of each of the cluster's ServiceExports
// from its Service and the Service's EndpointSlices.
func (r *Reconciler) exports(in *translate.Input, ses []mcsv1beta1.ServiceExport) []exportResult {
	if len(ses) == 0 {
		return nil // and no index of every Service and EndpointSlice
	}
	services := map[types.NamespacedName]*corev1.Service{}
	for i := range in.Services {
		s := &in.Services[i]
		services[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	endpoints := map[types.NamespacedName][]*discoveryv1.EndpointSlice{}
	for i := range in.EndpointSlices {
		es := &in.EndpointSlices[i]
		if name := es.Labels[discoveryv1.LabelServiceName]; name != "" {
			k := types.NamespacedName{Namespace: es.Namespace, Name: name}
			endpoints[k] = append(endpoints[k], es)
		}
	}
	admission := r.view.admission(r.cluster)
	out := make([]exportResult, 0, len(ses))
	for i := range ses {
		se := &ses[i]
		k := types.NamespacedName{Namespace: se.Namespace, Name: se.Name}
		res := exportResult{se: se}
		svc := services[k]
		switch {
		case se.DeletionTimestamp != nil:
			continue
		case admission != nil && !admission.AllowsExport(se.Namespace):
			res.reason = ReasonNamespaceNotAllowed
			res.message = fmt.Sprintf("cluster %s may not export from namespace %s: the control plane allows its exports from %s only (trellis cluster set %s --export-namespaces)",
				r.cluster, se.Namespace, strings.Join(admission.ExportNamespaces, ","), r.cluster)
		case svc == nil || svc.DeletionTimestamp != nil:
			res.reason = string(mcsv1beta1.ServiceExportReasonNoService)
			res.message = fmt.Sprintf("Service %s does not exist", k)
		case svc.Spec.Type == corev1.ServiceTypeExternalName:
			res.reason = string(mcsv1beta1.ServiceExportReasonInvalidServiceType)
			res.message = fmt.Sprintf("Service %s is of type ExternalName, which cannot be exported", k)
		default:
			res.valid = true
			res.reason = string(mcsv1beta1.ServiceExportReasonValid)
			res.message = fmt.Sprintf("Service %s is exported", k)
			res.export = r.modelExport(se, svc, endpoints[k])
			if res.export.Type == model.ExportHeadless {
				var skipped []string
				res.export.Hostnames, skipped = exportHostnames(endpoints[k])
				res.message += skippedNote(skipped)
			}
			// The control plane stamps when it first stored the export
			// (it ignores what the cluster sends); sending the stamp back
			// keeps what is sent equal to what it holds.
			if held := r.view.stamped(res.export.Name); held != nil {
				res.export.ExportedAt = held.ExportedAt
			}
			if err := res.export.Validate(); err != nil {
				res.export, res.failed = nil, fmt.Sprintf("Service %s cannot be exported: %v", k, err)
			}
		}
		out = append(out, res)
	}
	return out
}

// modelExport is the model export of se's Service svc, with the ready (and
// terminating but serving, as draining) endpoints of its slices.
func (r *Reconciler) modelExport(se *mcsv1beta1.ServiceExport, svc *corev1.Service, eps []*discoveryv1.EndpointSlice) *model.ServiceExport {
	e := &model.ServiceExport{
		Meta:                model.Meta{Name: model.ExportName(r.cluster, se.Namespace, se.Name), Owner: r.cluster},
		Namespace:           se.Namespace,
		Service:             se.Name,
		Type:                model.ExportClusterSetIP,
		SessionAffinity:     string(svc.Spec.SessionAffinity),
		ExportedLabels:      maps.Clone(se.Spec.ExportedLabels),
		ExportedAnnotations: maps.Clone(se.Spec.ExportedAnnotations),
		Source:              &model.SourceRef{Kind: "ServiceExport", Namespace: se.Namespace, Name: se.Name},
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		e.Type = model.ExportHeadless
	}
	if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
		e.SessionAffinityTimeout = *c.ClientIP.TimeoutSeconds
	}
	if p := svc.Spec.InternalTrafficPolicy; p != nil {
		e.InternalTrafficPolicy = string(*p)
	}
	if d := svc.Spec.TrafficDistribution; d != nil {
		e.TrafficDistribution = *d
	}
	for _, sp := range svc.Spec.Ports {
		p := model.ExportPort{
			Name:     sp.Name,
			Protocol: string(cmp.Or(sp.Protocol, corev1.ProtocolTCP)),
			Port:     sp.Port,
			Targets:  r.exportTargets(&sp, eps),
		}
		if sp.AppProtocol != nil {
			p.AppProtocol = *sp.AppProtocol
		}
		e.Ports = append(e.Ports, p)
	}
	return e
}

// exportTargets are the endpoints serving Service port sp: each slice's
// port of sp's name and protocol, at every usable address of the slice.
func (r *Reconciler) exportTargets(sp *corev1.ServicePort, eps []*discoveryv1.EndpointSlice) []model.Target {
	set := translate.TargetSet{}
	for _, es := range eps {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		port := int32(0)
		for _, p := range es.Ports {
			if deref(p.Name, "") == sp.Name && deref(p.Protocol, corev1.ProtocolTCP) == cmp.Or(sp.Protocol, corev1.ProtocolTCP) && p.Port != nil {
				port = *p.Port
				break
			}
		}
		if port < 1 || port > 65535 {
			continue
		}
		set.AddSlice(es, port, nil)
	}
	return set.Targets(r.cluster)
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// merged merges, per namespaced name, the other clusters' exports the
// control plane holds with this cluster's current ones: the cluster's own
// are what it is sending now, not what the control plane echoed last.
func (r *Reconciler) merged(own []exportResult, others []*model.ServiceExport) (map[[2]string]*mcs.Import, map[[2]string][]*model.ServiceExport) {
	var all []*model.ServiceExport
	for _, e := range others {
		if e.Owner != r.cluster {
			all = append(all, e)
		}
	}
	for _, res := range own {
		if res.export != nil {
			all = append(all, res.export)
		}
	}
	out := map[[2]string]*mcs.Import{}
	groups := mcs.Group(all)
	for k, group := range groups {
		out[k] = mcs.Merge(group)
	}
	return out, groups
}

// writeMCS writes the conditions of the cluster's ServiceExports and makes
// the cluster's ServiceImports what the merged exports say.
func (r *Reconciler) writeMCS(ctx context.Context, in *translate.Input, own []exportResult, imports []mcsv1beta1.ServiceImport) error {
	others, synced := r.view.get()
	merged, groups := r.merged(own, others)
	held := map[string][]byte{}
	for _, e := range others {
		if e.Owner == r.cluster {
			b, err := model.Encode(e)
			if err != nil {
				return err
			}
			held[e.Name] = b
		}
	}

	var writes []write
	for _, res := range own {
		conds := r.exportConditions(res, merged, held, synced)
		writes = append(writes, write{obj: res.se, steps: []change{{status: true, apply: func(o client.Object) bool {
			se := o.(*mcsv1beta1.ServiceExport)
			changed := false
			for _, c := range conds {
				c.ObservedGeneration = se.Generation
				if c.Status == "" {
					changed = meta.RemoveStatusCondition(&se.Status.Conditions, c.Type) || changed
				} else {
					changed = meta.SetStatusCondition(&se.Status.Conditions, c) || changed
				}
			}
			return changed
		}}}})
	}
	if !synced {
		// Without the control plane's view the controller does not know
		// which imports should exist.
		_, _, err := r.runWrites(ctx, writes, 0)
		return err
	}

	existing := map[[2]string]*mcsv1beta1.ServiceImport{}
	for i := range imports {
		existing[[2]string{imports[i].Namespace, imports[i].Name}] = &imports[i]
	}
	live := map[string]bool{}
	for _, ns := range in.Namespaces {
		live[ns.Name] = ns.DeletionTimestamp == nil
	}
	var creates []*mcsv1beta1.ServiceImport
	for k, im := range merged {
		if !live[k[0]] {
			continue // namespace sameness: no namespace, no import
		}
		si := existing[k]
		if si == nil {
			si = &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: k[0], Name: k[1]}}
			r.importSpec(si, im)
			creates = append(creates, si)
			continue
		}
		writes = append(writes, write{obj: si, steps: []change{
			{apply: func(o client.Object) bool { return r.importSpec(o.(*mcsv1beta1.ServiceImport), im) }},
			{status: true, apply: func(o client.Object) bool { return importStatus(o.(*mcsv1beta1.ServiceImport), im) }},
		}})
	}
	_, _, err := r.runWrites(ctx, writes, 0)
	errs := []error{err}
	m := 0 // creates and deletes, which runWrites did not count
	for _, si := range creates {
		im := merged[[2]string{si.Namespace, si.Name}]
		switch err := r.kube.Create(ctx, si); {
		case apierrors.IsAlreadyExists(err):
			continue // the cache is behind; the next reconcile updates it
		case err != nil:
			errs = append(errs, fmt.Errorf("creating ServiceImport %s/%s: %w", si.Namespace, si.Name, err))
			continue
		}
		m++
		// Status is not written on create.
		if importStatus(si, im) {
			if err := r.kube.Status().Update(ctx, si); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				errs = append(errs, fmt.Errorf("updating ServiceImport %s/%s status: %w", si.Namespace, si.Name, err))
			} else if err == nil {
				m++
			}
		}
	}
	for k, si := range existing {
		if _, ok := merged[k]; ok || si.Labels[ManagedByLabel] != ManagedByValue || si.DeletionTimestamp != nil {
			continue
		}
		deleted, err := r.deleteUnchanged(ctx, si.DeepCopy(), "ServiceImport")
		m += deleted
		errs = append(errs, err)
	}
	n, err := r.writeSlices(ctx, in.EndpointSlices, importSlices(groups, merged, live))
	r.countWrites(m + n)
	return errors.Join(append(errs, err)...)
}

// exportConditions are the Valid, Ready and Conflict conditions of one of
// the cluster's exports; a condition with no status is to be removed.
func (r *Reconciler) exportConditions(res exportResult, merged map[[2]string]*mcs.Import, held map[string][]byte, synced bool) []metav1.Condition {
	cond := func(t mcsv1beta1.ServiceExportConditionType, s metav1.ConditionStatus, reason mcsv1beta1.ServiceExportConditionReason, msg string) metav1.Condition {
		return metav1.Condition{Type: string(t), Status: s, Reason: string(reason), Message: msg}
	}
	valid := cond(mcsv1beta1.ServiceExportConditionValid, metav1.ConditionTrue, mcsv1beta1.ServiceExportConditionReason(res.reason), res.message)
	if !res.valid {
		valid.Status = metav1.ConditionFalse
		return []metav1.Condition{valid,
			cond(mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonFailed, "Not exported: "+res.message),
			{Type: string(mcsv1beta1.ServiceExportConditionConflict)},
		}
	}
	if res.export == nil {
		return []metav1.Condition{valid,
			cond(mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonFailed, res.failed),
			{Type: string(mcsv1beta1.ServiceExportConditionConflict)},
		}
	}
	ready := cond(mcsv1beta1.ServiceExportConditionReady, metav1.ConditionUnknown, mcsv1beta1.ServiceExportReasonPending,
		"Waiting for the control plane to hold the export")
	if b, err := model.Encode(res.export); err == nil && held[res.export.Name] != nil && string(held[res.export.Name]) == string(b) {
		ready = cond(mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonExported,
			"The control plane holds the export")
	}
	if !synced {
		return []metav1.Condition{valid, ready}
	}
	conflict := cond(mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonNoConflicts,
		"The exports of every cluster agree")
	if im := merged[[2]string{res.se.Namespace, res.se.Name}]; im != nil && len(im.Conflicts) > 0 {
		msgs := make([]string, len(im.Conflicts))
		for i, c := range im.Conflicts {
			msgs[i] = fmt.Sprintf("%s (%s): %s", c.Field, c.Reason, c.Message)
		}
		conflict = cond(mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue,
			mcsv1beta1.ServiceExportConditionReason(im.Reasons()), strings.Join(msgs, "; "))
	}
	return []metav1.Condition{valid, ready, conflict}
}

// importSpec makes si's spec, its managed-by label and the labels and
// annotations copied from the exports what im says, keeping every other
// label and annotation, and reports whether anything changed.
func (r *Reconciler) importSpec(si *mcsv1beta1.ServiceImport, im *mcs.Import) bool {
	spec := mcsv1beta1.ServiceImportSpec{
		Type:            mcsv1beta1.ServiceImportType(im.Type),
		Ports:           []mcsv1beta1.ServicePort{},
		SessionAffinity: corev1.ServiceAffinity(im.SessionAffinity),
	}
	for _, p := range im.Ports {
		sp := mcsv1beta1.ServicePort{Name: p.Name, Protocol: corev1.Protocol(p.Protocol), Port: p.Port}
		if p.AppProtocol != "" {
			sp.AppProtocol = &p.AppProtocol
		}
		spec.Ports = append(spec.Ports, sp)
	}
	if im.SessionAffinityTimeout > 0 {
		timeout := im.SessionAffinityTimeout
		spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}}
	}
	if im.InternalTrafficPolicy != "" {
		p := corev1.ServiceInternalTrafficPolicy(im.InternalTrafficPolicy)
		spec.InternalTrafficPolicy = &p
	}
	if im.TrafficDistribution != "" {
		d := im.TrafficDistribution
		spec.TrafficDistribution = &d
	}
	if ip := r.clusterSetIP; ip.IsValid() && im.Type == model.ExportClusterSetIP {
		spec.IPs = []string{ip.String()}
		spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		if ip.Is6() {
			spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		}
	}
	changed := setIfDifferent(&si.Spec, spec)

	labels, annotations := copyMap(si.Labels), copyMap(si.Annotations)
	owned := func(key string) bool {
		return key == ManagedByLabel || key == ExportedLabelsAnnotation || key == ExportedAnnotationsAnnotation
	}
	sync := func(m map[string]string, bookkeeping string, want map[string]string) {
		for _, k := range strings.Split(annotations[bookkeeping], ",") {
			if _, keep := want[k]; !keep && k != "" && !owned(k) {
				delete(m, k)
			}
		}
		var keys []string
		for k, v := range want {
			if !owned(k) {
				m[k] = v
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		if len(keys) == 0 {
			delete(annotations, bookkeeping)
		} else {
			annotations[bookkeeping] = strings.Join(keys, ",")
		}
	}
	sync(labels, ExportedLabelsAnnotation, im.Labels)
	sync(annotations, ExportedAnnotationsAnnotation, im.Annotations)
	labels[ManagedByLabel] = ManagedByValue
	if !maps.Equal(labels, si.Labels) {
		si.Labels, changed = labels, true
	}
	if !maps.Equal(annotations, si.Annotations) && (len(annotations) > 0 || len(si.Annotations) > 0) {
		si.Annotations, changed = annotations, true
	}
	return changed
}

// importStatus makes si's status list the exporting clusters and report
// Ready, and reports whether it changed.
func importStatus(si *mcsv1beta1.ServiceImport, im *mcs.Import) bool {
	clusters := make([]mcsv1beta1.ClusterStatus, len(im.Clusters))
	for i, c := range im.Clusters {
		clusters[i] = mcsv1beta1.ClusterStatus{Cluster: c}
	}
	changed := setIfDifferent(&si.Status.Clusters, clusters)
	changed = meta.SetStatusCondition(&si.Status.Conditions, clustersetCondition(im)) || changed
	return meta.SetStatusCondition(&si.Status.Conditions, metav1.Condition{
		Type:    string(mcsv1beta1.ServiceImportConditionReady),
		Status:  metav1.ConditionTrue,
		Reason:  string(mcsv1beta1.ServiceImportReasonReady),
		Message: fmt.Sprintf("Imported from %s", strings.Join(im.Clusters, ", ")),
	}) || changed
}

// ConditionClustersetName on a ServiceImport says whether every cluster's
// proxy serves the import's clusterset name without a route, and on which
// ports (mcs.HTTPVersion decides).
const ConditionClustersetName = "trellis.dev/ClustersetName"

// Reasons of ConditionClustersetName.
const (
	ReasonClustersetNameServed  = "Served"
	ReasonNoHTTPPorts           = "NoHTTPPorts"
	ReasonInvalidClusterWeights = "InvalidClusterWeights"
)

// clustersetCondition is ConditionClustersetName of im, as the proxies
// serve it (router's addClustersetHosts): True when at least one port is
// served, naming the ports that are and are not.
func clustersetCondition(im *mcs.Import) metav1.Condition {
	host := mcs.ClustersetHost(im.Namespace, im.Name)
	c := metav1.Condition{Type: ConditionClustersetName}
	if _, err := mcs.ParseClusterWeights(im.Annotations); err != nil {
		c.Status, c.Reason = metav1.ConditionFalse, ReasonInvalidClusterWeights
		c.Message = fmt.Sprintf("%s is not served without a route: exported annotation %s %v", host, mcs.ClusterWeightsAnnotation, err)
		return c
	}
	var served, not []string
	for _, p := range im.Ports {
		if v, ok := mcs.HTTPVersion(p); ok {
			served = append(served, fmt.Sprintf("%d (%s)", p.Port, v))
		} else {
			not = append(not, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
		}
	}
	const hint = "appProtocol http, kubernetes.io/h2c or grpc, or a TCP port named http, h2c or grpc, or starting with one of them and '-'"
	if len(served) == 0 {
		c.Status, c.Reason = metav1.ConditionFalse, ReasonNoHTTPPorts
		c.Message = fmt.Sprintf("%s is not served without a route: no port says it carries HTTP (%s); a route naming the host and the import serves a TCP port", host, hint)
		return c
	}
	c.Status, c.Reason = metav1.ConditionTrue, ReasonClustersetNameServed
	c.Message = fmt.Sprintf("%s is served at the clusterset IP on port %s, unless a route names the host", host, strings.Join(served, ", "))
	if len(not) > 0 {
		c.Message += fmt.Sprintf("; not on %s (not HTTP: %s)", strings.Join(not, ", "), hint)
	}
	return c
}
