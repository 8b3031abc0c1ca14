package router

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"trellis.dev/trellis/internal/auth"
	"trellis.dev/trellis/internal/mcs"
	"trellis.dev/trellis/internal/model"
)

// state is what a Compiler keeps of its last successful compilation, so
// that the next one compiles only what changed: each target group and
// service compiled, by name; each bind's virtual hosts, with the services
// contributing to each; and the table they made. A table built from it
// shares the unchanged virtual hosts, groups and rules with the last one
// and is a new value: tables already handed out never change.
type state struct {
	store string
	// networks and exportsIn are the snapshot lists the state was built
	// from; a change to either compiles everything again.
	networks  []model.ServiceNetwork
	exportsIn []model.ServiceExport
	// clusters is the snapshot's cluster list: which namespaces each
	// cluster may export from (mcs.Served); a change compiles everything
	// again too.
	clusters  []model.Cluster
	byNetwork map[string]*model.ServiceNetwork
	// exports are the snapshot's exports by Service; importGroups the
	// groups of import backends compiled so far (see importGroup).
	exports map[ExportRef][]*model.ServiceExport
	// csPorts are the ports the exports name.
	csPorts      map[int32]bool
	importGroups map[string]*Group
	// targetsByAddr indexes export ports' active targets by address, for
	// per-pod names (builder.exportTargets).
	targetsByAddr map[exportPort]map[netip.Addr][]Target
	// hostnames indexes exports' hostnames: their addresses by hostname.
	hostnames map[*model.ServiceExport]map[string][]string
	// netAuth holds the networks' auth policies compiled so far.
	netAuth map[string]*auth.Policy

	// groupList and serviceList are the last snapshot's lists.
	groupList   []model.TargetGroup
	serviceList []model.Service
	groups      map[string]*groupState
	services    map[string]*serviceState
	// synthetic are the services made for clusterset names.
	synthetic map[string]*serviceState
	binds     map[Bind]*bindState
	// csConflicts are the clusterset names' conflicts; conflicted counts
	// the services with conflicts of their own.
	csConflicts []string
	conflicted  int
	// exportConflicts are the exports left out because their cluster may
	// not export from their namespace.
	exportConflicts []string
	// regexpsAtFull is how many regular expressions the last full
	// compilation kept: incremental ones add but never drop, so a full one
	// runs when they have doubled.
	regexpsAtFull int
	// gen numbers the compilations, to find what a snapshot no longer has.
	gen   uint64
	table *Table
	// svcMap is the table's services by name being built, a copy of the
	// last table's once a service changes (svcDirty).
	svcMap   map[string]*Service
	svcDirty bool
}

type groupState struct {
	// tg is what is kept of the snapshot's target group to tell whether
	// the next one's is the same.
	tg  model.Seen[model.TargetGroup, *model.TargetGroup]
	g   *Group
	gen uint64
	// owner is the target group's cluster: only its services forward to
	// it (builder.group).
	owner string
}

// groupDep is a target group a service's rules name, and the compiled
// group they linked.
type groupDep struct {
	name string
	g    *Group
}

// serviceState is one service compiled: its rules' entries and where they
// go in the table.
type serviceState struct {
	// svc is a copy of the snapshot's service (its lists shared), so that
	// the state keeps no snapshot's array alive.
	svc       model.Service
	net       *model.ServiceNetwork
	gen       uint64
	synthetic bool
	// skipped is set for a service whose network does not allow its
	// cluster: it has a conflict and nothing else.
	skipped bool
	service *Service
	entries []pending
	// adds are the virtual hosts the entries went to; rejected the binds
	// its listeners could not join (another protocol serves them).
	adds      []contribution
	rejected  []Bind
	conflicts []string
	// foreign are the conflicts of the rules' target groups of another
	// owner, which apply reports.
	foreign []string
	deps    []groupDep
	imports bool
}

// contribution is one listener's bind and host names, as addListener
// took them.
type contribution struct {
	bind     Bind
	listener string
	hosts    []string
	any      bool
}

// bindState is one bind: its protocol, which the first listener decided,
// how many listeners serve on it (claims of services, synthetic of
// clusterset names) or were refused (rejected), and its virtual hosts.
type bindState struct {
	proto                       model.Protocol
	claims, synthetic, rejected int
	root                        *hostState
}

// hostState is the persistent form of a hostTable: the services
// contributing to each virtual host, the table built last, and what
// changed since.
type hostState struct {
	exact, wildcard map[string]*vhostState
	any             *vhostState
	listeners       map[string]*hostState
	// uses counts the listeners adding to a listener's host state.
	uses  int
	built *hostTable
	dirty bool
	// dirtyNames holds the changed keys of exact ("=name"), wildcard
	// ("*suffix") and listeners ("Lname").
	dirtyNames map[string]bool
	dirtyAny   bool
}

// vhostState counts each service's contributions to one virtual host.
type vhostState struct {
	svcs map[*serviceState]int
}

func newHostState() *hostState {
	return &hostState{exact: map[string]*vhostState{}, wildcard: map[string]*vhostState{}, listeners: map[string]*hostState{}, dirtyNames: map[string]bool{}}
}

func newState(snap *model.Snapshot) *state {
	st := &state{
		store:        snap.Store,
		networks:     snap.Networks,
		exportsIn:    snap.Exports,
		clusters:     snap.Clusters,
		byNetwork:    make(map[string]*model.ServiceNetwork, len(snap.Networks)),
		exports:      map[ExportRef][]*model.ServiceExport{},
		importGroups: map[string]*Group{},
		netAuth:      map[string]*auth.Policy{},
		groups:       make(map[string]*groupState, len(snap.TargetGroups)),
		services:     make(map[string]*serviceState, len(snap.Services)),
		synthetic:    map[string]*serviceState{},
		binds:        map[Bind]*bindState{},
		table:        &Table{},
	}
	for i := range snap.Networks {
		st.byNetwork[snap.Networks[i].Name] = &snap.Networks[i]
	}
	// Exports from a namespace their cluster's admission no longer lists
	// are left out, as every controller leaves them out of its merges.
	served, refused := mcs.Served(&snap.Objects)
	for _, e := range refused {
		st.exportConflicts = append(st.exportConflicts, fmt.Sprintf("export %s/%s of cluster %s: the cluster may not export from namespace %s; not served", e.Namespace, e.Service, e.Owner, e.Namespace))
	}
	for _, e := range served {
		k := ExportRef{e.Namespace, e.Service}
		st.exports[k] = append(st.exports[k], e)
		for _, p := range e.Ports {
			if st.csPorts == nil {
				st.csPorts = map[int32]bool{}
			}
			st.csPorts[p.Port] = true
		}
	}
	return st
}

// sameObjects reports whether every object of a is unchanged in b, in
// order.
func sameObjects[T any, P interface {
	*T
	model.Object
}](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !model.Unchanged[T, P](&a[i], &b[i]) {
			return false
		}
	}
	return true
}

// change is a service of the snapshot that is new or changed (old is its
// state of the last compilation, nil when new).
type change struct {
	old *serviceState
	svc *model.Service
}

// compile builds snap's table from the state of the last compilation,
// compiling only the target groups and services that changed and
// rebuilding only the virtual hosts they contribute to. It starts from an
// empty state (full) on the first compilation, after a failed one, and when
// what every service depends on changed: the store (which keys sessions),
// the networks or the exports; and when a change could make another
// service's listener win or lose a bind (see safe).
func (c *Compiler) compile(snap *model.Snapshot, full bool) (*Table, error) {
	old := c.st
	full = full || old == nil || old.store != snap.Store ||
		!sameObjects(old.networks, snap.Networks) || !sameObjects(old.exportsIn, snap.Exports) ||
		!sameObjects(old.clusters, snap.Clusters) ||
		len(c.regexps) > 2*old.regexpsAtFull+64
	st := old
	if full {
		st = newState(snap)
	}
	st.gen++
	b := &builder{st: st, hooks: c.Hooks, sessionSecret: []byte("trellis-session\x00" + snap.Store), compiler: c}
	if full {
		b.prev, b.regexps = c.regexps, map[string]*regexp.Regexp{}
	} else {
		b.regexps = c.regexps
		if b.regexps == nil {
			b.regexps = map[string]*regexp.Regexp{}
		}
	}

	// Lists the last snapshot had too are unchanged (model.SameList).
	sameGroups := !full && model.SameList(st.groupList, snap.TargetGroups)
	sameServices := !full && model.SameList(st.serviceList, snap.Services)
	st.groupList, st.serviceList = snap.TargetGroups, snap.Services
	groupsChanged := false
	for i := range snap.TargetGroups {
		if sameGroups {
			break
		}
		tg := &snap.TargetGroups[i]
		gs := st.groups[tg.Name]
		if gs != nil && gs.gen == st.gen {
			return nil, fmt.Errorf("target group %s: duplicate name", tg.Name)
		}
		if gs != nil && gs.tg.Unchanged(tg) && (c.Hooks.Health == nil || c.Hooks.Health(tg.Name) == gs.g.health) {
			gs.gen = st.gen
			continue
		}
		g, err := compileGroup(tg)
		if err != nil {
			return nil, fmt.Errorf("target group %s: %w", tg.Name, err)
		}
		c.link(g)
		st.groups[tg.Name] = &groupState{tg: model.See(tg), g: g, gen: st.gen, owner: tg.Owner}
		groupsChanged = true
	}
	if !sameGroups && len(st.groups) != len(snap.TargetGroups) {
		for name, gs := range st.groups {
			if gs.gen != st.gen {
				delete(st.groups, name)
				groupsChanged = true
			}
		}
	}

	var changes []change
	var added map[string]bool
	matched := 0
	for i := range snap.Services {
		if sameServices && !groupsChanged {
			matched = len(st.services)
			break
		}
		svc := &snap.Services[i]
		ss := st.services[svc.Name]
		if ss == nil {
			if added[svc.Name] {
				return nil, fmt.Errorf("service %s: duplicate name", svc.Name)
			}
			if added == nil {
				added = map[string]bool{}
			}
			added[svc.Name] = true
			changes = append(changes, change{svc: svc})
			continue
		}
		if ss.gen == st.gen {
			return nil, fmt.Errorf("service %s: duplicate name", svc.Name)
		}
		ss.gen = st.gen
		matched++
		if !model.Unchanged(&ss.svc, svc) || groupsChanged && ss.depsMoved(st) {
			changes = append(changes, change{old: ss, svc: svc})
		}
	}
	var removed []*serviceState
	if matched != len(st.services) {
		for _, ss := range st.services {
			if ss.gen != st.gen {
				removed = append(removed, ss)
			}
		}
	}
	if !full && !st.safe(changes, removed) {
		return c.compile(snap, true)
	}

	// The clusterset names are served again when a change touches a
	// bind they could be served on: they go after every service.
	clusterset := full || st.touchesClusterset(changes, removed)
	if clusterset {
		for _, ss := range st.synthetic {
			st.unapply(ss)
		}
	}
	for _, ss := range removed {
		st.unapply(ss)
		delete(st.services, ss.svc.Name)
		st.servicesChanged(ss.svc.Name, nil)
		if c.Hooks.Forget != nil {
			c.Hooks.Forget(ss.svc.Name)
		}
	}
	for _, ch := range changes {
		if ch.old != nil {
			st.unapply(ch.old)
		}
	}
	for _, ch := range changes {
		ss := &serviceState{svc: *ch.svc, gen: st.gen, net: st.byNetwork[ch.svc.Network]}
		svc := &ss.svc
		// The control plane lets a service join only a network that allows
		// its cluster; a network that stops allowing it (an association
		// revoked) takes its services out here, before they are next
		// written.
		if n := ss.net; n != nil && n.Owner != "" && svc.Owner != "" && !n.Allows(svc.Owner) {
			ss.skipped = true
			ss.conflicts = []string{fmt.Sprintf("service %s of cluster %s: network %s does not allow its cluster; not served", svc.Name, svc.Owner, n.Name)}
			if c.Hooks.Forget != nil {
				c.Hooks.Forget(svc.Name)
			}
		} else if err := b.compileService(ss, ss.net); err != nil {
			return nil, fmt.Errorf("service %s: %w", svc.Name, err)
		}
		st.services[svc.Name] = ss
		st.apply(ss)
		st.servicesChanged(svc.Name, ss.service)
	}
	if clusterset {
		st.csConflicts = nil
		b.addClustersetHosts()
	}
	c.regexps = b.regexps
	if full {
		st.regexpsAtFull = len(c.regexps)
	}
	t := st.build(snap)
	if full && c.last != nil && c.Hooks.Forget != nil {
		// Incremental compilations forget as they go; a full one
		// forgets what the last table served and this one does not
		// (the state of a failed compilation is gone, its table not).
		for name := range c.last.services {
			if t.services[name] == nil {
				c.Hooks.Forget(name)
			}
		}
	}
	c.st, c.last = st, t
	return t, nil
}

// touchesClusterset reports whether a change or removal has, or had, a
// listener on a bind where a clusterset name could be served: the proxy's
// own bind address, on a port an export names. Only there do services
// decide which names are served (addClustersetHosts). So does a TLS
// passthrough service forwarding to an import, from which per-pod names
// by SNI are made (addPodSNIHosts).
func (st *state) touchesClusterset(changes []change, removed []*serviceState) bool {
	if len(st.csPorts) == 0 {
		return false
	}
	on := func(b Bind) bool { return b.Addr == "" && st.csPorts[b.Port] }
	had := func(ss *serviceState) bool {
		return slices.ContainsFunc(ss.adds, func(a contribution) bool { return on(a.bind) }) || slices.ContainsFunc(ss.rejected, on)
	}
	for _, ss := range removed {
		if had(ss) || passthroughImports(&ss.svc) != nil {
			return true
		}
	}
	for _, ch := range changes {
		if ch.old != nil && (had(ch.old) || passthroughImports(&ch.old.svc) != nil) || passthroughImports(ch.svc) != nil {
			return true // per-pod names by SNI are made from it (addPodSNIHosts)
		}
		for _, l := range ch.svc.Listeners {
			if slices.ContainsFunc(ListenerBinds(st.byNetwork[ch.svc.Network], l.Port), on) {
				return true
			}
		}
	}
	return false
}

// depsMoved reports whether a target group ss's rules name was compiled
// again, or came or went, since ss was compiled.
func (ss *serviceState) depsMoved(st *state) bool {
	for _, d := range ss.deps {
		var g *Group
		if gs := st.groups[d.name]; gs != nil {
			g = gs.g
		}
		if g != d.g {
			return true
		}
	}
	return false
}

// safe reports whether changes and removals can be applied to st one by
// one with the result a full compilation would have: none of them names an
// import (whose groups and health depend on every service's), and none can
// change which protocol a bind serves for other services, which the first
// listener in snapshot order decides.
func (st *state) safe(changes []change, removed []*serviceState) bool {
	claims := map[Bind]int{}
	drop := func(ss *serviceState) bool {
		if ss.imports || len(ss.rejected) > 0 {
			return false
		}
		for _, a := range ss.adds {
			if st.binds[a.bind].rejected > 0 {
				return false
			}
			claims[a.bind]--
		}
		return true
	}
	for _, ss := range removed {
		if !drop(ss) {
			return false
		}
	}
	for _, ch := range changes {
		if ch.old != nil && !drop(ch.old) {
			return false
		}
	}
	decided := map[Bind]model.Protocol{}
	for _, ch := range changes {
		svc := ch.svc
		if usesImports(svc) {
			return false
		}
		n := st.byNetwork[svc.Network]
		for _, l := range svc.Listeners {
			if !servedProtocol(l.Protocol) {
				continue
			}
			for _, bind := range ListenerBinds(n, l.Port) {
				bs := st.binds[bind]
				if bs != nil && bs.rejected > 0 {
					return false
				}
				p, ok := decided[bind]
				if !ok && bs != nil && bs.claims+claims[bind] > 0 {
					p, ok = bs.proto, true
				}
				if ok && p != l.Protocol {
					return false
				}
				decided[bind] = l.Protocol
			}
		}
	}
	return true
}

func servedProtocol(p model.Protocol) bool {
	switch p {
	case model.ProtocolHTTP, model.ProtocolHTTPS, model.ProtocolTLSPassthrough:
		return true
	}
	return false
}

// usesImports reports whether any rule of svc forwards to an import.
func usesImports(svc *model.Service) bool {
	for i := range svc.Rules {
		if f := svc.Rules[i].Action.Forward; f != nil {
			for _, b := range f.Backends {
				if b.Import != nil {
					return true
				}
			}
		}
	}
	return false
}

// compileService compiles ss's service, in network n, into its entries,
// without adding them to the table (apply does).
func (b *builder) compileService(ss *serviceState, n *model.ServiceNetwork) error {
	svc := &ss.svc
	b.deps, b.owner, b.foreign = b.deps[:0], svc.Owner, nil
	authz, err := b.compileAuthz(svc, n)
	if err != nil {
		return err
	}
	var xff model.ForwardedForMode
	if n != nil {
		xff = n.ForwardedFor
	}
	entries, err := b.compileRules(svc, authz, xff)
	if err != nil {
		return err
	}
	ss.service = serviceOf(svc, authz)
	ss.entries = entries
	ss.deps = slices.Clone(b.deps)
	ss.imports = usesImports(svc)
	ss.foreign = nil
	for _, name := range b.foreign {
		ss.foreign = append(ss.foreign, fmt.Sprintf("service %s of cluster %s: target group %s is cluster %s's, and a service forwards only to its own cluster's (another's through its exports); no target",
			svc.Name, svc.Owner, name, b.st.groups[name].owner))
	}
	return nil
}

// group returns the compiled target group name, or nil, and records that
// the service being compiled depends on it. A target group of another
// owner than the service's is nil (a conflict): a cluster's targets
// receive only what its own services send them, as their policies allow,
// or what its exports publish; another cluster's service naming them
// would reach them by its own rules, with no policy of the targets'
// cluster judging it.
func (b *builder) group(name string) *Group {
	gs := b.st.groups[name]
	if gs == nil {
		b.deps = append(b.deps, groupDep{name, nil})
		return nil
	}
	// The dependency is the group compiled, whoever owns it: a group that
	// changes hands is compiled again, and so is the service.
	b.deps = append(b.deps, groupDep{name, gs.g})
	if gs.owner != b.owner {
		if !slices.Contains(b.foreign, name) {
			b.foreign = append(b.foreign, name)
		}
		return nil
	}
	return gs.g
}

// apply adds ss's entries to the virtual hosts of its listeners: a virtual
// host per host name on each of a listener's binds (the listener's own
// Hostnames, or else the service's; the catch-all host for an edge-mode
// service with neither), under the listener's Hostname when it has one. A
// listener whose bind serves another protocol is left out with a conflict.
func (st *state) apply(ss *serviceState) {
	if ss.skipped {
		st.conflicted++
		return
	}
	ss.adds, ss.rejected, ss.conflicts = nil, nil, slices.Clone(ss.foreign)
	svc := &ss.svc
	edge := ss.net != nil && ss.net.Mode == model.ModeEdge
	svcHosts := lowerUnique(svc.Hostnames())
	for _, l := range svc.Listeners {
		if !servedProtocol(l.Protocol) {
			ss.conflicts = append(ss.conflicts, fmt.Sprintf("service %s listener %q: protocol %s is not served", svc.Name, l.Name, l.Protocol))
			continue
		}
		hosts := svcHosts
		if len(l.Hostnames) > 0 {
			hosts = lowerUnique(l.Hostnames)
		}
		for _, bind := range ListenerBinds(ss.net, l.Port) {
			bs := st.binds[bind]
			if bs != nil && bs.proto != l.Protocol {
				ss.conflicts = append(ss.conflicts, fmt.Sprintf("service %s listener %q: %s already serves %s, not %s", svc.Name, l.Name, bind, bs.proto, l.Protocol))
				bs.rejected++
				ss.rejected = append(ss.rejected, bind)
				continue
			}
			if bs == nil {
				bs = &bindState{proto: l.Protocol, root: newHostState()}
				st.binds[bind] = bs
			}
			if ss.synthetic {
				bs.synthetic++
			} else {
				bs.claims++
			}
			a := contribution{bind: bind, listener: strings.ToLower(l.Hostname), hosts: hosts, any: edge && len(hosts) == 0}
			ss.adds = append(ss.adds, a)
			bs.root.contribute(a, ss, 1)
		}
	}
	if len(ss.conflicts) > 0 {
		st.conflicted++
	}
}

// unapply takes ss's entries out of the virtual hosts apply added them to.
func (st *state) unapply(ss *serviceState) {
	for _, a := range ss.adds {
		bs := st.binds[a.bind]
		bs.root.contribute(a, ss, -1)
		if ss.synthetic {
			bs.synthetic--
		} else {
			bs.claims--
		}
		if bs.claims+bs.synthetic == 0 {
			delete(st.binds, a.bind)
		}
	}
	for _, b := range ss.rejected {
		if bs := st.binds[b]; bs != nil {
			bs.rejected--
		}
	}
	if len(ss.conflicts) > 0 {
		st.conflicted--
	}
}

// servicesChanged sets (or, for nil, deletes) the table's service name.
func (st *state) servicesChanged(name string, s *Service) {
	if !st.svcDirty {
		st.svcMap = maps.Clone(st.table.services)
		if st.svcMap == nil {
			st.svcMap = map[string]*Service{}
		}
		st.svcDirty = true
	}
	if s == nil {
		delete(st.svcMap, name)
	} else {
		st.svcMap[name] = s
	}
}

// contribute adds (d 1) or removes (d -1) ss's entries to the virtual hosts
// of one listener's bind.
func (hs *hostState) contribute(a contribution, ss *serviceState, d int) {
	if a.listener != "" {
		child := hs.listeners[a.listener]
		if child == nil {
			child = newHostState()
			hs.listeners[a.listener] = child
		}
		hs.mark("L" + a.listener)
		if child.uses += d; child.uses == 0 {
			delete(hs.listeners, a.listener)
			return
		}
		hs = child
	}
	if a.any {
		hs.any = hs.any.add(ss, d)
		hs.dirtyAny, hs.dirty = true, true
	}
	for _, h := range a.hosts {
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			addTo(hs.wildcard, "."+suffix, ss, d)
			hs.mark("*." + suffix)
		} else {
			addTo(hs.exact, h, ss, d)
			hs.mark("=" + h)
		}
	}
}

func (hs *hostState) mark(key string) {
	hs.dirtyNames[key] = true
	hs.dirty = true
}

func addTo(m map[string]*vhostState, key string, ss *serviceState, d int) {
	vs := m[key].add(ss, d)
	if vs == nil {
		delete(m, key)
	} else {
		m[key] = vs
	}
}

// add counts d more contributions of ss; it returns nil once no service
// contributes.
func (vs *vhostState) add(ss *serviceState, d int) *vhostState {
	if vs == nil {
		vs = &vhostState{svcs: map[*serviceState]int{}}
	}
	if n := vs.svcs[ss] + d; n > 0 {
		vs.svcs[ss] = n
	} else {
		delete(vs.svcs, ss)
	}
	if len(vs.svcs) == 0 {
		return nil
	}
	return vs
}

func (vs *vhostState) hasEntries() bool {
	if vs == nil {
		return false
	}
	for ss := range vs.svcs {
		if len(ss.entries) > 0 {
			return true
		}
	}
	return false
}

// vhost sorts the contributed entries into a virtual host.
func (vs *vhostState) vhost() *vhost {
	var ps []pending
	for ss, n := range vs.svcs {
		for range n {
			ps = append(ps, ss.entries...)
		}
	}
	return newVhost(ps)
}

// build returns hs's host table: the last one when nothing changed, else a
// copy of it with the changed virtual hosts and listeners built again.
func (hs *hostState) build() *hostTable {
	if hs.built != nil && !hs.dirty {
		return hs.built
	}
	ht := &hostTable{}
	if prev := hs.built; prev == nil {
		ht.exact = make(map[string]*vhost, len(hs.exact))
		for name, vs := range hs.exact {
			ht.exact[name] = vs.vhost()
		}
		for suffix, vs := range hs.wildcard {
			if ht.wildcard == nil {
				ht.wildcard = make(map[string]*vhost, len(hs.wildcard))
			}
			ht.wildcard[suffix] = vs.vhost()
		}
		if hs.any.hasEntries() {
			ht.any = hs.any.vhost()
		}
		for name := range hs.listeners {
			ht.setListener(name, hs.listeners[name])
		}
	} else {
		ht.exact, ht.wildcard, ht.any = maps.Clone(prev.exact), maps.Clone(prev.wildcard), prev.any
		ht.exactListeners, ht.wildcardListeners = maps.Clone(prev.exactListeners), maps.Clone(prev.wildcardListeners)
		if ht.exact == nil {
			ht.exact = map[string]*vhost{}
		}
		for key := range hs.dirtyNames {
			name := key[1:]
			switch key[0] {
			case '=':
				if vs := hs.exact[name]; vs != nil {
					ht.exact[name] = vs.vhost()
				} else {
					delete(ht.exact, name)
				}
			case '*':
				if vs := hs.wildcard[name]; vs != nil {
					if ht.wildcard == nil {
						ht.wildcard = map[string]*vhost{}
					}
					ht.wildcard[name] = vs.vhost()
				} else {
					delete(ht.wildcard, name)
				}
			case 'L':
				ht.setListener(name, hs.listeners[name])
			}
		}
		if hs.dirtyAny {
			ht.any = nil
			if hs.any.hasEntries() {
				ht.any = hs.any.vhost()
			}
		}
	}
	if len(ht.wildcard) == 0 {
		ht.wildcard = nil
	}
	if len(ht.exactListeners) == 0 {
		ht.exactListeners = nil
	}
	if len(ht.wildcardListeners) == 0 {
		ht.wildcardListeners = nil
	}
	clear(hs.dirtyNames)
	hs.dirty, hs.dirtyAny, hs.built = false, false, ht
	return ht
}

// setListener sets (or, for a nil child, deletes) the host table of the
// listener with hostname name.
func (ht *hostTable) setListener(name string, child *hostState) {
	m, key := &ht.exactListeners, name
	if suffix, ok := strings.CutPrefix(name, "*."); ok {
		m, key = &ht.wildcardListeners, "."+suffix
	}
	if child == nil {
		delete(*m, key)
		return
	}
	if *m == nil {
		*m = map[string]*hostTable{}
	}
	(*m)[key] = child.build()
}

// build makes the table of snap from the state.
func (st *state) build(snap *model.Snapshot) *Table {
	t := &Table{
		revision:  snap.Revision,
		ports:     map[Bind]*hostTable{},
		portHosts: map[int32]*hostTable{},
		tls:       map[Bind]*hostTable{},
		protocols: make(map[Bind]model.Protocol, len(st.binds)),
		services:  st.table.services,
	}
	if st.svcDirty {
		t.services, st.svcMap, st.svcDirty = st.svcMap, nil, false
	}
	if t.services == nil {
		t.services = map[string]*Service{}
	}
	for bind, bs := range st.binds {
		if bs.proto == model.ProtocolTLSPassthrough {
			t.tls[bind] = bs.root.build()
		} else {
			t.ports[bind] = bs.root.build()
			if bind.Addr == "" {
				t.portHosts[bind.Port] = t.ports[bind]
			}
		}
		t.protocols[bind] = bs.proto
		t.binds = append(t.binds, bind)
	}
	slices.SortFunc(t.binds, CompareBinds)
	if st.conflicted > 0 {
		for i := range snap.Services {
			if ss := st.services[snap.Services[i].Name]; ss != nil {
				t.conflicts = append(t.conflicts, ss.conflicts...)
			}
		}
	}
	t.conflicts = append(t.conflicts, st.csConflicts...)
	t.conflicts = append(t.conflicts, st.exportConflicts...)
	st.table = t
	return t
}
