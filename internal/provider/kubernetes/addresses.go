package kubernetes

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"

	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/translate"
)

// assignAddresses gives every edge Gateway that requests no address one
// from the pool, and records it in in.GatewayAddresses. An address once
// given is kept in the Gateway's GatewayAddressAnnotation, so it is stable
// across restarts; the rest are handed out lowest first, in namespace/name
// order. Addresses requested in any Gateway's spec.addresses are never
// handed out. Without a pool it does nothing.
func (r *Reconciler) assignAddresses(ctx context.Context, in *translate.Input) error {
	if !r.pool.IsValid() {
		return nil
	}
	edge := map[gatewayv1.ObjectName]bool{}
	for _, gc := range in.GatewayClasses {
		if gc.Spec.ControllerName == translate.EdgeController {
			edge[gatewayv1.ObjectName(gc.Name)] = true
		}
	}
	taken := map[netip.Addr]bool{}
	var want []*gatewayv1.Gateway
	for i := range in.Gateways {
		gw := &in.Gateways[i]
		for _, a := range gw.Spec.Addresses {
			if ip, err := netip.ParseAddr(a.Value); err == nil {
				taken[ip] = true
			}
		}
		if edge[gatewayv1.ObjectName(gw.Spec.GatewayClassName)] && len(gw.Spec.Addresses) == 0 {
			want = append(want, gw)
		}
	}
	slices.SortFunc(want, func(a, b *gatewayv1.Gateway) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	in.GatewayAddresses = map[string][]string{}
	var unassigned []*gatewayv1.Gateway
	// Keep the addresses already given, first come (by name) first served
	// should two Gateways claim the same one.
	for _, gw := range want {
		ip, err := netip.ParseAddr(gw.Annotations[GatewayAddressAnnotation])
		if err != nil || !r.pool.Contains(ip) || taken[ip] {
			unassigned = append(unassigned, gw)
			continue
		}
		taken[ip] = true
		in.GatewayAddresses[gw.Namespace+"/"+gw.Name] = []string{ip.String()}
	}
	next := r.pool.Masked().Addr().Next() // the prefix's own address is not handed out
	for _, gw := range unassigned {
		for next.IsValid() && r.pool.Contains(next) && taken[next] {
			next = next.Next()
		}
		if !next.IsValid() || !r.pool.Contains(next) {
			r.log.Warn("edge Gateway address pool exhausted", "pool", r.pool, "gateway", gw.Namespace+"/"+gw.Name)
			continue
		}
		if err := r.recordAddress(ctx, gw, next); err != nil {
			return err
		}
		taken[next] = true
		in.GatewayAddresses[gw.Namespace+"/"+gw.Name] = []string{next.String()}
	}
	return nil
}

// recordAddress writes ip into gw's GatewayAddressAnnotation.
func (r *Reconciler) recordAddress(ctx context.Context, gw *gatewayv1.Gateway, ip netip.Addr) error {
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, GatewayAddressAnnotation, ip.String())
	obj := &gatewayv1.Gateway{}
	obj.Namespace, obj.Name = gw.Namespace, gw.Name
	if err := r.kube.Patch(ctx, obj, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		return fmt.Errorf("recording address %s on Gateway %s/%s: %w", ip, gw.Namespace, gw.Name, err)
	}
	r.countWrites(1)
	return nil
}

// publishProxyAddress gives every programmed edge Gateway that requests no
// address, and was assigned none, the proxy's own bind address in its
// status: that is where the proxy serves it. Only the status changes; the
// model keeps the Gateway on the proxy's default bind, shared with the
// service networks' listeners.
func (r *Reconciler) publishProxyAddress(in *translate.Input, out *translate.Output) {
	if !r.proxyAddr.IsValid() {
		return
	}
	edge := map[string]bool{}
	for _, gc := range in.GatewayClasses {
		if gc.Spec.ControllerName == translate.EdgeController {
			edge[gc.Name] = true
		}
	}
	for i := range out.Status.Gateways {
		st := &out.Status.Gateways[i]
		j := slices.IndexFunc(in.Gateways, func(gw gatewayv1.Gateway) bool { return gw.Namespace == st.Namespace && gw.Name == st.Name })
		if j < 0 {
			continue
		}
		gw := &in.Gateways[j]
		programmed := slices.ContainsFunc(st.Conditions, func(c translate.Condition) bool {
			return c.Type == string(gatewayv1.GatewayConditionProgrammed) && c.Status
		})
		if !edge[string(gw.Spec.GatewayClassName)] || len(gw.Spec.Addresses) > 0 || len(st.Addresses) > 0 || !programmed {
			continue
		}
		st.Addresses = []gatewayv1.GatewayStatusAddress{{Type: ptr(gatewayv1.IPAddressType), Value: r.proxyAddr.String()}}
	}
}

func ptr[T any](v T) *T { return &v }
