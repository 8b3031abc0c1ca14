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

// Validate checks the name is a cluster name, the owner the control
// plane, and the export namespaces namespace names or AllNamespaces.
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
		case !validLabel(ns):
			f.add(field, "%q is not a valid namespace name", ns)
		case slices.Index(list, ns) < i:
			f.add(field, "duplicate namespace %q", ns)
		}
	}
	return f.list
}
