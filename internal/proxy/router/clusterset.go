package router

import (
	"cmp"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"trellis.dev/trellis/internal/mcs"
	"trellis.dev/trellis/internal/model"
)

// ClustersetServicePrefix begins the names of the services a proxy makes
// for clusterset names (addClustersetHosts). Stored names never contain
// ':', so these cannot be a stored service's.
const ClustersetServicePrefix = "clusterset:"

// ClustersetServiceName is the name of the service serving port of the
// clusterset name of namespace/name.
func ClustersetServiceName(namespace, name string, port int32) string {
	return fmt.Sprintf("%s%s/%s:%d", ClustersetServicePrefix, namespace, name, port)
}

// addClustersetHosts serves every import's clusterset name,
// "<name>.<namespace>.svc.clusterset.local", on each of the merged
// import's HTTP ports (mcs.HTTPVersion) at the proxy's own bind address
// (the clusterset IP), as if a route of that host with the import as its
// only backend existed: a service of no network, with one listener and
// one rule forwarding to the import's port, split among the exporting
// clusters by the import's exported ClusterWeightsAnnotation (the one
// every cluster has; a cluster's own annotation of its ServiceImport is
// for its routes). A malformed annotation leaves the name unserved. Every proxy makes them from
// the snapshot's exports, as the nameserver answers the names, so they
// are the same in every cluster and no control-plane object claims the
// host. Run after the snapshot's services: a name a service already
// serves on that bind (exactly, by a wildcard, or by a listener's
// hostname) is left to it. A bind that serves another protocol is
// reported as a conflict; nothing here fails the compile.
func (b *builder) addClustersetHosts() error {
	st := b.st
	// opened counts the ports clusterset names made the proxy listen on
	// that no service had: any admitted cluster's exports name them, so
	// they are bounded (maxClustersetPorts).
	opened := 0
	keys := slices.SortedFunc(maps.Keys(st.exports), func(x, y ExportRef) int {
		return cmp.Or(strings.Compare(x.Namespace, y.Namespace), strings.Compare(x.Name, y.Name))
	})
	kept := make(map[string]*serviceState, len(st.synthetic))
	podNames := 0
	for _, k := range keys {
		im := mcs.Merge(st.exports[k])
		host := strings.ToLower(mcs.ClustersetHost(k.Namespace, k.Name))
		weights, err := mcs.ParseClusterWeights(im.Annotations)
		if err != nil {
			// Served unweighted, the name would send traffic where its
			// author meant none to go.
			st.csConflicts = append(st.csConflicts, fmt.Sprintf("clusterset name %s: exported annotation %s %v; not served", host, mcs.ClusterWeightsAnnotation, err))
			continue
		}
		var pods []podHost
		if im.Type == model.ExportHeadless {
			pods = podHosts(st.exports[k])
		}
		for _, p := range im.Ports {
			version, ok := mcs.HTTPVersion(p)
			if !ok {
				continue
			}
			bind := Bind{Port: p.Port}
			bs := st.binds[bind]
			taken := bs != nil
			if taken && bs.proto != model.ProtocolHTTP {
				st.csConflicts = append(st.csConflicts, fmt.Sprintf("clusterset name %s port %d: %s already serves %s", host, p.Port, bind, bs.proto))
				continue
			}
			if !taken && opened >= maxClustersetPorts {
				st.csConflicts = append(st.csConflicts, fmt.Sprintf("clusterset name %s port %d: clusterset names already opened %d ports; not served", host, p.Port, maxClustersetPorts))
				continue
			}
			ref := model.ImportRef{Namespace: k.Namespace, Name: k.Name, Port: p.Port, Protocol: model.ProtocolHTTP, ProtocolVersion: version, ClusterWeights: weights}
			served := b.addSynthetic(ClustersetServiceName(k.Namespace, k.Name, p.Port), host, ref, kept) // an explicit route wins
			for _, pod := range pods {
				if podNames >= maxPodNames {
					st.csConflicts = append(st.csConflicts, fmt.Sprintf("clusterset name %s port %d: per-pod names already make %d services; %s and the names after it not served", host, p.Port, maxPodNames, pod.host))
					break
				}
				ref := ref
				ref.ClusterWeights, ref.Hostname = map[string]int32{pod.cluster: 1}, pod.hostname
				if b.addSynthetic(PodServiceName(k.Namespace, k.Name, p.Port, pod.hostname, pod.cluster), pod.host, ref, kept) {
					served = true
					podNames++
				}
			}
			if len(pods) > 0 {
				// Any other name below the Service's is a pod that is not
				// ready, not known, or of no exporting cluster: the import
				// with a hostname no endpoint has (not an RFC 1123 label)
				// answers it 503 NoTarget, never another pod.
				ref.ClusterWeights, ref.Hostname = nil, noPod
				served = b.addSynthetic(ClustersetServiceName(k.Namespace, k.Name, p.Port)+"/*", "*."+host, ref, kept) || served
			}
			if served && !taken {
				opened++
			}
		}
	}
	b.addPodSNIHosts(kept, &podNames)
	for name := range st.synthetic {
		if kept[name] == nil {
			st.servicesChanged(name, nil)
			if b.hooks.Forget != nil {
				b.hooks.Forget(name)
			}
		}
	}
	st.synthetic = kept
	return nil
}

// addSynthetic serves host on ref's port (at the proxy's bind address) by
// a service named name with ref as its only backend, keeping it in kept,
// unless a service of the snapshot already serves host there; it reports
// whether it serves it.
func (b *builder) addSynthetic(name, host string, ref model.ImportRef, kept map[string]*serviceState) bool {
	st := b.st
	if st.serves(Bind{Port: ref.Port}, host) {
		return false
	}
	svc := model.Service{
		Meta:      model.Meta{Name: name},
		Listeners: []model.Listener{{Name: "clusterset", Port: ref.Port, Protocol: model.ProtocolHTTP, Hostnames: []string{host}}},
		Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{
			Weight: 1, Import: &ref,
		}}}}}},
	}
	if err := b.keepSynthetic(svc, nil, kept); err != nil {
		// Not expected (the exports were validated); still, an export
		// never keeps the rest of the table from being served.
		st.csConflicts = append(st.csConflicts, fmt.Sprintf("clusterset name %s port %d: %v", host, ref.Port, err))
		return false
	}
	return true
}

// keepSynthetic compiles svc (in network n) unless the last compile made
// the same, applies it and keeps it in kept.
func (b *builder) keepSynthetic(svc model.Service, n *model.ServiceNetwork, kept map[string]*serviceState) error {
	st := b.st
	ss := st.synthetic[svc.Name]
	if ss == nil || ss.net != n || !reflect.DeepEqual(ss.svc, svc) {
		ss = &serviceState{svc: svc, synthetic: true, net: n}
		if err := b.compileService(ss, n); err != nil {
			return err
		}
	}
	st.apply(ss)
	kept[svc.Name] = ss
	if st.synthetic[svc.Name] != ss {
		st.servicesChanged(svc.Name, ss.service)
	}
	return nil
}

// PodServiceName is the name of the service serving port of the per-pod
// name of hostname in cluster, of the clusterset name of namespace/name.
func PodServiceName(namespace, name string, port int32, hostname, cluster string) string {
	return ClustersetServiceName(namespace, name, port) + "/" + hostname + "." + cluster
}

// noPod is the hostname of the import backend answering the names below a
// clusterset name that are no ready pod's: no endpoint has it, since an
// export's hostnames are RFC 1123 labels.
const noPod = "*"

// podHost is one per-pod name: "<hostname>.<cluster>.<service>.<namespace>.svc.clusterset.local".
type podHost struct {
	host, hostname, cluster string
}

// podHosts are the per-pod names of exports (one Service's, by owner,
// whose import is Headless: a conflict won by a ClusterSetIP export has
// none), by host. The owner is part of the name, and a hostname is one label
// while the owner follows it, so one cluster's export cannot name another
// cluster's pod.
func podHosts(exports []*model.ServiceExport) []podHost {
	var out []podHost
	for _, e := range exports {
		if e.Type != model.ExportHeadless {
			continue
		}
		for _, h := range e.Hostnames {
			out = append(out, podHost{host: strings.ToLower(mcs.PodHost(h.Hostname, e.Owner, e.Namespace, e.Service)), hostname: h.Hostname, cluster: e.Owner})
		}
	}
	slices.SortFunc(out, func(x, y podHost) int { return strings.Compare(x.host, y.host) })
	return out
}

// maxPodNames bounds the services per-pod names make on a proxy, each
// name and port one: any admitted cluster's exports name them (each at
// most model.MaxExportHostnames).
const maxPodNames = 4096

// maxClustersetPorts bounds the ports clusterset names open on a proxy
// beyond those its services listen on: exports of any admitted cluster
// name them, and each is a listener on every proxy.
const maxClustersetPorts = 64

// serves reports whether bind already has a virtual host with routes or a
// listener for host.
func (st *state) serves(bind Bind, host string) bool {
	bs := st.binds[bind]
	if bs == nil || bs.proto == model.ProtocolTLSPassthrough {
		return false
	}
	hs := bs.root
	covers := func(names map[string]*vhostState) bool {
		if names[host].hasEntries() {
			return true
		}
		for suffix := range wildcardSuffixes(host) {
			if names[suffix].hasEntries() {
				return true
			}
		}
		return false
	}
	if covers(hs.exact) || covers(hs.wildcard) {
		return true
	}
	if hs.listeners[host] != nil {
		return true
	}
	for suffix := range wildcardSuffixes(host) {
		if hs.listeners["*"+suffix] != nil {
			return true
		}
	}
	return false
}

// wildcards yields the wildcard suffixes that match host, as
// ".b.c" for "a.b.c".
func wildcardSuffixes(host string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for i := strings.IndexByte(host, '.'); i >= 0 && i < len(host)-1; {
			if !yield(host[i:]) {
				return
			}
			j := strings.IndexByte(host[i+1:], '.')
			if j < 0 {
				return
			}
			i += 1 + j
		}
	}
}

// addPodSNIHosts narrows TLS passthrough to per-pod names: for each
// service of the snapshot with a TLS passthrough listener whose wildcard
// host name covers a per-pod name of a Headless import it forwards to
// (a TLSRoute of "*.<svc>.<ns>.svc.clusterset.local" to the
// ServiceImport), a service named "clusterset:<service>/<hostname>.<cluster>"
// serves that exact name (which wins over the wildcard) on the same
// listeners, in the same network, with the same policies, forwarding only
// to that pod of that cluster. A listener naming a per-pod host exactly
// is the route's own and is left to it. Its per-pod services count
// towards maxPodNames.
func (b *builder) addPodSNIHosts(kept map[string]*serviceState, podNames *int) {
	st := b.st
	for _, name := range slices.Sorted(maps.Keys(st.services)) {
		ss := st.services[name]
		if ss.skipped {
			continue
		}
		for _, ref := range passthroughImports(&ss.svc) {
			exports := st.exports[ref]
			if len(exports) == 0 || mcs.Merge(exports).Type != model.ExportHeadless {
				continue
			}
			for _, pod := range slices.Concat(podHosts(exports), clusterCatchAlls(exports)) {
				svc, ok := narrowToPod(&ss.svc, ref, pod)
				if !ok {
					continue
				}
				if *podNames >= maxPodNames {
					st.csConflicts = append(st.csConflicts, fmt.Sprintf("service %s: per-pod names already make %d services; %s and the names after it not served", name, maxPodNames, pod.host))
					break
				}
				if err := b.keepSynthetic(svc, ss.net, kept); err != nil {
					st.csConflicts = append(st.csConflicts, fmt.Sprintf("service %s per-pod name %s: %v", name, pod.host, err))
					continue
				}
				*podNames++
			}
		}
	}
}

// clusterCatchAlls are, for each cluster exporting a Headless Service,
// the names below "<cluster>.<svc>.<ns>.svc.clusterset.local" that are no
// ready pod's: a wildcard with the hostname no endpoint has (noPod), so
// that a TLS connection for a pod that is not ready or not known matches
// it rather than the route's wildcard over the Service, and reaches no
// target rather than another pod.
func clusterCatchAlls(exports []*model.ServiceExport) []podHost {
	var out []podHost
	for _, e := range exports {
		if e.Type == model.ExportHeadless {
			host := "*." + strings.ToLower(e.Owner+"."+mcs.ClustersetHost(e.Namespace, e.Service))
			out = append(out, podHost{host: host, hostname: noPod, cluster: e.Owner})
		}
	}
	slices.SortFunc(out, func(x, y podHost) int { return strings.Compare(x.host, y.host) })
	return out
}

// passthroughImports are the imports svc's rules forward to, when it has
// a TLS passthrough listener.
func passthroughImports(svc *model.Service) []ExportRef {
	if !slices.ContainsFunc(svc.Listeners, func(l model.Listener) bool { return l.Protocol == model.ProtocolTLSPassthrough }) {
		return nil
	}
	var out []ExportRef
	for _, r := range svc.Rules {
		if r.Action.Forward == nil {
			continue
		}
		for _, wb := range r.Action.Forward.Backends {
			if im := wb.Import; im != nil && !slices.Contains(out, ExportRef{im.Namespace, im.Name}) {
				out = append(out, ExportRef{im.Namespace, im.Name})
			}
		}
	}
	return out
}

// narrowToPod is svc serving pod's name only, by its TLS passthrough
// listeners whose host names cover it (a wildcard itself, for a
// clusterCatchAlls name) by a wildcard (and not exactly),
// forwarding to that pod of ref's import only: its rules keep only their
// backends of ref, each with pod's cluster alone and its hostname. It
// reports false when no listener covers the name.
func narrowToPod(svc *model.Service, ref ExportRef, pod podHost) (model.Service, bool) {
	out := *svc
	out.Name = ClustersetServicePrefix + svc.Name + "/" + pod.hostname + "." + pod.cluster
	out.DNSName, out.CustomDomains, out.Listeners, out.Rules = "", nil, nil, nil
	svcHosts := svc.Hostnames()
	for _, l := range svc.Listeners {
		hosts := svcHosts
		if len(l.Hostnames) > 0 {
			hosts = l.Hostnames
		}
		if l.Protocol != model.ProtocolTLSPassthrough || !coversByWildcard(hosts, pod.host) {
			continue
		}
		l.Hostnames = []string{pod.host}
		out.Listeners = append(out.Listeners, l)
	}
	if len(out.Listeners) == 0 {
		return out, false
	}
	for _, r := range svc.Rules {
		if r.Action.Forward == nil {
			continue
		}
		var backends []model.WeightedTargetGroup
		for _, wb := range r.Action.Forward.Backends {
			if im := wb.Import; im != nil && (ExportRef{im.Namespace, im.Name}) == ref {
				narrowed := *im
				narrowed.ClusterWeights, narrowed.Hostname = map[string]int32{pod.cluster: 1}, pod.hostname
				wb.Import = &narrowed
				backends = append(backends, wb)
			}
		}
		if len(backends) == 0 {
			continue
		}
		fwd := *r.Action.Forward
		fwd.Backends = backends
		r.Action.Forward = &fwd
		out.Rules = append(out.Rules, r)
	}
	return out, len(out.Rules) > 0
}

// coversByWildcard reports whether a wildcard of hosts covers host, and
// none names it exactly.
func coversByWildcard(hosts []string, host string) bool {
	covered := false
	for _, h := range hosts {
		h = strings.ToLower(h)
		if h == host {
			return false
		}
		if suffix, ok := strings.CutPrefix(h, "*"); ok && strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
			covered = true
		}
	}
	return covered
}
