package router

import (
	"trellis.dev/trellis/internal/mcs"
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
	// Forget is called with the name of every service whose rules the
	// new table no longer has, though the last had them: one removed, or
	// no longer served. A service compiled again is annotated again
	// instead. Together with Annotate it tells what is new in a table, as
	// unchanged services are not annotated again (see Compile).
	Forget func(service string)
	// Cluster is the cluster of the proxy the table is for, and Reachable
	// says whether another cluster's targets can be reached now (a proxy
	// of it answers). Group.Pick skips the targets of clusters that
	// cannot: a whole cluster lost leaves the pick at once, before any
	// health check could notice. Nil Reachable reaches every cluster.
	Cluster   string
	Reachable func(cluster string) bool
}

// link sets each of g's targets' back reference and, with a Health hook,
// its health state.
func (c *Compiler) link(g *Group) {
	if c.Hooks.Health != nil {
		g.health = c.Hooks.Health(g.Name)
	}
	if !g.OnlyIn(c.Hooks.Cluster) {
		g.reach = c.Hooks.Reachable
	}
	for i := range g.targets {
		t := &g.targets[i]
		t.group = g
		if g.health != nil {
			if t.Health = g.health.Target(t.Addr); t.Health != nil {
				// One copy of the address, the health state's.
				t.Addr = t.Health.Addr()
			}
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

// LocalFirstHealth returns the health groups of the local targets of
// snap's LocalFirst import backends, for a proxy of cluster to check: one
// target group per import group, named as Compile names it, with the
// import's protocol and the default health check of that protocol (the
// Lattice defaults: on for HTTP1, off otherwise). A proxy gives them to its
// health checker with the snapshot's own target groups, so that
// Group.Pick sees its cluster's targets of an import go down.
func LocalFirstHealth(snap *model.Snapshot, cluster string) []model.TargetGroup {
	if snap == nil || cluster == "" {
		return nil
	}
	var out []model.TargetGroup
	seen := map[string]bool{}
	served, _ := mcs.Served(&snap.Objects)
	for i := range snap.Services {
		for _, r := range snap.Services[i].Rules {
			if r.Locality != model.LocalityLocalFirst || r.Action.Forward == nil {
				continue
			}
			for _, b := range r.Action.Forward.Backends {
				ref := b.Import
				if ref == nil || len(ref.ClusterWeights) > 0 && ref.ClusterWeights[cluster] <= 0 {
					continue
				}
				name := localFirstName(importKey(ref), cluster)
				if seen[name] {
					continue
				}
				seen[name] = true
				tg := model.TargetGroup{Meta: model.Meta{Name: name, Owner: cluster}, Protocol: ref.Protocol, ProtocolVersion: ref.ProtocolVersion}
				for _, e := range served {
					if e.Owner != cluster || e.Namespace != ref.Namespace || e.Service != ref.Name {
						continue
					}
					for _, p := range e.Ports {
						if p.Port != ref.Port {
							continue
						}
						for _, t := range p.Targets {
							if t.Cluster == cluster {
								tg.Targets = append(tg.Targets, t)
							}
						}
					}
				}
				out = append(out, tg)
			}
		}
	}
	return out
}
