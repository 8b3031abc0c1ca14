package model

import "time"

// ControlPlaneOwner owns the objects the control plane writes itself
// (Cluster); no cluster may be admitted under this name.
const ControlPlaneOwner = "control-plane"

// Cluster says that a cluster is admitted to the control plane (`trellis
// cluster add`); `trellis cluster remove` deletes it. The control plane
// alone writes it: proxies take peer hops only from and to admitted
// clusters, so that a removed cluster's certificate, valid until it
// expires, no longer reaches anything.
type Cluster struct {
	Meta
	Added time.Time `json:"added"`
}

// ObjectMeta implements Object.
func (c *Cluster) ObjectMeta() *Meta { return &c.Meta }

// ObjectKind implements Object.
func (*Cluster) ObjectKind() Kind { return KindCluster }

// Validate checks the name is a cluster name and the owner the control
// plane.
func (c *Cluster) Validate() error {
	var f fieldErrs
	validateMeta(&f, &c.Meta)
	if !ValidClusterName(c.Name) || c.Name == ControlPlaneOwner {
		f.add("name", "%q is not a cluster name that can be admitted", c.Name)
	}
	if c.Owner != ControlPlaneOwner {
		f.add("owner", "must be %s: clusters are admitted by the control plane", ControlPlaneOwner)
	}
	return f.list.err()
}
