package router

import (
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/health"
)

// CompileHooks connect a Compiler to the proxy's state that outlives route
// tables. Both are optional; the zero value compiles tables without health
// and without annotations.
type CompileHooks struct {
	// Health returns the live health state of the target group name, or
	// nil. Compile links every compiled target to its state, so that
	// Group.Pick skips unhealthy and ejected targets without a lookup.
	Health func(group string) *health.Group
	// Annotate is called once per rule of every service with targetGroup
	// "", and once per backend of a forwarding rule with the backend's
	// target group name ("" for an invalid reference). What it returns is
	// kept in Rule.Annotation and Backend.Annotation, so that the request
	// path reaches its per-rule data (metrics observers, precomputed
	// headers) without a lookup. The router never looks inside it.
	Annotate func(svc *model.Service, rule int, targetGroup string) any
}

// link sets each of g's targets' back reference and, with a Health hook,
// its health state.
func (c *Compiler) link(g *Group) {
	if c.Hooks.Health != nil {
		g.health = c.Hooks.Health(g.Name)
	}
	for i := range g.targets {
		t := &g.targets[i]
		t.group = g
		if g.health != nil {
			t.Health = g.health.Target(t.Addr)
		}
	}
}

// annotate fills in route's and its backends' annotations.
func (b *builder) annotate(svc *model.Service, rule int, route *Rule) {
	if b.hooks.Annotate == nil {
		return
	}
	route.Annotation = b.hooks.Annotate(svc, rule, "")
	for i := range route.backends {
		route.backends[i].Annotation = b.hooks.Annotate(svc, rule, route.backends[i].TargetGroup)
	}
}

// Group returns the target group t belongs to.
func (t *Target) Group() *Group { return t.group }

// Health returns the live health of g's targets, or nil when the table was
// compiled without health.
func (g *Group) Health() *health.Group { return g.health }

// NewTarget returns a target of a group of its own outside any table: a
// target this proxy reaches for a peer (the peer hop's delivery), spoken
// to with protocol and version like a group's.
func NewTarget(addr, cluster, group string, protocol model.Protocol, version model.ProtocolVersion) *Target {
	g := &Group{Name: group, Protocol: protocol, Version: version}
	g.targets = []Target{{Addr: addr, Cluster: cluster, group: g}}
	return &g.targets[0]
}
