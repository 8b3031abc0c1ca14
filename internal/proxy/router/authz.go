package router

import (
	"fmt"
	"slices"

	"trellis.dev/trellis/internal/auth"
	"trellis.dev/trellis/internal/model"
)

// Authz is the auth of the service a route belongs to: the compiled
// policies of its network and of the service itself, each nil where auth is
// off at that level. A route whose service and network both have auth off
// has no Authz at all.
type Authz struct {
	Network, Service             string
	NetworkPolicy, ServicePolicy *auth.Policy
}

// Authorize evaluates r (whose Network and Service it fills in) against
// both levels.
func (a *Authz) Authorize(r *auth.Request) auth.Result {
	r.Network, r.Service = a.Network, a.Service
	return auth.Authorize(a.NetworkPolicy, a.ServicePolicy, r)
}

// compileAuthz compiles the auth of svc in network n (nil when unknown).
// Network policies are parsed once per compile.
func (b *builder) compileAuthz(svc *model.Service, n *model.ServiceNetwork) (*Authz, error) {
	var np *auth.Policy
	if n != nil && n.Auth != nil {
		var ok bool
		if np, ok = b.st.netAuth[n.Name]; !ok {
			var err error
			if np, err = auth.Parse(n.Auth.Policy); err != nil {
				return nil, fmt.Errorf("network %s: auth policy: %w", n.Name, err)
			}
			b.st.netAuth[n.Name] = np
		}
	}
	var sp *auth.Policy
	if svc.Auth != nil {
		var err error
		if sp, err = auth.Parse(svc.Auth.Policy); err != nil {
			return nil, fmt.Errorf("auth policy: %w", err)
		}
	}
	if np == nil && sp == nil {
		return nil, nil
	}
	return &Authz{Network: svc.Network, Service: svc.Name, NetworkPolicy: np, ServicePolicy: sp}, nil
}

// Service is what a table knows of one service besides its routes: its
// network, auth, listener ports and where its rules forward to. The
// receiving end of the peer hop checks a peer's claim that it routed a
// request for the service against it.
type Service struct {
	// Owner is the cluster that wrote the service.
	Name, Network, Owner string
	// Auth is nil when auth is off for the service and its network.
	Auth *Authz
	// Ports are the service's listener ports.
	Ports []int32
	// TargetGroups are the target groups its forward actions name, and
	// Imports the multi-cluster services (ImportRef's namespace and name).
	TargetGroups []string
	Imports      []ExportRef
}

// Service returns the service named name, or nil when the table's
// snapshot has none.
func (t *Table) Service(name string) *Service { return t.services[name] }

// serviceOf summarizes svc for Table.Service.
func serviceOf(svc *model.Service, authz *Authz) *Service {
	s := &Service{Name: svc.Name, Network: svc.Network, Owner: svc.Owner, Auth: authz}
	for _, l := range svc.Listeners {
		if !slices.Contains(s.Ports, l.Port) {
			s.Ports = append(s.Ports, l.Port)
		}
	}
	for ri := range svc.Rules {
		f := svc.Rules[ri].Action.Forward
		if f == nil {
			continue
		}
		for _, b := range f.Backends {
			switch {
			case b.Import != nil:
				if ref := (ExportRef{b.Import.Namespace, b.Import.Name}); !slices.Contains(s.Imports, ref) {
					s.Imports = append(s.Imports, ref)
				}
			case b.TargetGroup != "" && !slices.Contains(s.TargetGroups, b.TargetGroup):
				s.TargetGroups = append(s.TargetGroups, b.TargetGroup)
			}
		}
	}
	return s
}
