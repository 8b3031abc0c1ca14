package inspect

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/pki"
)

func TestTables(t *testing.T) {
	ca := pki.NewCA(t)
	leaf := ca.Issue(t, "api.example.com", "www.example.com")
	cert := &model.Certificate{Meta: model.Meta{Name: "api", Owner: "east", Revision: 3}, CertPEM: string(leaf.CertPEM), KeyPEM: string(leaf.KeyPEM)}
	tests := []struct {
		kind model.Kind
		objs []model.Object
		want []string // lines, with runs of spaces collapsed
	}{
		{model.KindServiceNetwork, []model.Object{
			&model.ServiceNetwork{Meta: model.Meta{Name: "my-hotel", Owner: "east", Revision: 7}, Mode: model.ModeServiceNetwork, Domain: "my-hotel.trellis.internal"},
			&model.ServiceNetwork{Meta: model.Meta{Name: "edge", Owner: "east", Revision: 8}, Mode: model.ModeEdge, Addresses: []string{"198.18.100.1"}},
		}, []string{
			"NAME OWNER MODE DOMAIN ADDRESSES REVISION",
			"my-hotel east ServiceNetwork my-hotel.trellis.internal - 7",
			"edge east Edge - 198.18.100.1 8",
		}},
		{model.KindService, []model.Object{&model.Service{
			Meta: model.Meta{Name: "inventory-default.my-hotel", Owner: "east", Revision: 9}, Network: "my-hotel",
			DNSName: "inventory-default.my-hotel.trellis.internal", CustomDomains: []string{"inventory.example.com"},
			Listeners: []model.Listener{{Port: 8080, Protocol: model.ProtocolHTTP}, {Port: 443, Protocol: model.ProtocolHTTPS, Hostname: "*.example.com"}},
			Rules:     []model.Rule{{}, {}},
		}}, []string{
			"NAME OWNER NETWORK HOSTNAMES LISTENERS RULES REVISION",
			"inventory-default.my-hotel east my-hotel inventory-default.my-hotel.trellis.internal,inventory.example.com 8080/HTTP,443/HTTPS(*.example.com) 2 9",
		}},
		{model.KindTargetGroup, []model.Object{&model.TargetGroup{
			Meta: model.Meta{Name: "inventory-ver1", Owner: "east", Revision: 4}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1,
			Targets: []model.Target{{State: model.TargetActive}, {State: model.TargetDraining}, {State: model.TargetActive}},
		}}, []string{
			"NAME OWNER PROTOCOL TARGETS REVISION",
			"inventory-ver1 east HTTP/HTTP1 3 (2 Active, 1 Draining) 4",
		}},
		{model.KindWorkloadSet, []model.Object{&model.WorkloadSet{
			Meta: model.Meta{Name: "shop.east", Owner: "east", Revision: 5}, Namespace: "shop",
			Workloads: []model.Workload{{Address: "10.0.0.1", ServiceAccount: "frontend"}, {Address: "10.0.0.2", ServiceAccount: "frontend"}},
		}}, []string{
			"NAME OWNER NAMESPACE WORKLOADS REVISION",
			"shop.east east shop 2 5",
		}},
		{model.KindServiceExport, []model.Object{&model.ServiceExport{
			Meta: model.Meta{Name: "shop.cart.west", Owner: "west", Revision: 6}, Namespace: "shop", Service: "cart",
			Type: model.ExportClusterSetIP, ExportedAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
			Ports: []model.ExportPort{{Port: 80, Protocol: "TCP", Targets: []model.Target{{}, {}}}, {Port: 53, Protocol: "UDP"}},
		}}, []string{
			"NAME CLUSTER SERVICE TYPE PORTS ENDPOINTS EXPORTED REVISION",
			"shop.cart.west west shop/cart ClusterSetIP 80/TCP,53/UDP 2 2026-12-01T00:00:00Z 6",
		}},
		{model.KindPeer, []model.Object{&model.Peer{Meta: model.Meta{Name: "proxy.west", Owner: "west", Revision: 2}, Address: "192.0.2.11:15443"}}, []string{
			"NAME CLUSTER ADDRESS REVISION",
			"proxy.west west 192.0.2.11:15443 2",
		}},
		{model.KindCluster, []model.Object{&model.Cluster{Meta: model.Meta{Name: "west", Owner: model.ControlPlaneOwner, Revision: 3}, Added: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
			&model.Cluster{Meta: model.Meta{Name: "east", Owner: model.ControlPlaneOwner, Revision: 4}, Added: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), PodNetwork: "flat"}}, []string{
			"NAME ADMITTED POD NETWORK REVISION",
			"west 2026-12-01T00:00:00Z - 3",
			"east 2026-12-01T00:00:00Z flat 4",
		}},
		{model.KindCertificate, []model.Object{cert}, []string{
			"NAME OWNER NAMES NOT AFTER REVISION",
			"api east api.example.com,www.example.com " + leaf.TLS(t).Leaf.NotAfter.UTC().Format("2006-01-02T15:04:05Z") + " 3",
		}},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if err := Write(&b, "table", tt.kind, tt.objs); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
			got = append(got, strings.Join(strings.Fields(l), " "))
		}
		if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
			t.Errorf("%s table:\n%s\nwant:\n%s", tt.kind, strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
		}
	}
}

// No format ever shows a certificate's private key, and the caller's
// objects keep theirs.
func TestKeysRedacted(t *testing.T) {
	leaf := pki.NewCA(t).Issue(t, "api.example.com")
	cert := &model.Certificate{Meta: model.Meta{Name: "api"}, CertPEM: string(leaf.CertPEM), KeyPEM: string(leaf.KeyPEM)}
	for _, f := range Formats {
		var b bytes.Buffer
		if err := Write(&b, f, model.KindCertificate, []model.Object{cert}); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b.String(), "PRIVATE KEY") {
			t.Errorf("%s output shows the private key:\n%s", f, b.String())
		}
		if f != "table" && !strings.Contains(b.String(), Redacted) {
			t.Errorf("%s output does not say the key is redacted:\n%s", f, b.String())
		}
	}
	if cert.KeyPEM != string(leaf.KeyPEM) {
		t.Error("Write changed the caller's certificate")
	}
	if err := Write(&bytes.Buffer{}, "xml", model.KindCertificate, nil); err == nil || !strings.Contains(err.Error(), "table, yaml, json") {
		t.Errorf("an unknown format: %v", err)
	}
}

// Every kind the control plane stores has a table, so `trellis get` shows
// a kind as soon as it is added.
func TestEveryKindHasATable(t *testing.T) {
	for _, k := range model.Kinds {
		obj, err := model.New(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := Write(new(bytes.Buffer), "table", k, []model.Object{obj}); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
}
