package translate

import (
	"cmp"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"trellis.dev/trellis/internal/model"
)

// translateWorkloads makes a WorkloadSet per namespace of the pods that have
// an address of their own: running or starting, not on the host's network
// (whose address is the node's, shared by every such pod), and not sharing
// an address with another pod (an address two pods claim, briefly, while
// one leaves and its address is reused, names neither).
func (t *translator) translateWorkloads() {
	type claim struct {
		ns, sa string
		n      int
	}
	claims := map[netip.Addr]*claim{}
	for i := range t.in.Pods {
		p := &t.in.Pods[i]
		if p.Spec.HostNetwork || p.DeletionTimestamp != nil ||
			p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodPending {
			continue
		}
		sa := cmp.Or(p.Spec.ServiceAccountName, "default")
		ips := p.Status.PodIPs
		if len(ips) == 0 && p.Status.PodIP != "" {
			ips = []corev1.PodIP{{IP: p.Status.PodIP}}
		}
		for _, ip := range ips {
			a, err := netip.ParseAddr(ip.IP)
			if err != nil {
				continue
			}
			a = a.Unmap()
			if c := claims[a]; c != nil {
				c.n++
				continue
			}
			claims[a] = &claim{ns: p.Namespace, sa: sa, n: 1}
		}
	}
	sets := map[string]*model.WorkloadSet{}
	for a, c := range claims {
		if c.n > 1 {
			continue
		}
		s := sets[c.ns]
		if s == nil {
			s = &model.WorkloadSet{
				Meta:      model.Meta{Name: model.WorkloadSetName(t.in.Cluster, c.ns), Owner: t.in.Cluster},
				Namespace: c.ns,
			}
			sets[c.ns] = s
		}
		s.Workloads = append(s.Workloads, model.Workload{Address: a.String(), ServiceAccount: c.sa})
	}
	for _, s := range sets {
		slices.SortFunc(s.Workloads, func(a, b model.Workload) int {
			return netip.MustParseAddr(a.Address).Compare(netip.MustParseAddr(b.Address))
		})
		if err := s.Validate(); err != nil {
			t.invalid(ref("Namespace", "", s.Namespace), err, func(string) string { return "metadata.name" })
			continue
		}
		t.out.WorkloadSets = append(t.out.WorkloadSets, *s)
	}
	slices.SortFunc(t.out.WorkloadSets, func(a, b model.WorkloadSet) int { return cmp.Compare(a.Name, b.Name) })
}
