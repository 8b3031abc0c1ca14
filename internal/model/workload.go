package model

import (
	"fmt"
	"net/netip"
)

// WorkloadSet names the workloads of one namespace of one cluster (its
// Owner) by address: the identity the platform gave each pod, its service
// account, which a proxy of that cluster asserts for requests coming from
// the pod's address. The platform proves it: a pod cannot send from
// another pod's address on a pod network. Pods on the host's network share
// the node's address and so are left out; an address two pods claim is
// left out too.
type WorkloadSet struct {
	Meta
	// Namespace is the Kubernetes namespace of the workloads.
	Namespace string `json:"namespace"`
	// Workloads are sorted by address.
	Workloads []Workload `json:"workloads"`
	Source    *SourceRef `json:"source,omitempty"`
}

// Workload is one pod address and the service account the pod runs as.
type Workload struct {
	Address        string `json:"address"`
	ServiceAccount string `json:"serviceAccount"`
}

// ObjectMeta implements Object.
func (w *WorkloadSet) ObjectMeta() *Meta { return &w.Meta }

// ObjectKind implements Object.
func (*WorkloadSet) ObjectKind() Kind { return KindWorkloadSet }

// WorkloadSetName is the name of the WorkloadSet of namespace in cluster.
func WorkloadSetName(cluster, namespace string) string { return namespace + "." + cluster }

// Principal is the identity of a workload of the set, as auth policies
// name it: "spiffe://<cluster>/ns/<namespace>/sa/<service account>", each
// cluster its own trust domain.
func (w *WorkloadSet) Principal(serviceAccount string) string {
	return "spiffe://" + w.Owner + "/ns/" + w.Namespace + "/sa/" + serviceAccount
}

// Validate checks the set's name against its namespace and owner, and each
// workload's address and service account.
func (w *WorkloadSet) Validate() error {
	var f fieldErrs
	validateMeta(&f, &w.Meta)
	switch {
	case w.Namespace == "":
		f.add("namespace", "required")
	case len(w.Namespace) > 63 || !ValidName(w.Namespace):
		f.add("namespace", "%q is not a valid namespace name", w.Namespace)
	case w.Owner != "" && w.Name != WorkloadSetName(w.Owner, w.Namespace):
		f.add("name", "must be %q, the namespace and the owner", WorkloadSetName(w.Owner, w.Namespace))
	}
	var prev netip.Addr
	for i, wl := range w.Workloads {
		field := fmt.Sprintf("workloads[%d]", i)
		a, err := netip.ParseAddr(wl.Address)
		switch {
		case err != nil || a.Zone() != "" || a.String() != wl.Address:
			f.add(field+".address", "%q is not an IP address in canonical form", wl.Address)
		case prev.IsValid() && a.Compare(prev) <= 0:
			f.add(field+".address", "%s is not after %s: workloads are sorted by address, each once", wl.Address, prev)
		default:
			prev = a
		}
		if !ValidName(wl.ServiceAccount) {
			f.add(field+".serviceAccount", "%q is not a valid service account name", wl.ServiceAccount)
		}
	}
	return f.list.err()
}
