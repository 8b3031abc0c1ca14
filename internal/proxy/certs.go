package proxy

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
)

// certIndex chooses an HTTPS bind's certificate by the client's SNI, from
// the names the certificates themselves carry. A name some service naming
// a certificate serves goes to that certificate before any other carrying
// the name: services of every network share a mesh port's bind, so a
// certificate of another cluster's service, carrying a host name it does
// not serve, must not take that name from the service that does (the
// control plane keeps one owner's services on a host name).
type certIndex struct {
	exact map[string]*tls.Certificate
	// wildcard maps the parent domain of a "*.example.com" name to its
	// certificate; as in TLS, the wildcard covers exactly one label.
	wildcard map[string]*tls.Certificate
	// fallback serves clients that send no SNI or an unknown one: the
	// first certificate of the bind, in name order.
	fallback *tls.Certificate
}

// newCertIndex indexes certs, hosts[i] being the host names (lower case)
// the services naming certs[i] on the bind serve: first each certificate's
// names that one of its hosts covers or is covered by, then the rest of
// its names, each name going to the first certificate in that order.
func newCertIndex(certs []*tls.Certificate, hosts [][]string) *certIndex {
	ix := &certIndex{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	for _, served := range []bool{true, false} {
		for i, c := range certs {
			if ix.fallback == nil {
				ix.fallback = c
			}
			names := c.Leaf.DNSNames
			if len(names) == 0 && c.Leaf.Subject.CommonName != "" {
				names = []string{c.Leaf.Subject.CommonName}
			}
			for _, n := range names {
				n = strings.ToLower(n)
				if served && !slices.ContainsFunc(hosts[i], func(h string) bool { return model.HostnamesOverlap(n, h) }) {
					continue
				}
				if parent, ok := strings.CutPrefix(n, "*."); ok {
					if ix.wildcard[parent] == nil {
						ix.wildcard[parent] = c
					}
				} else if ix.exact[n] == nil {
					ix.exact[n] = c
				}
			}
		}
	}
	return ix
}

// get returns the certificate for serverName.
func (ix *certIndex) get(serverName string) *tls.Certificate {
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	if c := ix.exact[name]; c != nil {
		return c
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if c := ix.wildcard[parent]; c != nil {
			return c
		}
	}
	return ix.fallback
}

// certInputs are the lists of a snapshot the certificate indexes are made
// from.
type certInputs struct {
	services     []model.Service
	certificates []model.Certificate
	networks     []model.ServiceNetwork
}

// same reports whether in and o are the same lists (model.SameList).
func (in certInputs) same(o certInputs) bool {
	return model.SameList(in.services, o.services) && model.SameList(in.certificates, o.certificates) && model.SameList(in.networks, o.networks)
}

// certCache keeps parsed certificates between Updates, keyed by name and
// revision, so that an unchanged certificate is parsed once. Only Update
// (under the proxy's mutex) uses it.
type certCache map[string]cachedCert

type cachedCert struct {
	revision int64
	cert     *tls.Certificate
}

// compileCerts builds the certificate index of every HTTPS bind in snap.
// A listener naming a certificate that is missing or does not parse loses
// that certificate (reported in the returned problems), not the bind.
func (cc certCache) compileCerts(snap *model.Snapshot) (map[router.Bind]*certIndex, []error) {
	byName := make(map[string]*model.Certificate, len(snap.Certificates))
	for i := range snap.Certificates {
		byName[snap.Certificates[i].Name] = &snap.Certificates[i]
	}
	networks := make(map[string]*model.ServiceNetwork, len(snap.Networks))
	for i := range snap.Networks {
		networks[snap.Networks[i].Name] = &snap.Networks[i]
	}
	var problems []error
	used := map[string]bool{}
	refs := map[router.Bind][]string{}
	// hosts are, by bind and certificate, the host names the services
	// naming the certificate there serve.
	hosts := map[router.Bind]map[string][]string{}
	for i := range snap.Services {
		s := &snap.Services[i]
		for _, l := range s.Listeners {
			if l.Protocol != model.ProtocolHTTPS {
				continue
			}
			served := l.Hostnames
			if len(served) == 0 {
				served = s.Hostnames()
			}
			for _, b := range router.ListenerBinds(networks[s.Network], l.Port) {
				if hosts[b] == nil {
					hosts[b] = map[string][]string{}
				}
				for _, name := range l.Certificates {
					if !slices.Contains(refs[b], name) {
						refs[b] = append(refs[b], name)
					}
					for _, h := range served {
						if h = strings.ToLower(h); !slices.Contains(hosts[b][name], h) {
							hosts[b][name] = append(hosts[b][name], h)
						}
					}
				}
			}
		}
	}
	out := make(map[router.Bind]*certIndex, len(refs))
	for b, names := range refs {
		slices.Sort(names)
		var certs []*tls.Certificate
		var served [][]string
		for _, name := range names {
			mc := byName[name]
			if mc == nil {
				problems = append(problems, fmt.Errorf("%s: certificate %q not found", b, name))
				continue
			}
			used[name] = true
			c, err := cc.parse(mc)
			if err != nil {
				problems = append(problems, fmt.Errorf("%s: certificate %q: %w", b, name, err))
				continue
			}
			certs, served = append(certs, c), append(served, hosts[b][name])
		}
		if len(certs) > 0 {
			out[b] = newCertIndex(certs, served)
		}
	}
	for name := range cc {
		if !used[name] {
			delete(cc, name)
		}
	}
	return out, problems
}

func (cc certCache) parse(mc *model.Certificate) (*tls.Certificate, error) {
	if c, ok := cc[mc.Name]; ok && c.revision == mc.Revision && mc.Revision != 0 {
		return c.cert, nil
	}
	c, err := mc.Parse()
	if err != nil {
		return nil, err
	}
	cc[mc.Name] = cachedCert{revision: mc.Revision, cert: &c}
	return &c, nil
}
