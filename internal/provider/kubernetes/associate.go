package kubernetes

import (
	"fmt"
	"slices"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/translate"
)

// ReasonNotAllowed is the Accepted=False reason of a Gateway of class
// trellis whose service network another cluster owns and does not let
// this cluster associate with.
const ReasonNotAllowed = "NotAllowed"

// associate applies service-network association (Lattice's association of
// a VPC with a service network) to what this cluster sends. A Gateway of
// class trellis names a service network; the first cluster to write the
// network owns it. When the control plane already holds the network,
// owned by another cluster, this cluster associates instead: it does not
// send the network, and its routes on the Gateway become services in the
// other cluster's network, if that network allows this cluster
// (model.ServiceNetwork.Allows: the owner's trellis.dev/allowed-clusters
// annotation). If it does not, the Gateway is not accepted, with the
// reason, and its services are not sent, so that the rest of what the
// cluster sends is not refused with them. It returns the store keys of
// the networks and services it left out, which the translator does not
// know of (Output.Changed).
func (r *Reconciler) associate(out *translate.Output) (removed []string) {
	for i := 0; i < len(out.Networks); {
		n := &out.Networks[i]
		other, held := r.view.network(n.Name)
		if n.Mode != model.ModeServiceNetwork || !held || other.Owner == r.cluster {
			i++
			continue
		}
		st := gatewayStatus(out, n.Source)
		if other.Allows(r.cluster) {
			setCondition(st, translate.Condition{Type: "Accepted", Status: true, Reason: "Accepted",
				Message: fmt.Sprintf("associated with service network %q, owned by cluster %q", n.Name, other.Owner)})
		} else {
			msg := fmt.Sprintf("service network %q is owned by cluster %q, which does not allow cluster %q to associate "+
				"(the owner's Gateway sets that with its %s annotation)", n.Name, other.Owner, r.cluster, translate.AllowedClustersAnnotation)
			setCondition(st, translate.Condition{Type: "Accepted", Status: false, Reason: ReasonNotAllowed, Message: msg})
			setCondition(st, translate.Condition{Type: "Programmed", Status: false, Reason: "Invalid", Message: "the Gateway is not accepted"})
			// A copy: the list is the translator's (translate.Incremental).
			out.Services = slices.DeleteFunc(slices.Clone(out.Services), func(s model.Service) bool {
				if s.Network == n.Name {
					removed = append(removed, model.Key(model.KindService, s.Name))
					return true
				}
				return false
			})
			r.log.Warn("association refused; the Gateway's routes are not sent", "network", n.Name, "owner", other.Owner)
		}
		removed = append(removed, model.Key(model.KindServiceNetwork, n.Name))
		out.Networks = slices.Delete(out.Networks, i, i+1)
	}
	return removed
}

// gatewayStatus is the status out has for the Gateway src names, or nil.
func gatewayStatus(out *translate.Output, src *model.SourceRef) *translate.GatewayStatus {
	if src == nil {
		return nil
	}
	for i := range out.Status.Gateways {
		if g := &out.Status.Gateways[i]; g.Namespace == src.Namespace && g.Name == src.Name {
			return g
		}
	}
	return nil
}

// setCondition replaces st's condition of c's type with c, or adds it.
func setCondition(st *translate.GatewayStatus, c translate.Condition) {
	if st == nil {
		return
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == c.Type {
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}
