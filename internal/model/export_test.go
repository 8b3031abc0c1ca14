package model

import (
	"strings"
	"testing"
	"time"
)

func TestServiceExportValidate(t *testing.T) {
	good := func() *ServiceExport {
		return &ServiceExport{
			Meta:      Meta{Name: ExportName("east", "shop", "cart"), Owner: "east"},
			Namespace: "shop", Service: "cart", Type: ExportClusterSetIP, ExportedAt: time.Now(),
			Ports: []ExportPort{{Name: "http", Protocol: "TCP", Port: 80,
				Targets: []Target{{Address: "10.0.0.1", Port: 8080, Cluster: "east", State: TargetActive}}}},
		}
	}
	if err := good().Validate(); err != nil {
		t.Fatal(err)
	}
	// ExportedAt is the control plane's to stamp: a cluster may send none.
	unstamped := good()
	unstamped.ExportedAt = time.Time{}
	if err := unstamped.Validate(); err != nil {
		t.Errorf("export without exportedAt: %v", err)
	}
	for field, mutate := range map[string]func(e *ServiceExport){
		"name":                        func(e *ServiceExport) { e.Name = "shop.cart.west" },
		"namespace":                   func(e *ServiceExport) { e.Namespace = "Shop" },
		"service":                     func(e *ServiceExport) { e.Service = "" },
		"type":                        func(e *ServiceExport) { e.Type = "ExternalName" },
		"ports[0].port":               func(e *ServiceExport) { e.Ports[0].Port = 0 },
		"ports[0].protocol":           func(e *ServiceExport) { e.Ports[0].Protocol = "tcp" },
		"ports[0].name":               func(e *ServiceExport) { e.Ports[0].Name = "HTTP" },
		"ports[1]":                    func(e *ServiceExport) { e.Ports = append(e.Ports, e.Ports[0]) },
		"ports[0].targets[0].cluster": func(e *ServiceExport) { e.Ports[0].Targets[0].Cluster = "west" },
		"ports[0].targets[0].address": func(e *ServiceExport) { e.Ports[0].Targets[0].Address = "fe80::1%eth0" },
		"ports[0].targets[0].port":    func(e *ServiceExport) { e.Ports[0].Targets[0].Port = 70000 },
		"ports[0].targets[0].state":   func(e *ServiceExport) { e.Ports[0].Targets[0].State = "" },
	} {
		e := good()
		mutate(e)
		err := e.Validate()
		if err == nil || !strings.Contains(err.Error(), field+":") {
			t.Errorf("%s: %v", field, err)
		}
	}
}

func TestPeerValidate(t *testing.T) {
	ok := &Peer{Meta: Meta{Name: PeerName("east", "proxy-0"), Owner: "east"}, Address: "192.0.2.10:15443"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, addr, field string }{
		{"proxy-0.west", "192.0.2.10:15443", "name"},
		{"proxy-0.east", "peer.example:15443", "address"},
		{"proxy-0.east", "192.0.2.10", "address"},
		{"proxy-0.east", "192.0.2.10:0", "address"},
		{"proxy-0.east", "0.0.0.0:15443", "address"},
	} {
		p := &Peer{Meta: Meta{Name: tc.name, Owner: "east"}, Address: tc.addr}
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%+v: %v", tc, err)
		}
	}
}

func TestServiceExportHostnames(t *testing.T) {
	good := func() *ServiceExport {
		return &ServiceExport{
			Meta:      Meta{Name: ExportName("east", "shop", "db"), Owner: "east"},
			Namespace: "shop", Service: "db", Type: ExportHeadless,
			Ports: []ExportPort{{Name: "http", Protocol: "TCP", Port: 80,
				Targets: []Target{{Address: "10.0.0.1", Port: 8080, Cluster: "east", State: TargetActive}}}},
			Hostnames: []ExportHostname{{Hostname: "web-0", Addresses: []string{"10.0.0.1", "fd00::1"}}},
		}
	}
	if err := good().Validate(); err != nil {
		t.Fatal(err)
	}
	many := make([]ExportHostname, MaxExportHostnames+1)
	for i := range many {
		many[i] = ExportHostname{Hostname: "web-" + strings.Repeat("0", i%3) + string(rune('a'+i%26)), Addresses: []string{"10.0.0.1"}}
	}
	for field, mutate := range map[string]func(e *ServiceExport){
		"hostnames":                          func(e *ServiceExport) { e.Type = ExportClusterSetIP },
		"hostnames[0].hostname":              func(e *ServiceExport) { e.Hostnames[0].Hostname = "web-0.west" },
		"hostnames[1].hostname":              func(e *ServiceExport) { e.Hostnames = append(e.Hostnames, e.Hostnames[0]) },
		"hostnames[0].addresses":             func(e *ServiceExport) { e.Hostnames[0].Addresses = append(e.Hostnames[0].Addresses, "10.0.0.2") },
		"hostnames[0].addresses[1]":          func(e *ServiceExport) { e.Hostnames[0].Addresses[1] = "pod.example" },
		"hostnames[0].hostname ":             func(e *ServiceExport) { e.Hostnames[0].Hostname = "Web-0" },
		"hostnames[0].addresses[0]":          func(e *ServiceExport) { e.Hostnames[0].Addresses[0] = "fe80::1%eth0" },
		"hostnames: 1001 hostnames; at most": func(e *ServiceExport) { e.Hostnames = many },
	} {
		e := good()
		mutate(e)
		err := e.Validate()
		if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(field)) {
			t.Errorf("%s: %v", field, err)
		}
	}
}
