package router

import (
	"fmt"

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
		if b.netAuth == nil {
			b.netAuth = map[string]*auth.Policy{}
		}
		var ok bool
		if np, ok = b.netAuth[n.Name]; !ok {
			var err error
			if np, err = auth.Parse(n.Auth.Policy); err != nil {
				return nil, fmt.Errorf("network %s: auth policy: %w", n.Name, err)
			}
			b.netAuth[n.Name] = np
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
