// Package kubernetes is the Kubernetes provider, the controller of
// `trellis controller`: it watches a cluster's Gateway API objects and the
// Services, EndpointSlices, Namespaces and TLS Secrets they use, translates
// them with package translate (the same translator the file provider
// uses), sends what changed to the control plane in one transaction, and
// writes the translator's verdict back as the objects' status, which is
// what users read in `kubectl get gateway,httproute`.
//
// It owns the watch, the check that the CRDs it watches are served (and the
// installation of trellis's own for `trellis up`), the in-memory record of
// what it last sent, the allocation of edge Gateway addresses, status and
// annotation writes, and the Secret that keeps the cluster's identity
// (SecretStore).
// It must not interpret Gateway API semantics (translate's job), reach the
// store except through the control-plane API (package client), or touch
// any object's spec.
package kubernetes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/api/v1alpha1"
	tclient "trellis.dev/trellis/internal/client"
)

// Annotations the controller writes.
const (
	// AssignedDomainNameAnnotation is set on routes attached to a service
	// network: the generated DNS name the route is reachable at. A route
	// attached to several service networks has one name per network,
	// comma-separated and sorted.
	AssignedDomainNameAnnotation = "trellis.dev/assigned-domain-name"
	// GatewayAddressAnnotation records the address allocated to an edge
	// Gateway from the address pool, so that it survives restarts of the
	// controller. The controller writes it; a user may remove it to have a
	// new address allocated.
	GatewayAddressAnnotation = "trellis.dev/gateway-address"
	// GatewayClassFinalizer keeps a GatewayClass while Gateways use it, as
	// the Gateway API recommends.
	GatewayClassFinalizer = "gateway-exists-finalizer.gateway.networking.k8s.io"
)

// Config configures Run.
type Config struct {
	// Kube is how to reach the Kubernetes API server.
	Kube *rest.Config
	// ControlPlane is the control-plane API client; its token's cluster is
	// the owner of everything the controller sends.
	ControlPlane *tclient.Client
	// Cluster is the name of this cluster, the owner of every translated
	// object. It must be the cluster the ControlPlane token authenticates as.
	Cluster string
	// AddressPool, when valid, is where edge Gateways that request no
	// address get one (recorded in GatewayAddressAnnotation). When not
	// valid, edge Gateways carry no address and the proxy serves them on its
	// own bind address.
	AddressPool netip.Prefix
	// ProxyAddress, when valid and specified (not 0.0.0.0 or ::), is the
	// proxy's own bind address (`trellis up --bind`). Without a pool, edge
	// Gateways that request no address are served there, and it is the
	// address their status publishes. Without it they publish none: a
	// proxy bound to every address, or several proxies, have no one
	// address to publish.
	ProxyAddress netip.Addr
	// ClusterSetIP, when valid, is the address clients of this cluster
	// reach exported services at: the local proxy's, which the built-in
	// nameserver answers for <svc>.<ns>.svc.clusterset.local. It is the
	// one IP of every ClusterSetIP ServiceImport the controller writes.
	// Without it those imports carry no IPs.
	ClusterSetIP netip.Addr
	// MetricsAddress serves Prometheus metrics ("0" disables; default
	// ":8080" as controller-runtime's).
	MetricsAddress string
	// HealthAddress serves /healthz and /readyz ("0" disables).
	HealthAddress string
	// LeaderElection makes only one of several replicas reconcile, holding
	// a Lease in LeaderElectionNamespace.
	LeaderElection          bool
	LeaderElectionNamespace string
	// APIQPS and APIBurst, when APIQPS is above zero, are the API client's
	// request rate and burst (a burst of zero is twice the rate), whatever
	// Kube sets; otherwise Kube's own, or clientQPS and clientBurst when it
	// sets none. A large cluster's first reconcile writes a status per
	// route: 10,000 routes at 100 a second take 100 s.
	APIQPS   float32
	APIBurst int
	// OnChange, if set, is called when an event that calls for a
	// reconcile arrives, and NothingSent when a reconcile found nothing to
	// send to the control plane: `trellis up` holds the in-process
	// proxy's health checks from one until the proxy applied the change,
	// or until the other (runner.CheckHold). They must not block.
	OnChange, NothingSent func()
	// SyncPeriod is how often the informers resync (default 10 h, as
	// controller-runtime's). A resync that changes nothing sends nothing.
	SyncPeriod time.Duration
	Logger     *slog.Logger
}

// Scheme returns the types the controller reads and writes.
func Scheme() (*runtime.Scheme, error) {
	return newScheme(mcsv1beta1.GroupVersion.Version)
}

// newScheme is Scheme with the Multi-Cluster Services kinds read and written
// at mcsVersion. The v1beta1 Go types serve for v1alpha1 too: the two
// versions' ServiceExport and ServiceImport have the same fields.
func newScheme(mcsVersion string) (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme,
		apiextensionsv1.AddToScheme,
		gatewayv1.Install,
		v1alpha1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	gv := schema.GroupVersion{Group: mcsv1beta1.GroupName, Version: mcsVersion}
	s.AddKnownTypes(gv, &mcsv1beta1.ServiceExport{}, &mcsv1beta1.ServiceExportList{},
		&mcsv1beta1.ServiceImport{}, &mcsv1beta1.ServiceImportList{})
	metav1.AddToGroupVersion(s, gv)
	return s, nil
}

// Run runs the controller until ctx ends. It fails at once, with a
// *MissingCRDsError, when a CRD it requires is not served.
func Run(ctx context.Context, cfg Config) error {
	mgr, _, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// Client-side request limits of the controller's API client, when the
// configuration sets none. client-go's defaults (5 requests a second, bursts
// of 10) throttle status writes: one change can touch the status of every
// route on a Gateway, and a test suite or a rollout makes many changes a
// second, so Gateways showed stale attached-route counts for over a minute.
// The apiserver protects itself (API Priority and Fairness); these bound
// what one controller sends.
const (
	clientQPS   = 100
	clientBurst = 200
)

// clientLimits returns kube with the request limits cfg gives it (see
// Config.APIQPS), else with clientQPS and clientBurst unless it sets limits
// of its own.
func clientLimits(kube *rest.Config, qps float32, burst int) *rest.Config {
	if qps > 0 {
		kube = rest.CopyConfig(kube)
		kube.RateLimiter = nil
		kube.QPS, kube.Burst = qps, burst
		if burst <= 0 {
			kube.Burst = max(1, int(2*qps))
		}
		return kube
	}
	if kube.QPS != 0 || kube.RateLimiter != nil {
		return kube
	}
	kube = rest.CopyConfig(kube)
	kube.QPS, kube.Burst = clientQPS, clientBurst
	return kube
}

// New checks that the cluster serves the CRDs the controller requires
// (see Watched) and builds the controller's manager without starting it,
// watching the optional kinds that are served. It returns the reconciler
// for tests to observe.
func New(ctx context.Context, cfg Config) (manager.Manager, *Reconciler, error) {
	if cfg.Kube == nil || cfg.ControlPlane == nil || cfg.Cluster == "" {
		return nil, nil, errors.New("controller: Kube, ControlPlane and Cluster are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	missing, err := ServedCRDs(ctx, cfg.Kube)
	if err != nil {
		return nil, nil, fmt.Errorf("controller: %w", err)
	}
	// The Multi-Cluster Services kinds at v1beta1, or else (an mcs-api
	// install before v0.3) at v1alpha1.
	mcsVersion := mcsv1beta1.GroupVersion.Version
	if slices.ContainsFunc(missing, func(c CRD) bool { return c.Group == mcsv1beta1.GroupName }) && servesMCSv1alpha1(ctx, cfg.Kube) {
		mcsVersion = "v1alpha1"
		missing = slices.DeleteFunc(missing, func(c CRD) bool { return c.Group == mcsv1beta1.GroupName })
		cfg.Logger.Info("the cluster serves the Multi-Cluster Services API at v1alpha1, not v1beta1; the controller uses v1alpha1")
	}
	unserved := map[string]bool{}
	for _, c := range missing {
		unserved[c.Kind] = true
		cfg.Logger.Warn("CRD not served; the controller runs without it (install it and restart to serve its objects)",
			"crd", c.Name, "kind", c.Kind, "install", c.Install())
	}
	// Multi-Cluster Services need both kinds; with one of them alone the
	// controller leaves both.
	if unserved["ServiceExport"] != unserved["ServiceImport"] {
		cfg.Logger.Warn("only one of the Multi-Cluster Services CRDs is served; the controller runs without Multi-Cluster Services",
			"install", mcsInstall)
		unserved["ServiceExport"], unserved["ServiceImport"] = true, true
	}
	scheme, err := newScheme(mcsVersion)
	if err != nil {
		return nil, nil, err
	}
	opts := ctrl.Options{
		Scheme:                  scheme,
		Logger:                  logr.FromSlogHandler(cfg.Logger.Handler()),
		Metrics:                 metricsserver.Options{BindAddress: cmp.Or(cfg.MetricsAddress, "0")},
		HealthProbeBindAddress:  cmp.Or(cfg.HealthAddress, "0"),
		LeaderElection:          cfg.LeaderElection,
		LeaderElectionID:        "trellis-controller.trellis.dev",
		LeaderElectionNamespace: cfg.LeaderElectionNamespace,
		// A replica that stops (a rolling update, a drain) hands the
		// Lease back, so the next one leads at once instead of after the
		// lease runs out. Safe because nothing reconciles once the
		// manager has stopped: `trellis controller` exits, and `trellis
		// up` is shutting down.
		LeaderElectionReleaseOnCancel: true,
	}
	if cfg.SyncPeriod > 0 {
		opts.Cache.SyncPeriod = &cfg.SyncPeriod
	}
	// Only TLS Secrets can hold listener certificates; the cache (and the
	// watch) leaves every other Secret out.
	opts.Cache.ByObject = map[client.Object]cache.ByObject{
		&corev1.Secret{}: {Field: fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS))},
		// Pods are many and large; the cache keeps what workload
		// identities need.
		&corev1.Pod{}: {Transform: trimPod},
	}
	mgr, err := ctrl.NewManager(clientLimits(cfg.Kube, cfg.APIQPS, cfg.APIBurst), opts)
	if err != nil {
		return nil, nil, fmt.Errorf("controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, nil, err
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return nil, nil, err
	}
	r := &Reconciler{
		kube:    mgr.GetClient(),
		reader:  mgr.GetAPIReader(),
		cp:      cfg.ControlPlane,
		cluster: cfg.Cluster,
		pool:    cfg.AddressPool,
		log:     cfg.Logger,
		skip:    unserved,
		view:    &exportView{},
	}
	// Statuses are written in the background, by workers that run while
	// the controller leads.
	r.status = newStatusQueue(r.writeCounted, cfg.Logger)
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return r.status.run(ctx, statusWorkers)
	})); err != nil {
		return nil, nil, fmt.Errorf("controller: %w", err)
	}
	if ip := cfg.ClusterSetIP; ip.IsValid() && !ip.IsUnspecified() {
		r.clusterSetIP = ip.Unmap()
	}
	if ip := cfg.ProxyAddress; ip.IsValid() && !ip.IsUnspecified() && !cfg.AddressPool.IsValid() {
		r.proxyAddr = ip.Unmap()
	}
	r.kept.init(unserved)
	r.kept.seen, r.kept.gone = r.steady, r.gone
	r.nothingSent = cfg.NothingSent
	// Every event maps to the one key (clusterRequest): the reconciler is
	// level-based over the whole cluster, and a burst of events is one
	// reconcile. The kinds the reconciler keeps a copy of also record
	// which object changed (changeSet.tracked).
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{clusterRequest}
	})
	// Status writes (ours and other controllers') do not change what is
	// translated; spec, label and annotation changes do.
	specChanged := predicate.Or(predicate.GenerationChangedPredicate{},
		predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{}, finalizersChanged{})
	track := func(kind string, p predicate.Predicate) handler.EventHandler {
		return r.changes.tracked(kind, p, cfg.OnChange)
	}
	skipNameValidation := true
	b := ctrl.NewControllerManagedBy(mgr).
		Named("trellis").
		WithOptions(crcontroller.Options{MaxConcurrentReconciles: 1, SkipNameValidation: &skipNameValidation}).
		Watches(&gatewayv1.GatewayClass{}, track("GatewayClass", specChanged)).
		Watches(&gatewayv1.Gateway{}, track("Gateway", specChanged)).
		Watches(&gatewayv1.HTTPRoute{}, track("HTTPRoute", specChanged))
	if !unserved["GRPCRoute"] {
		b = b.Watches(&gatewayv1.GRPCRoute{}, track("GRPCRoute", specChanged))
	}
	if !unserved["TLSRoute"] {
		b = b.Watches(&gatewayv1.TLSRoute{}, track("TLSRoute", specChanged))
	}
	b = b.Watches(&gatewayv1.ReferenceGrant{}, track("ReferenceGrant", nil)).
		Watches(&corev1.Secret{}, track("Secret", nil)).
		Watches(&corev1.Service{}, track("Service", nil)).
		Watches(&discoveryv1.EndpointSlice{}, track("EndpointSlice", nil)).
		Watches(&corev1.Namespace{}, track("Namespace", predicate.LabelChangedPredicate{})).
		Watches(&v1alpha1.AuthPolicy{}, track("AuthPolicy", specChanged)).
		Watches(&v1alpha1.TargetGroupPolicy{}, track("TargetGroupPolicy", specChanged)).
		Watches(&corev1.Pod{}, track("Pod", identityChanged{}))
	// Every cluster's exports, and which cluster owns each service
	// network, come from the control plane: a change there is an event
	// like a change in the cluster.
	events := make(chan event.GenericEvent, 1)
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return r.follow(ctx, cfg.ControlPlane, events)
	})); err != nil {
		return nil, nil, fmt.Errorf("controller: %w", err)
	}
	b = b.WatchesRawSource(source.Channel(events, all))
	if !unserved["ServiceExport"] {
		b = b.Watches(&mcsv1beta1.ServiceExport{}, all, builder.WithPredicates(specChanged)).
			Watches(&mcsv1beta1.ServiceImport{}, all, builder.WithPredicates(specChanged))
	}
	err = b.Complete(r)
	if err != nil {
		return nil, nil, fmt.Errorf("controller: %w", err)
	}
	return mgr, r, nil
}

// trimPod keeps of a pod what its workload identity needs: its name,
// namespace, service account, host networking, phase and addresses.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec:   corev1.PodSpec{ServiceAccountName: p.Spec.ServiceAccountName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}, nil
}

// identityChanged passes pod events that can change a workload identity:
// creation, deletion, and updates of what trimPod keeps.
type identityChanged struct{ predicate.Funcs }

func (identityChanged) Update(e event.UpdateEvent) bool {
	a, ok1 := e.ObjectOld.(*corev1.Pod)
	b, ok2 := e.ObjectNew.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	return a.Spec.ServiceAccountName != b.Spec.ServiceAccountName || a.Spec.HostNetwork != b.Spec.HostNetwork ||
		a.Status.Phase != b.Status.Phase || a.Status.PodIP != b.Status.PodIP ||
		!slices.Equal(a.Status.PodIPs, b.Status.PodIPs) || (a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil)
}

// finalizersChanged passes updates that change an object's finalizers or
// start its deletion, which GatewayClass finalizer handling must see.
type finalizersChanged struct{ predicate.Funcs }

func (finalizersChanged) Update(e event.UpdateEvent) bool {
	if e.ObjectOld == nil || e.ObjectNew == nil {
		return false
	}
	return !e.ObjectOld.GetDeletionTimestamp().Equal(e.ObjectNew.GetDeletionTimestamp()) ||
		len(e.ObjectOld.GetFinalizers()) != len(e.ObjectNew.GetFinalizers())
}
