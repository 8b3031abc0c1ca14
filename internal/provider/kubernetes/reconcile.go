package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/consts"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	tclient "trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/translate"
)

// Reconciler is the controller's one reconcile loop. Every event enqueues
// the same key and records which object changed; a reconcile reads the
// objects that changed from the informer cache into its copy of the
// cluster's (keptInput), translates it (again only what depends on objects
// that changed: translate.Incremental), sends the model objects that changed since the last
// successful send, and writes the status that changed.
type Reconciler struct {
	kube    client.Client
	reader  client.Reader // uncached, for conflict retries and the CRD version
	cp      *tclient.Client
	cluster string
	pool    netip.Prefix
	// proxyAddr, when valid, is published as the address of edge
	// Gateways that have none (see Config.ProxyAddress).
	proxyAddr netip.Addr
	log       *slog.Logger
	// skip holds the optional kinds the cluster does not serve, which are
	// neither watched nor listed.
	skip map[string]bool
	// clusterSetIP, when valid, is the IP of ClusterSetIP ServiceImports
	// (see Config.ClusterSetIP).
	clusterSetIP netip.Addr
	// view is every cluster's exports, from the control plane.
	view *exportView

	// sent is what the control plane holds of ours: the digest of each
	// object's stored form, by store key; nil until seeded from the
	// server.
	sent map[string]digest
	// refused are the objects of ours the control plane refused at the
	// last send (another cluster owns the name, or a rule of its own),
	// by store key, with why: kept out of sent and offered again at
	// every send, until taken.
	refused map[string]string
	// status writes the statuses that differ in the background.
	status *statusQueue
	// routes records, by route, the status and annotation last found
	// right or written, so that a reconcile compares only routes whose
	// status may have changed; statusMu guards it (the status writes
	// update it).
	statusMu sync.Mutex
	routes   map[objectKey]routeSeen
	// versions are the versions the translator is given of the objects
	// whose status the controller writes (steady).
	versions map[objectKey]steadyVersion
	// own are the store keys of the objects the controller itself added to
	// or removed from the last translation's output (exports, and what
	// association left out), compared again on the next send.
	own []string
	// translator translates each reconcile's input, re-translating only
	// the routes that read an object whose resourceVersion changed.
	translator translate.Incremental
	// changes are the objects the event handlers saw change since the
	// last reconcile, which reads them into kept, its copy of the
	// cluster's objects.
	changes changeSet
	kept    keptInput
	// statusAll has the next reconcile compare every route's status.
	statusAll bool
	// lastStart is when the last reconcile started (burstSpacing).
	lastStart time.Time
	// tgpStatus and authStatus are the TargetGroupPolicies' and
	// AuthPolicies' status writers' (policystatus.go).
	tgpStatus, authStatus policyStatusState
	// nothingSent, when set, is called when a reconcile sends nothing
	// (see Config.OnChange).
	nothingSent func()
	// version is the Gateway API bundle version, read once.
	version     string
	versionRead bool

	mu    sync.Mutex
	stats Stats
}

// Stats describes the latest reconcile, for tests and benchmarks.
type Stats struct {
	// Reconciles counts completed reconciles.
	Reconciles int
	// Sent counts transactions sent to the control plane; Revision is the
	// control-plane revision after the latest.
	Sent     int
	Revision int64
	// Translate is how long the latest translation took.
	Translate time.Duration
	// Objects and Problems are the sizes of the latest translation.
	Objects, Problems int
	// StatusWrites counts status and annotation writes.
	StatusWrites int
	// Encoded is how many objects the latest send encoded and compared:
	// what changed, or every object when it compared them all.
	Encoded int
	// StatusChecked is how many routes the latest reconcile compared
	// with the status they should have: those whose status may have
	// changed since it was last written or found right.
	StatusChecked int
	// PoliciesChecked is how many AuthPolicies and TargetGroupPolicies
	// the latest reconcile compared with the status they should have:
	// every one after a relist or a failure, otherwise those whose status
	// the translator made again, those that changed since their status
	// was last written or found right, and those still to be written.
	PoliciesChecked int
	// StatusConflicts counts status and annotation writes the apiserver
	// refused as conflicts (each then read the object again).
	StatusConflicts int
	// StatusQueued is how many objects' status writes are waiting or in
	// flight now.
	StatusQueued int
}

// Stats returns a copy of the current statistics.
func (r *Reconciler) Stats() Stats {
	r.mu.Lock()
	st := r.stats
	r.mu.Unlock()
	if r.status != nil {
		st.StatusQueued = r.status.pending()
	}
	return st
}

// unsafeList lists from the informer cache without copying: the objects are
// shared with the cache and must not be modified (the translator does not;
// status writes copy first).
var unsafeList = client.UnsafeDisableDeepCopy

// burstSpacing is the least time from one reconcile's start to the next
// while more status writes wait than statusWorkers make at once: while
// objects arrive in a burst, each reconcile would otherwise send a
// transaction of a few routes, which the control plane stores and every
// proxy applies, and queue their statuses behind the ones waiting anyway.
// The events of the wait are taken by the reconcile that follows it.
const burstSpacing = 50 * time.Millisecond

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	if r.status != nil && r.status.pending() > statusWorkers {
		if wait := burstSpacing - time.Since(r.lastStart); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return reconcile.Result{}, ctx.Err()
			case <-t.C:
			}
		}
	}
	r.lastStart = time.Now()
	changed := r.changes.take()
	// A reconcile that fails before its status is compared leaves the
	// next to compare every route's: the changes it took are gone.
	failed := true
	defer func() {
		if failed {
			r.statusAll = true
		}
	}()
	relisted, err := r.kept.update(ctx, r.kube, changed)
	if err != nil {
		return reconcile.Result{}, err
	}
	in := r.kept.input()
	if relisted {
		if n := len(in.GatewayClasses) + len(in.Gateways) + len(in.HTTPRoutes) + len(in.GRPCRoutes) + len(in.TLSRoutes); len(r.versions) > n {
			live := liveObjects(in)
			maps.DeleteFunc(r.versions, func(k objectKey, _ steadyVersion) bool { return !live[k] })
		}
	}
	in.Cluster = r.cluster
	in.GatewayAPIVersion = r.bundleVersion(ctx)
	var (
		ses     mcsv1beta1.ServiceExportList
		imports mcsv1beta1.ServiceImportList
	)
	if !r.skip["ServiceExport"] {
		if err := errors.Join(r.kube.List(ctx, &ses, unsafeList), r.kube.List(ctx, &imports, unsafeList)); err != nil {
			return reconcile.Result{}, fmt.Errorf("reading the cluster: %w", err)
		}
		// Routes may name the imports as backends (GEP-1748).
		in.ServiceImports = imports.Items
	}
	if err := r.assignAddresses(ctx, in); err != nil {
		return reconcile.Result{}, err
	}
	start := time.Now()
	out := r.translator.Translate(in)
	took := time.Since(start)
	r.publishProxyAddress(in, out)
	// What the controller changes after translating, the translator does
	// not know of: those keys are compared on every send, and the next
	// one's too (to send their reversal).
	own := r.associate(out)
	for _, p := range out.Problems {
		r.log.Debug("translation problem", "problem", p.String())
	}

	exports := r.exports(in, ses.Items)
	for _, res := range exports {
		if res.export != nil {
			out.Exports = append(out.Exports, *res.export)
			own = append(own, key(res.export))
		}
	}
	slices.SortFunc(out.Exports, func(a, b model.ServiceExport) int { return strings.Compare(a.Name, b.Name) })
	modelChanged := out.Changed // the caller's to change
	if modelChanged != nil {
		for _, k := range own {
			modelChanged[k] = true
		}
		for _, k := range r.own {
			modelChanged[k] = true
		}
	}

	// The model first, then status: a route reported Accepted is served.
	rev, sent, err := r.send(ctx, &out.Objects, modelChanged)
	if !sent && r.nothingSent != nil {
		r.nothingSent()
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	failed = false
	r.own = own
	r.translator.Acknowledge()
	r.writeStatus(in, out, r.statusRoutes(changed, out, relisted), changed)
	if !r.skip["ServiceExport"] {
		err = r.writeMCS(ctx, in, exports, imports.Items)
	}
	r.mu.Lock()
	r.stats.Reconciles++
	r.stats.Translate = took
	r.stats.Objects = len(out.Networks) + len(out.Services) + len(out.TargetGroups) + len(out.Certificates) + len(out.WorkloadSets)
	r.stats.Problems = len(out.Problems)
	if sent {
		r.stats.Sent++
		r.stats.Revision = rev
	}
	r.mu.Unlock()
	if len(r.refused) > 0 {
		// Nothing here changes when the other cluster frees a name.
		return reconcile.Result{RequeueAfter: refusedRetry}, err
	}
	return reconcile.Result{}, err
}

// refusedRetry is how long after a reconcile whose send was refused some
// objects the controller offers them again, when nothing in the cluster
// changes before.
const refusedRetry = time.Minute

// bundleVersion reads the Gateway API bundle version from the Gateway CRD
// once, or "" when it cannot (no permission, or CRDs installed without
// the annotation). Upgrading the CRDs calls for a restart of the
// controller, as upgrading the controller does.
func (r *Reconciler) bundleVersion(ctx context.Context) string {
	if r.versionRead {
		return r.version
	}
	var crd apiextensionsv1.CustomResourceDefinition
	err := r.reader.Get(ctx, types.NamespacedName{Name: "gateways." + gatewayv1.GroupName}, &crd)
	switch {
	case apierrors.IsForbidden(err) || apierrors.IsNotFound(err):
		r.log.Warn("cannot read the Gateway CRD's bundle version; GatewayClasses will not report SupportedVersion", "err", err)
		r.versionRead = true
		return ""
	case err != nil:
		r.log.Warn("cannot read the Gateway CRD's bundle version; will try again", "err", err)
		return ""
	}
	r.versionRead = true
	r.version = crd.Annotations[consts.BundleVersionAnnotation]
	return r.version
}

// steadyVersion is what the translator was last given as the version of
// an object, and what it was given for.
type steadyVersion struct {
	resourceVersion, version string
	uid                      types.UID
	generation               int64
	labels, annotations      map[string]string
}

// steady gives o, of kind, as just read into the kept input, the
// resourceVersion the translator sees (translate.Incremental re-translates
// what reads an object whose version changed) when o is one of the objects
// whose status the controller writes (routes, Gateways, GatewayClasses):
// one that changes with what the translator reads of them, their
// generation (spec), labels and annotations (and which object of the name
// it is, its UID), and not with their status. The controller's own status
// write would otherwise have the next reconcile translate the route again,
// or, for a Gateway, everything. Their own versions are kept in
// r.versions, for the writes (ownVersion).
func (r *Reconciler) steady(kind string, o client.Object) {
	switch kind {
	case "GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "TLSRoute":
	default:
		return
	}
	if r.versions == nil {
		r.versions = map[objectKey]steadyVersion{}
	}
	k := objectKey{kind, o.GetNamespace(), o.GetName()}
	rv := o.GetResourceVersion()
	v, ok := r.versions[k]
	switch {
	case ok && v.resourceVersion == rv:
	case ok && v.uid == o.GetUID() && v.generation == o.GetGeneration() &&
		maps.Equal(v.labels, o.GetLabels()) && maps.Equal(v.annotations, o.GetAnnotations()):
		v.resourceVersion = rv
		r.versions[k] = v
	default:
		v = steadyVersion{resourceVersion: rv, version: rv, uid: o.GetUID(), generation: o.GetGeneration(),
			labels: o.GetLabels(), annotations: o.GetAnnotations()}
		r.versions[k] = v
	}
	o.SetResourceVersion(v.version)
}

// gone forgets the versions of an object of kind no longer in the cluster.
func (r *Reconciler) gone(kind string, key types.NamespacedName) {
	delete(r.versions, objectKey{kind, key.Namespace, key.Name})
}

// ownResourceVersion is the resourceVersion the apiserver gave o, of kind,
// of the kept input (where steady may have given it another).
func (r *Reconciler) ownResourceVersion(kind string, o client.Object) string {
	if v, ok := r.versions[objectKey{kind, o.GetNamespace(), o.GetName()}]; ok {
		return v.resourceVersion
	}
	return o.GetResourceVersion()
}

// ownVersion returns o, of kind, of the kept input as the apiserver has it,
// for a write: o itself, or a copy with its own resourceVersion.
func (r *Reconciler) ownVersion(kind string, o client.Object) client.Object {
	rv := r.ownResourceVersion(kind, o)
	if rv == o.GetResourceVersion() {
		return o
	}
	c := o.DeepCopyObject().(client.Object)
	c.SetResourceVersion(rv)
	return c
}

// liveObjects names the GatewayClasses, Gateways and routes of in.
func liveObjects(in *translate.Input) map[objectKey]bool {
	live := make(map[objectKey]bool, len(in.GatewayClasses)+len(in.Gateways)+len(in.HTTPRoutes)+len(in.GRPCRoutes)+len(in.TLSRoutes))
	for i := range in.GatewayClasses {
		live[objectKey{"GatewayClass", "", in.GatewayClasses[i].Name}] = true
	}
	for i := range in.Gateways {
		live[objectKey{"Gateway", in.Gateways[i].Namespace, in.Gateways[i].Name}] = true
	}
	for i := range in.HTTPRoutes {
		live[objectKey{"HTTPRoute", in.HTTPRoutes[i].Namespace, in.HTTPRoutes[i].Name}] = true
	}
	for i := range in.GRPCRoutes {
		live[objectKey{"GRPCRoute", in.GRPCRoutes[i].Namespace, in.GRPCRoutes[i].Name}] = true
	}
	for i := range in.TLSRoutes {
		live[objectKey{"TLSRoute", in.TLSRoutes[i].Namespace, in.TLSRoutes[i].Name}] = true
	}
	return live
}
