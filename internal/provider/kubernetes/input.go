package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/translate"
)

// changeSet is what the event handlers saw change since a reconcile last
// took it: the objects by kind and key.
type changeSet struct {
	mu   sync.Mutex
	keys map[objectKey]bool
}

// add records that obj, of kind, changed.
func (s *changeSet) add(kind string, obj client.Object) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = map[objectKey]bool{}
	}
	s.keys[objectKey{kind, obj.GetNamespace(), obj.GetName()}] = true
}

// take returns the changes recorded and starts a new set.
func (s *changeSet) take() map[objectKey]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.keys
	s.keys = nil
	return keys
}

// clusterRequest is the one key every event enqueues: the reconciler is
// level-based over the whole cluster, and a burst of events is one
// reconcile.
var clusterRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "cluster"}}

// tracked is the event handler of a kind the controller keeps a copy of
// (keptInput): every event records the object as changed, so that the
// next reconcile reads it again, and the events p passes (nil: all)
// enqueue a reconcile. A status-only update (ours, mostly) is recorded
// without a reconcile of its own: the copy must follow it, the output
// cannot.
func (s *changeSet) tracked(kind string, p predicate.Predicate, onChange func()) handler.EventHandler {
	enqueue := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], pass bool) {
		if pass || p == nil {
			if onChange != nil {
				onChange()
			}
			q.Add(clusterRequest)
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			s.add(kind, e.Object)
			enqueue(q, p != nil && p.Create(e))
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			s.add(kind, e.ObjectNew)
			enqueue(q, p != nil && p.Update(e))
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			s.add(kind, e.Object)
			enqueue(q, p != nil && p.Delete(e))
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			s.add(kind, e.Object)
			enqueue(q, p != nil && p.Generic(e))
		},
	}
}

// keptInput is the controller's copy of the objects the translator reads,
// kept between reconciles: a reconcile reads from the informer cache only
// the objects the event handlers saw change (changeSet), rather than
// listing every object, and keeps each list in the same order, so that the
// translator compares the lists position by position and sorts the routes
// once (translate.Incremental). Its objects are shallow copies of the
// cache's, whose contents must not be modified.
type keptInput struct {
	classes  []gatewayv1.GatewayClass
	gateways []gatewayv1.Gateway
	routes   []gatewayv1.HTTPRoute
	grpc     []gatewayv1.GRPCRoute
	tls      []gatewayv1.TLSRoute
	grants   []gatewayv1.ReferenceGrant
	policies []v1alpha1.AuthPolicy
	tgps     []v1alpha1.TargetGroupPolicy
	secrets  []corev1.Secret
	services []corev1.Service
	slices   []discoveryv1.EndpointSlice
	nsList   []corev1.Namespace
	pods     []corev1.Pod
	primed   bool
	kinds    map[string]*keptKind
	// seen, when set, is called with every object read into a list
	// before it is kept, and gone with every object removed.
	seen      func(kind string, o client.Object)
	gone      func(kind string, key types.NamespacedName)
	objects   int // in every list
	kindOrder []string
}

// keptKind reads the objects of one kind into its list of a keptInput.
type keptKind struct {
	// list replaces the list with every object of the cache.
	list func(ctx context.Context, c client.Reader) error
	// read reads the object named key from the cache into the list:
	// replaced where it is, added at the end, or removed when gone
	// (the last object takes its place).
	read func(ctx context.Context, c client.Reader, key types.NamespacedName) error
	// index finds an object's position in the list.
	index map[types.NamespacedName]int
	size  func() int
}

// objectPtr is a pointer to an object type T.
type objectPtr[T any] interface {
	*T
	client.Object
}

// keep makes the keptKind of ki's list items, of kind, which listAll
// lists whole.
func keep[T any, P objectPtr[T]](ki *keptInput, kind string, items *[]T, listAll func(ctx context.Context, c client.Reader) ([]T, error)) *keptKind {
	k := &keptKind{index: map[types.NamespacedName]int{}, size: func() int { return len(*items) }}
	nameOf := func(i int) types.NamespacedName {
		o := P(&(*items)[i])
		return types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
	}
	k.list = func(ctx context.Context, c client.Reader) error {
		l, err := listAll(ctx, c)
		if err != nil {
			return err
		}
		*items = l
		clear(k.index)
		for i := range l {
			if ki.seen != nil {
				ki.seen(kind, P(&l[i]))
			}
			k.index[nameOf(i)] = i
		}
		return nil
	}
	k.read = func(ctx context.Context, c client.Reader, key types.NamespacedName) error {
		var obj T
		err := c.Get(ctx, key, P(&obj), &client.GetOptions{UnsafeDisableDeepCopy: ptr(true)})
		if apierrors.IsNotFound(err) {
			if ki.gone != nil {
				ki.gone(kind, key)
			}
			i, had := k.index[key]
			if !had {
				return nil
			}
			last := len(*items) - 1
			(*items)[i] = (*items)[last]
			var zero T
			(*items)[last] = zero
			*items = (*items)[:last]
			delete(k.index, key)
			if i < last {
				k.index[nameOf(i)] = i
			}
			return nil
		}
		if err != nil {
			return err
		}
		if ki.seen != nil {
			ki.seen(kind, P(&obj))
		}
		if i, had := k.index[key]; had {
			(*items)[i] = obj
		} else {
			k.index[key] = len(*items)
			*items = append(*items, obj)
		}
		return nil
	}
	return k
}

// listKind returns the function that lists every object of a kind, whose
// list type is L, from the cache.
func listKind[T any, L any, PL interface {
	*L
	client.ObjectList
}](items func(*L) []T) func(ctx context.Context, c client.Reader) ([]T, error) {
	return func(ctx context.Context, c client.Reader) ([]T, error) {
		var l L
		if err := c.List(ctx, PL(&l), unsafeList); err != nil {
			return nil, err
		}
		return items(&l), nil
	}
}

// init makes the keptKinds of k, leaving out the kinds in skip.
func (k *keptInput) init(skip map[string]bool) {
	k.kinds = map[string]*keptKind{}
	add := func(kind string, kk *keptKind) {
		if skip[kind] {
			return
		}
		k.kinds[kind] = kk
		k.kindOrder = append(k.kindOrder, kind)
	}
	add("GatewayClass", keep(k, "GatewayClass", &k.classes, listKind(func(l *gatewayv1.GatewayClassList) []gatewayv1.GatewayClass { return l.Items })))
	add("Gateway", keep(k, "Gateway", &k.gateways, listKind(func(l *gatewayv1.GatewayList) []gatewayv1.Gateway { return l.Items })))
	add("HTTPRoute", keep(k, "HTTPRoute", &k.routes, listKind(func(l *gatewayv1.HTTPRouteList) []gatewayv1.HTTPRoute { return l.Items })))
	add("GRPCRoute", keep(k, "GRPCRoute", &k.grpc, listKind(func(l *gatewayv1.GRPCRouteList) []gatewayv1.GRPCRoute { return l.Items })))
	add("TLSRoute", keep(k, "TLSRoute", &k.tls, listKind(func(l *gatewayv1.TLSRouteList) []gatewayv1.TLSRoute { return l.Items })))
	add("ReferenceGrant", keep(k, "ReferenceGrant", &k.grants, listKind(func(l *gatewayv1.ReferenceGrantList) []gatewayv1.ReferenceGrant { return l.Items })))
	add("AuthPolicy", keep(k, "AuthPolicy", &k.policies, listKind(func(l *v1alpha1.AuthPolicyList) []v1alpha1.AuthPolicy { return l.Items })))
	add("TargetGroupPolicy", keep(k, "TargetGroupPolicy", &k.tgps, listKind(func(l *v1alpha1.TargetGroupPolicyList) []v1alpha1.TargetGroupPolicy { return l.Items })))
	add("Secret", keep(k, "Secret", &k.secrets, listKind(func(l *corev1.SecretList) []corev1.Secret { return l.Items })))
	add("Service", keep(k, "Service", &k.services, listKind(func(l *corev1.ServiceList) []corev1.Service { return l.Items })))
	add("EndpointSlice", keep(k, "EndpointSlice", &k.slices, listKind(func(l *discoveryv1.EndpointSliceList) []discoveryv1.EndpointSlice { return l.Items })))
	add("Namespace", keep(k, "Namespace", &k.nsList, listKind(func(l *corev1.NamespaceList) []corev1.Namespace { return l.Items })))
	add("Pod", keep(k, "Pod", &k.pods, listKind(func(l *corev1.PodList) []corev1.Pod { return l.Items })))
}

// maxReadShare is the share of the kept objects that a reconcile reads one
// by one; when more changed (a resync, the status writes of a first
// reconcile) it lists every object instead.
const maxReadShare = 8

// update brings k up to date with the cache: the objects in changed, or,
// the first time, when changed is nil or when many changed, every object.
// relisted reports the latter. After a failure the next update lists
// every object.
func (k *keptInput) update(ctx context.Context, c client.Reader, changed map[objectKey]bool) (relisted bool, err error) {
	relisted = !k.primed || len(changed)*maxReadShare > k.objects
	k.primed = false
	var errs []error
	if relisted {
		for _, kind := range k.kindOrder {
			if err := k.kinds[kind].list(ctx, c); err != nil {
				errs = append(errs, err)
			}
		}
	} else {
		// In one order every time, so that the lists' order does not
		// depend on the map's.
		for _, key := range slices.SortedFunc(maps.Keys(changed), compareKeys) {
			kk := k.kinds[key.kind]
			if kk == nil {
				continue
			}
			if err := kk.read(ctx, c, types.NamespacedName{Namespace: key.namespace, Name: key.name}); err != nil {
				errs = append(errs, fmt.Errorf("%s %s/%s: %w", key.kind, key.namespace, key.name, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return relisted, fmt.Errorf("reading the cluster: %w", err)
	}
	k.objects = 0
	for _, kk := range k.kinds {
		k.objects += kk.size()
	}
	k.primed = true
	return relisted, nil
}

// input is the translator's Input of k's lists.
func (k *keptInput) input() *translate.Input {
	return &translate.Input{
		GatewayClasses:      k.classes,
		Gateways:            k.gateways,
		HTTPRoutes:          k.routes,
		GRPCRoutes:          k.grpc,
		TLSRoutes:           k.tls,
		ReferenceGrants:     k.grants,
		AuthPolicies:        k.policies,
		TargetGroupPolicies: k.tgps,
		Secrets:             k.secrets,
		Services:            k.services,
		EndpointSlices:      k.slices,
		Namespaces:          k.nsList,
		Pods:                k.pods,
	}
}
