package model

import (
	"fmt"
	"slices"
	"time"
)

// ControlPlaneOwner owns the objects the control plane writes itself
// (Cluster); no cluster may be admitted under this name.
const ControlPlaneOwner = "control-plane"

// AllNamespaces in Cluster.ExportNamespaces lets a cluster export from
// every namespace (MCS namespace sameness without a limit).
const AllNamespaces = "*"

// MaxExportNamespaces bounds Cluster.ExportNamespaces.
const MaxExportNamespaces = 256

// Cluster says that a cluster is admitted to the control plane (`trellis
// cluster add`); `trellis cluster remove` deletes it. The control plane
// alone writes it: proxies take peer hops only from and to admitted
// clusters, so that a removed cluster's certificate, valid until it
// expires, no longer reaches anything.
type Cluster struct {
	Meta
	Added time.Time `json:"added"`
	// ExportNamespaces are the namespaces the cluster may export Services
	// from (ServiceExports), or AllNamespaces. Empty means AllNamespaces,
	// as before the list existed. The control plane refuses an export
	// outside the list, and every controller and proxy leaves out one
	// stored before the list was narrowed (see AllowsExport).
	ExportNamespaces []string `json:"exportNamespaces,omitempty"`
	// PodNetwork names the flat, routable pod network the operator
	// declares the cluster part of (an RFC 1123 label): the pods of
	// clusters with the same PodNetwork reach each other's addresses
	// directly. Empty means the cluster's own, isolated network. Only the
	// control plane writes it (`trellis cluster add|set --pod-network`),
	// never the cluster: a member could otherwise claim a network and
	// put its addresses in other clusters' DNS answers. Proxies'
	// nameservers answer a Headless import's names with its pods' own
	// addresses only within one pod network (see SamePodNetwork).
	PodNetwork string `json:"podNetwork,omitempty"`
}

// ObjectMeta implements Object.
func (c *Cluster) ObjectMeta() *Meta { return &c.Meta }

// ObjectKind implements Object.
func (*Cluster) ObjectKind() Kind { return KindCluster }

// AllowsExport reports whether the cluster may export a Service of
// namespace ns.
func (c *Cluster) AllowsExport(ns string) bool {
	return len(c.ExportNamespaces) == 0 || slices.Contains(c.ExportNamespaces, AllNamespaces) || slices.Contains(c.ExportNamespaces, ns)
}

// SamePodNetwork reports whether the pods of clusters a and b, by their
// published admissions (nil: not admitted), reach each other's addresses:
// both are admitted and declared in one pod network. A cluster without a
// declared network shares it with no other, nor with itself, so that its
// answers stay as they are until an operator declares one.
func SamePodNetwork(a, b *Cluster) bool {
	return a != nil && b != nil && a.PodNetwork != "" && a.PodNetwork == b.PodNetwork
}

// ValidatePodNetwork checks a pod network's name: empty (isolated) or an
// RFC 1123 label. The field is "podNetwork".
func ValidatePodNetwork(name string) FieldErrors {
	var f fieldErrs
	if name != "" && !ValidLabel(name) {
		f.add("podNetwork", "%q is not a pod network name: an RFC 1123 label (at most 63 lower-case alphanumerics or '-', starting and ending alphanumeric), or empty for the cluster's own", name)
	}
	return f.list
}

// Validate checks the name is a cluster name, the owner the control
// plane, the export namespaces namespace names or AllNamespaces, and the
// pod network a label or empty.
func (c *Cluster) Validate() error {
	var f fieldErrs
	validateMeta(&f, &c.Meta)
	if !ValidClusterName(c.Name) || c.Name == ControlPlaneOwner {
		f.add("name", "%q is not a cluster name that can be admitted", c.Name)
	}
	if c.Owner != ControlPlaneOwner {
		f.add("owner", "must be %s: clusters are admitted by the control plane", ControlPlaneOwner)
	}
	f.list = append(f.list, ValidateExportNamespaces(c.ExportNamespaces)...)
	f.list = append(f.list, ValidatePodNetwork(c.PodNetwork)...)
	return f.list.err()
}

// ValidateExportNamespaces checks a list of export namespaces: at most
// MaxExportNamespaces namespace names, no duplicates, or AllNamespaces
// alone. Fields are "exportNamespaces[i]".
func ValidateExportNamespaces(list []string) FieldErrors {
	var f fieldErrs
	if len(list) > MaxExportNamespaces {
		f.add("exportNamespaces", "%d namespaces; at most %d (or %q for all)", len(list), MaxExportNamespaces, AllNamespaces)
		return f.list
	}
	for i, ns := range list {
		field := fmt.Sprintf("exportNamespaces[%d]", i)
		switch {
		case ns == AllNamespaces && len(list) > 1:
			f.add(field, "%q (all namespaces) must stand alone", AllNamespaces)
		case ns == AllNamespaces:
		case !ValidLabel(ns):
			f.add(field, "%q is not a valid namespace name", ns)
		case slices.Index(list, ns) < i:
			f.add(field, "duplicate namespace %q", ns)
		}
	}
	return f.list
}
