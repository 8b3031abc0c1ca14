package kubernetes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"trellis.dev/trellis/internal/mcs"
	"trellis.dev/trellis/internal/model"
)

// The MCS EndpointSlices (KEP-1645, "Using EndpointSlice objects to track
// endpoints"): beside each ServiceImport, the controller keeps the
// endpoints every exporting cluster published, one set of slices per
// cluster and address family, labelled with the import's name
// (multicluster.kubernetes.io/service-name) and the cluster
// (multicluster.kubernetes.io/source-cluster) and marked as its own
// (endpointslice.kubernetes.io/managed-by). They never carry
// kubernetes.io/service-name: nothing takes them for a local Service's
// endpoints, the controller's own exports included.
//
// They describe; they do not route. A client reaches another cluster's
// endpoints through its proxy (the addresses are the other cluster's, and
// may be the same as this cluster's).

// MCSSliceManager is the endpointslice.kubernetes.io/managed-by value of
// the slices the controller keeps for imports.
const MCSSliceManager = "mcs-controller.trellis.dev"

// maxSliceEndpoints is the API's limit of endpoints in one slice; a
// cluster's larger export is cut into several.
const maxSliceEndpoints = 1000

// importSlices are the slices the imports of groups should have: for each
// import (in a namespace that exists, im in merged), for each exporting
// cluster and address family, the cluster's targets on the import's ports.
// Endpoints whose ports differ go to different slices (a slice's ports
// are every one of its endpoints'). Slices are keyed by name.
func importSlices(groups map[[2]string][]*model.ServiceExport, merged map[[2]string]*mcs.Import, live map[string]bool) map[[2]string]*discoveryv1.EndpointSlice {
	out := map[[2]string]*discoveryv1.EndpointSlice{}
	for k, group := range groups {
		im := merged[k]
		if im == nil || !live[k[0]] {
			continue
		}
		for _, e := range group {
			for _, es := range exportSlices(im, e) {
				out[[2]string{es.Namespace, es.Name}] = es
			}
		}
	}
	return out
}

// exportSlices are cluster e.Owner's slices for import im.
func exportSlices(im *mcs.Import, e *model.ServiceExport) []*discoveryv1.EndpointSlice {
	type endpoint struct {
		addr  netip.Addr
		state model.TargetState
		// ports is the target port of each of the import's ports the
		// endpoint serves, by index in im.Ports; 0 where it serves none.
		ports []int32
	}
	byAddr := map[netip.Addr]*endpoint{}
	for i, ip := range im.Ports {
		j := slices.IndexFunc(e.Ports, func(p model.ExportPort) bool {
			return p.Name == ip.Name && p.Protocol == ip.Protocol && p.Port == ip.Port
		})
		if j < 0 {
			continue // a port of another cluster, or this one's conflicting port
		}
		for _, t := range e.Ports[j].Targets {
			a, err := netip.ParseAddr(t.Address)
			if err != nil || t.Cluster != e.Owner {
				continue
			}
			a = a.Unmap()
			ep := byAddr[a]
			if ep == nil {
				ep = &endpoint{addr: a, state: t.State, ports: make([]int32, len(im.Ports))}
				byAddr[a] = ep
			}
			if ep.ports[i] == 0 {
				ep.ports[i] = t.Port
			}
			if t.State == model.TargetActive {
				ep.state = model.TargetActive
			}
		}
	}
	// Group by family and ports.
	type group struct {
		family    discoveryv1.AddressType
		ports     []int32
		endpoints []*endpoint
	}
	groups := map[string]*group{}
	for _, ep := range byAddr {
		family := discoveryv1.AddressTypeIPv4
		if ep.addr.Is6() {
			family = discoveryv1.AddressTypeIPv6
		}
		key := fmt.Sprint(family, ep.ports)
		g := groups[key]
		if g == nil {
			g = &group{family: family, ports: ep.ports}
			groups[key] = g
		}
		g.endpoints = append(g.endpoints, ep)
	}
	var out []*discoveryv1.EndpointSlice
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		g := groups[key]
		slices.SortFunc(g.endpoints, func(a, b *endpoint) int { return a.addr.Compare(b.addr) })
		var ports []discoveryv1.EndpointPort
		for i, p := range g.ports {
			if p == 0 {
				continue
			}
			ip := im.Ports[i]
			port := discoveryv1.EndpointPort{Name: ptrTo(ip.Name), Protocol: ptrTo(corev1.Protocol(ip.Protocol)), Port: ptrTo(p)}
			if ip.AppProtocol != "" {
				port.AppProtocol = ptrTo(ip.AppProtocol)
			}
			ports = append(ports, port)
		}
		for chunk := 0; chunk*maxSliceEndpoints < len(g.endpoints); chunk++ {
			eps := g.endpoints[chunk*maxSliceEndpoints : min(len(g.endpoints), (chunk+1)*maxSliceEndpoints)]
			es := &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: im.Namespace,
					Name:      sliceName(im.Name, e.Owner, key, chunk),
					Labels: map[string]string{
						mcsv1beta1.LabelServiceName:   im.Name,
						mcsv1beta1.LabelSourceCluster: e.Owner,
						discoveryv1.LabelManagedBy:    MCSSliceManager,
					},
				},
				AddressType: g.family,
				Ports:       ports,
			}
			for _, ep := range eps {
				active := ep.state == model.TargetActive
				es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
					Addresses: []string{ep.addr.String()},
					Conditions: discoveryv1.EndpointConditions{
						Ready: ptrTo(active), Serving: ptrTo(true), Terminating: ptrTo(!active),
					},
				})
			}
			out = append(out, es)
		}
	}
	return out
}

func ptrTo[T any](v T) *T { return &v }

// sliceName is the name of one of cluster's slices of import name: the
// import's name and a hash of the cluster, the group and the chunk, so
// that it is stable and no two collide.
func sliceName(name, cluster, group string, chunk int) string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%d", cluster, group, chunk)
	return fmt.Sprintf("%s-%016x", name, h.Sum64())
}

// writeSlices makes the cluster's MCS slices (those it manages, among
// have) what want says, and returns how many it wrote.
func (r *Reconciler) writeSlices(ctx context.Context, have []discoveryv1.EndpointSlice, want map[[2]string]*discoveryv1.EndpointSlice) (int, error) {
	var errs []error
	n := 0
	existing := map[[2]string]*discoveryv1.EndpointSlice{}
	for i := range have {
		if es := &have[i]; es.Labels[discoveryv1.LabelManagedBy] == MCSSliceManager && es.DeletionTimestamp == nil {
			existing[[2]string{es.Namespace, es.Name}] = es
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(want), func(a, b [2]string) int { return cmp.Or(strings.Compare(a[0], b[0]), strings.Compare(a[1], b[1])) }) {
		es := want[k]
		old := existing[k]
		switch {
		case old == nil:
			err := r.kube.Create(ctx, es)
			switch {
			case err == nil:
				n++
			case !apierrors.IsAlreadyExists(err): // the cache is behind otherwise
				errs = append(errs, fmt.Errorf("creating EndpointSlice %s/%s: %w", es.Namespace, es.Name, err))
			}
		case old.AddressType != es.AddressType:
			// Immutable, and a hash collision besides: start again.
			errs = append(errs, r.kube.Delete(ctx, old.DeepCopy()))
		case !maps.Equal(old.Labels, es.Labels) || !equality.Semantic.DeepEqual(old.Ports, es.Ports) ||
			!equality.Semantic.DeepEqual(old.Endpoints, es.Endpoints):
			upd := old.DeepCopy()
			upd.Labels, upd.Ports, upd.Endpoints = es.Labels, es.Ports, es.Endpoints
			err := r.kube.Update(ctx, upd)
			switch {
			case err == nil:
				n++
			case !apierrors.IsNotFound(err) && !apierrors.IsConflict(err):
				errs = append(errs, fmt.Errorf("updating EndpointSlice %s/%s: %w", es.Namespace, es.Name, err))
			}
		}
	}
	for k, old := range existing {
		if want[k] != nil {
			continue
		}
		deleted, err := r.deleteUnchanged(ctx, old.DeepCopy(), "EndpointSlice")
		n += deleted
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

// deleteUnchanged deletes obj, a kind, unless it is gone or was replaced
// since it was read (the next pass sees to those), and returns how many
// objects it deleted: 1 or 0.
func (r *Reconciler) deleteUnchanged(ctx context.Context, obj client.Object, kind string) (int, error) {
	uid := obj.GetUID()
	err := r.kube.Delete(ctx, obj, client.Preconditions{UID: &uid})
	switch {
	case err == nil:
		return 1, nil
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		return 0, nil
	}
	return 0, fmt.Errorf("deleting %s %s/%s: %w", kind, obj.GetNamespace(), obj.GetName(), err)
}
