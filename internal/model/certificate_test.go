package model

import "testing"

func TestKeyReaders(t *testing.T) {
	https := func(certs ...string) []Listener {
		return []Listener{{Name: "https", Port: 443, Protocol: ProtocolHTTPS, Certificates: certs}}
	}
	networks := []*ServiceNetwork{
		{Meta: Meta{Name: "a-net", Owner: "a"}, AllowedClusters: []string{"b"}},
		{Meta: Meta{Name: "open", Owner: "a"}, AllowedClusters: []string{"*"}},
		{Meta: Meta{Name: "c-net", Owner: "c"}},
	}
	services := []*Service{
		// a's certificate served in a's network, which allows b.
		{Meta: Meta{Name: "shop", Owner: "a"}, Network: "a-net", Listeners: https("a-cert")},
		// b's service in a's network serves b's certificate: a serves it too.
		{Meta: Meta{Name: "b-shop", Owner: "b"}, Network: "a-net", Listeners: https("b-cert")},
		// a network open to all.
		{Meta: Meta{Name: "pub", Owner: "a"}, Network: "open", Listeners: https("open-cert")},
		// b names a's certificate in a's network, which allows b: that
		// grants b nothing either.
		{Meta: Meta{Name: "b-steal", Owner: "b"}, Network: "a-net", Listeners: https("a-private")},
		// c names a's certificate in c's own network: that grants c nothing.
		{Meta: Meta{Name: "steal", Owner: "c"}, Network: "c-net", Listeners: https("a-only")},
		// a service in a network that does not exist serves nothing.
		{Meta: Meta{Name: "lost", Owner: "a"}, Network: "gone", Listeners: https("lost-cert")},
	}
	// What a keyView keeps of each service makes the same readers: a
	// plain listener before the HTTPS one changes nothing.
	services[0].Listeners = append([]Listener{{Name: "http", Port: 80, Protocol: ProtocolHTTP}}, services[0].Listeners...)
	var parts []*Service
	for _, s := range services {
		parts = append(parts, s.KeyReadersPart())
	}
	k := NewKeyReaders(networks, services)
	kParts := NewKeyReaders(networks, parts)
	cert := func(name, owner string) *Certificate { return &Certificate{Meta: Meta{Name: name, Owner: owner}} }
	tests := []struct {
		cert    *Certificate
		cluster string
		want    bool
	}{
		{cert("a-cert", "a"), "a", true},
		{cert("a-cert", "a"), "b", true},
		{cert("a-cert", "a"), "c", false},
		{cert("b-cert", "b"), "a", true},
		{cert("b-cert", "b"), "c", false},
		{cert("open-cert", "a"), "z", true},
		{cert("a-only", "a"), "c", false},
		{cert("a-only", "a"), "a", true},
		{cert("a-private", "a"), "b", false},
		{cert("a-private", "a"), "a", true},
		{cert("lost-cert", "a"), "b", false},
		{cert("unused", "a"), "b", false},
	}
	for _, tt := range tests {
		if got := k.CanRead(tt.cluster, tt.cert); got != tt.want {
			t.Errorf("CanRead(%q, %s of %s) = %v, want %v", tt.cluster, tt.cert.Name, tt.cert.Owner, got, tt.want)
		}
		if got := kParts.CanRead(tt.cluster, tt.cert); got != tt.want {
			t.Errorf("of KeyReadersParts: CanRead(%q, %s of %s) = %v, want %v", tt.cluster, tt.cert.Name, tt.cert.Owner, got, tt.want)
		}
	}
	if _, err := cert("x", "a").Redacted().Parse(); err == nil {
		t.Error("a redacted certificate parsed")
	}
}
