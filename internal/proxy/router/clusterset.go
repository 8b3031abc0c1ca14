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
			if st.serves(bind, host) {
				continue // an explicit route wins
			}
			if !taken && opened >= maxClustersetPorts {
				st.csConflicts = append(st.csConflicts, fmt.Sprintf("clusterset name %s port %d: clusterset names already opened %d ports; not served", host, p.Port, maxClustersetPorts))
				continue
			}
			svc := model.Service{
				Meta:      model.Meta{Name: ClustersetServiceName(k.Namespace, k.Name, p.Port)},
				Listeners: []model.Listener{{Name: "clusterset", Port: p.Port, Protocol: model.ProtocolHTTP, Hostnames: []string{host}}},
				Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{
					Weight: 1,
					Import: &model.ImportRef{Namespace: k.Namespace, Name: k.Name, Port: p.Port, Protocol: model.ProtocolHTTP, ProtocolVersion: version, ClusterWeights: weights},
				}}}}}},
			}
			ss := st.synthetic[svc.Name]
			if ss == nil || !reflect.DeepEqual(ss.svc, svc) {
				ss = &serviceState{svc: svc, synthetic: true}
				if err := b.compileService(ss, nil); err != nil {
					// Not expected (the exports were validated); still,
					// an export never keeps the rest of the table from
					// being served.
					st.csConflicts = append(st.csConflicts, fmt.Sprintf("clusterset name %s port %d: %v", host, p.Port, err))
					continue
				}
			}
			st.apply(ss)
			kept[svc.Name] = ss
			if st.synthetic[svc.Name] != ss {
				st.servicesChanged(svc.Name, ss.service)
			}
			if !taken {
				opened++
			}
		}
	}
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
