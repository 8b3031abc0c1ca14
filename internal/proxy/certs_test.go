package proxy

import (
	"testing"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/test/pki"
)

func TestCertIndexChoosesBySNI(t *testing.T) {
	ca := pki.NewCA(t)
	cert := func(name string, names ...string) model.Certificate {
		l := ca.Issue(t, names...)
		return model.Certificate{Meta: model.Meta{Name: name, Revision: 1}, CertPEM: string(l.CertPEM), KeyPEM: string(l.KeyPEM)}
	}
	snap := &model.Snapshot{Objects: model.Objects{
		Certificates: []model.Certificate{
			cert("api", "api.example.com"),
			cert("wild", "*.example.com"),
			cert("other", "other.test"),
		},
		Services: []model.Service{
			{Listeners: []model.Listener{{Port: 443, Protocol: model.ProtocolHTTPS, Certificates: []string{"wild", "api"}}}},
			{Listeners: []model.Listener{{Port: 443, Protocol: model.ProtocolHTTPS, Certificates: []string{"missing"}}}},
			{Listeners: []model.Listener{{Port: 8443, Protocol: model.ProtocolHTTPS, Certificates: []string{"other"}}}},
		},
	}}
	cc := certCache{}
	ports, problems := cc.compileCerts(snap)
	if len(problems) != 1 {
		t.Errorf("problems = %v, want one for the missing certificate", problems)
	}
	ix := ports[router.Bind{Port: 443}]
	if ix == nil || ports[router.Bind{Port: 8443}] == nil || len(ports) != 2 {
		t.Fatalf("ports = %v", ports)
	}
	for sni, want := range map[string]string{
		"api.example.com":  "api.example.com",
		"API.Example.COM.": "api.example.com",
		"www.example.com":  "*.example.com",
		"a.b.example.com":  "api.example.com", // a wildcard covers one label: fallback (first by name)
		"":                 "api.example.com",
	} {
		if got := ix.get(sni).Leaf.DNSNames[0]; got != want {
			t.Errorf("SNI %q → %s, want %s", sni, got, want)
		}
	}

	// An unchanged certificate is not parsed again; a new revision is.
	before := ix.get("api.example.com")
	again, _ := cc.compileCerts(snap)
	if again[router.Bind{Port: 443}].get("api.example.com") != before {
		t.Error("unchanged certificate parsed again")
	}
	snap.Certificates[0].Revision = 2
	third, _ := cc.compileCerts(snap)
	if third[router.Bind{Port: 443}].get("api.example.com") == before {
		t.Error("new revision of a certificate not parsed")
	}
}

// TestCertsPerBind keeps the certificates of two edge Gateways on one port
// apart: each address offers only its own.
func TestCertsPerBind(t *testing.T) {
	ca := pki.NewCA(t)
	cert := func(name string) model.Certificate {
		l := ca.Issue(t, name+".example.com")
		return model.Certificate{Meta: model.Meta{Name: name, Revision: 1}, CertPEM: string(l.CertPEM), KeyPEM: string(l.KeyPEM)}
	}
	https := func(network, cert string) model.Service {
		return model.Service{Network: network, Listeners: []model.Listener{{Port: 443, Protocol: model.ProtocolHTTPS, Certificates: []string{cert}}}}
	}
	snap := &model.Snapshot{Objects: model.Objects{
		Networks:     []model.ServiceNetwork{gateway("gw-a", "127.0.0.2"), gateway("gw-b", "127.0.0.3")},
		Certificates: []model.Certificate{cert("a"), cert("b")},
		Services:     []model.Service{https("gw-a", "a"), https("gw-b", "b")},
	}}
	binds, problems := certCache{}.compileCerts(snap)
	if len(problems) != 0 || len(binds) != 2 {
		t.Fatalf("compileCerts = %v, %v; want two binds, no problems", binds, problems)
	}
	for addr, want := range map[string]string{"127.0.0.2": "a.example.com", "127.0.0.3": "b.example.com"} {
		ix := binds[router.Bind{Addr: addr, Port: 443}]
		if ix == nil {
			t.Fatalf("no certificates on %s:443", addr)
		}
		for _, sni := range []string{"a.example.com", "b.example.com"} {
			if got := ix.get(sni).Leaf.DNSNames[0]; got != want {
				t.Errorf("%s SNI %s: offered %s, want %s", addr, sni, got, want)
			}
		}
	}
}

// Services of every network share a mesh port's bind, and every proxy
// holds every certificate whose key it may read. West's service, on its
// own name, names a certificate of west's that also carries east's host
// name and sorts first: a client asking for east's name still gets the
// certificate of the service that serves it; west's name, and names
// nobody serves, are as before.
func TestCertOfAnotherClustersServiceDoesNotTakeAHostName(t *testing.T) {
	ca := pki.NewCA(t)
	cert := func(name, owner string, names ...string) model.Certificate {
		l := ca.Issue(t, names...)
		return model.Certificate{Meta: model.Meta{Name: name, Owner: owner, Revision: 1}, CertPEM: string(l.CertPEM), KeyPEM: string(l.KeyPEM)}
	}
	https := func(name, owner string, hosts []string, certs ...string) model.Service {
		return model.Service{Meta: model.Meta{Name: name, Owner: owner}, Network: "mesh", CustomDomains: hosts,
			Listeners: []model.Listener{{Port: 443, Protocol: model.ProtocolHTTPS, Certificates: certs}}}
	}
	snap := &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks,
		Certificates: []model.Certificate{
			cert("aaa", "west", "fine.example", "shop.example", "*.shop.example", "nobody.example"),
			cert("shop", "east", "shop.example", "*.shop.example"),
		},
		Services: []model.Service{
			https("fine", "west", []string{"fine.example"}, "aaa"),
			https("shop", "east", []string{"shop.example", "www.shop.example"}, "shop"),
		},
	}}
	binds, problems := certCache{}.compileCerts(snap)
	ix := binds[router.Bind{Port: 443}]
	if len(problems) != 0 || ix == nil {
		t.Fatalf("compileCerts = %v, %v", binds, problems)
	}
	for sni, want := range map[string]string{
		"shop.example":     "shop.example",
		"www.shop.example": "shop.example",
		"fine.example":     "fine.example",
		"nobody.example":   "fine.example", // only west's carries it
		"":                 "fine.example", // the fallback, first by name
	} {
		if got := ix.get(sni).Leaf.DNSNames[0]; got != want {
			t.Errorf("SNI %q → the certificate of %s, want %s's", sni, got, want)
		}
	}
}
