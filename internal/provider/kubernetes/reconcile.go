package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/consts"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/api/v1alpha1"
	tclient "trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/translate"
)

// Reconciler is the controller's one reconcile loop. Every event enqueues
// the same key; a reconcile reads the whole cluster from the informer cache,
// translates it (again only what depends on objects that changed:
// translate.Incremental), sends the model objects that changed since the last
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

	// sent is what the control plane holds of ours, by store key, in the
	// form the diff compares; nil until seeded from the server.
	sent map[string][]byte
	// translator translates each reconcile's input, re-translating only
	// the routes that read an object whose resourceVersion changed.
	translator translate.Incremental
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
}

// Stats returns a copy of the current statistics.
func (r *Reconciler) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// unsafeList lists from the informer cache without copying: the objects are
// shared with the cache and must not be modified (the translator does not;
// status writes copy first).
var unsafeList = client.UnsafeDisableDeepCopy

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	in, err := r.input(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
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
	r.associate(out)
	for _, p := range out.Problems {
		r.log.Debug("translation problem", "problem", p.String())
	}

	exports := r.exports(in, ses.Items)
	for _, res := range exports {
		if res.export != nil {
			out.Exports = append(out.Exports, *res.export)
		}
	}

	// The model first, then status: a route reported Accepted is served.
	rev, sent, err := r.send(ctx, out)
	if err != nil {
		return reconcile.Result{}, err
	}
	// The send compares every object with what it sent, so Changed is
	// not used: acknowledged, it stays small.
	r.translator.Acknowledge()
	writes, err := r.writeStatus(ctx, in, out)
	if !r.skip["ServiceExport"] {
		err = errors.Join(err, r.writeMCS(ctx, in, exports, imports.Items))
	}
	r.mu.Lock()
	r.stats.Reconciles++
	r.stats.Translate = took
	r.stats.Objects = len(out.Networks) + len(out.Services) + len(out.TargetGroups) + len(out.Certificates) + len(out.WorkloadSets)
	r.stats.Problems = len(out.Problems)
	r.stats.StatusWrites += writes
	if sent {
		r.stats.Sent++
		r.stats.Revision = rev
	}
	r.mu.Unlock()
	return reconcile.Result{}, err
}

// input reads every object the translator considers from the cache.
func (r *Reconciler) input(ctx context.Context) (*translate.Input, error) {
	var (
		classes   gatewayv1.GatewayClassList
		gateways  gatewayv1.GatewayList
		routes    gatewayv1.HTTPRouteList
		grpc      gatewayv1.GRPCRouteList
		tls       gatewayv1.TLSRouteList
		grants    gatewayv1.ReferenceGrantList
		secrets   corev1.SecretList
		services  corev1.ServiceList
		slices    discoveryv1.EndpointSliceList
		nsList    corev1.NamespaceList
		policies  v1alpha1.AuthPolicyList
		pods      corev1.PodList
		listFails []error
	)
	lists := []client.ObjectList{&classes, &gateways, &routes, &grants, &secrets, &services, &slices, &nsList, &policies, &pods}
	if !r.skip["GRPCRoute"] {
		lists = append(lists, &grpc)
	}
	if !r.skip["TLSRoute"] {
		lists = append(lists, &tls)
	}
	for _, l := range lists {
		if err := r.kube.List(ctx, l, unsafeList); err != nil {
			listFails = append(listFails, err)
		}
	}
	if err := errors.Join(listFails...); err != nil {
		return nil, fmt.Errorf("reading the cluster: %w", err)
	}
	in := &translate.Input{
		Cluster:           r.cluster,
		GatewayClasses:    classes.Items,
		Gateways:          gateways.Items,
		HTTPRoutes:        routes.Items,
		GRPCRoutes:        grpc.Items,
		TLSRoutes:         tls.Items,
		ReferenceGrants:   grants.Items,
		AuthPolicies:      policies.Items,
		Secrets:           secrets.Items,
		Services:          services.Items,
		EndpointSlices:    slices.Items,
		Namespaces:        nsList.Items,
		Pods:              pods.Items,
		GatewayAPIVersion: r.bundleVersion(ctx),
	}
	return in, nil
}

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
