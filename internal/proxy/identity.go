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
func (p *Proxy) identity(ip netip.Addr) (workloadIdentity, bool) {
	if ids := p.identities.Load(); ids != nil && ip.IsValid() {
		w, ok := (*ids)[ip]
		return w, ok
	}
	return workloadIdentity{}, false
}

// principal is who sent a request from ip: the workload with that address
// in this cluster, or anonymous.
func (p *Proxy) principal(ip netip.Addr) auth.Principal {
	if w, ok := p.identity(ip); ok {
		return auth.Principal{Type: auth.PrincipalWorkload, ID: w.principal}
	}
	return auth.Principal{Type: auth.PrincipalAnonymous}
}

// identityHeader is the X-Trellis-Identity value of a request from ip.
func (p *Proxy) identityHeader(ip netip.Addr) string {
	if w, ok := p.identity(ip); ok {
		return w.header
	}
	return anonymousIdentity
}
