package proxy

import (
	"net/netip"

	"trellis.dev/trellis/internal/auth"
	"trellis.dev/trellis/internal/model"
)

// identities maps the addresses of this cluster's workloads to their
// principals (model.WorkloadSet). Only the proxy's own cluster's sets are
// taken: an address says who is calling only on the network that gave it
// out, and other clusters may use the same addresses (overlapping pod
// CIDRs).
type identities map[netip.Addr]workloadIdentity

// workloadIdentity is a workload's principal and its X-Trellis-Identity
// header value, made once per snapshot.
type workloadIdentity struct {
	principal, header string
}

// anonymousIdentity is the X-Trellis-Identity of a caller that is no known
// workload.
const anonymousIdentity = "Type=Anonymous"

func compileIdentities(snap *model.Snapshot, cluster string) identities {
	ids := identities{}
	for i := range snap.WorkloadSets {
		s := &snap.WorkloadSets[i]
		if s.Owner != cluster {
			continue
		}
		for _, w := range s.Workloads {
			if a, err := netip.ParseAddr(w.Address); err == nil {
				id := s.Principal(w.ServiceAccount)
				// After Lattice's x-amzn-lattice-identity.
				ids[a] = workloadIdentity{principal: id, header: "Principal=" + id + "; Type=Workload"}
			}
		}
	}
	return ids
}

// identity returns the workload with address ip in this cluster, if any.
func (sv *served) identity(ip netip.Addr) (workloadIdentity, bool) {
	if !ip.IsValid() {
		return workloadIdentity{}, false
	}
	w, ok := sv.ids[ip]
	return w, ok
}

// principal is who sent a request from ip: the workload with that address
// in this cluster, or anonymous.
func (sv *served) principal(ip netip.Addr) auth.Principal {
	if w, ok := sv.identity(ip); ok {
		return auth.Principal{Type: auth.PrincipalWorkload, ID: w.principal}
	}
	return auth.Principal{Type: auth.PrincipalAnonymous}
}

// identityHeader is the X-Trellis-Identity value of a request from ip.
func (sv *served) identityHeader(ip netip.Addr) string {
	if w, ok := sv.identity(ip); ok {
		return w.header
	}
	return anonymousIdentity
}
