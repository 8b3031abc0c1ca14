package proxy

import (
	"testing"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/pki"
)

func TestCertIndexChoosesBySNI(t *testing.T) {
	ca := pki.NewCA(t)
	cert := func(name string, names ...string) model.Certificate {
		l := ca.Issue(t, names...)
		return model.Certificate{Meta: model.Meta{Name: name, Revision: 1}, CertPEM: string(l.CertPEM), KeyPEM: string(l.KeyPEM)}
	}
	snap := &model.Snapshot{
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
	}
	cc := certCache{}
	ports, problems := cc.compileCerts(snap)
	if len(problems) != 1 {
		t.Errorf("problems = %v, want one for the missing certificate", problems)
	}
	ix := ports[443]
	if ix == nil || ports[8443] == nil || len(ports) != 2 {
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
	if again[443].get("api.example.com") != before {
		t.Error("unchanged certificate parsed again")
	}
	snap.Certificates[0].Revision = 2
	third, _ := cc.compileCerts(snap)
	if third[443].get("api.example.com") == before {
		t.Error("new revision of a certificate not parsed")
	}
}
