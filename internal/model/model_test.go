package model

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func validService() *Service {
	return &Service{
		Meta:      Meta{Name: "inventory-default.hotel", Owner: "east"},
		Network:   "hotel",
		DNSName:   "inventory-default.hotel.trellis.internal",
		Listeners: []Listener{{Name: "http", Port: 8080, Protocol: ProtocolHTTP}},
		Rules: []Rule{{
			Matches: []Match{{Path: &PathMatch{Type: PathPrefix, Value: "/"}}},
			Action: Action{Forward: &ForwardAction{Backends: []WeightedTargetGroup{
				{TargetGroup: "v1", Weight: 50}, {TargetGroup: "v2", Weight: 50},
			}}},
		}},
	}
}

// fieldsOf returns the fields a validation error names, sorted.
func fieldsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var fe FieldErrors
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not FieldErrors", err)
	}
	var out []string
	for _, e := range fe {
		out = append(out, e.Field)
	}
	slices.Sort(out)
	return out
}

// mutation is one case of a validation table: a change to a valid object,
// and the fields its Validate must then name (none: it stays valid).
type mutation[T any] struct {
	name   string
	mutate func(*T)
	want   []string
}

// checkMutations validates, for each case, a fresh valid() changed by the
// case's mutate.
func checkMutations[T any, P interface {
	*T
	Validate() error
}](t *testing.T, valid func() P, tests []mutation[T]) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := valid()
			tt.mutate(obj)
			if got := fieldsOf(t, obj.Validate()); !slices.Equal(got, tt.want) {
				t.Errorf("fields = %v, want %v\n%v", got, tt.want, obj.Validate())
			}
		})
	}
}

func TestServiceValidationNamesEveryBadField(t *testing.T) {
	tests := []mutation[Service]{
		{"valid", func(*Service) {}, nil},
		{"no name or owner", func(s *Service) { s.Name, s.Owner = "", "" }, []string{"name", "owner"}},
		{"upper-case name", func(s *Service) { s.Name = "Inventory" }, []string{"name"}},
		{"bad port and protocol", func(s *Service) { s.Listeners[0] = Listener{Port: 0, Protocol: "SMTP"} },
			[]string{"listeners[0].port", "listeners[0].protocol"}},
		{"duplicate port", func(s *Service) { s.Listeners = append(s.Listeners, Listener{Port: 8080, Protocol: ProtocolHTTP}) },
			[]string{"listeners[1].port"}},
		{"no listeners", func(s *Service) { s.Listeners = nil }, []string{"listeners"}},
		{"bad custom domain", func(s *Service) { s.CustomDomains = []string{"ok.example.com", "Bad_Name"} },
			[]string{"customDomains[1]"}},
		{"wildcard custom domain", func(s *Service) { s.CustomDomains = []string{"*.example.com"} }, nil},
		{"relative path", func(s *Service) { s.Rules[0].Matches[0].Path.Value = "api" },
			[]string{"rules[0].matches[0].path.value"}},
		{"bad regex", func(s *Service) { s.Rules[0].Matches[0].Path = &PathMatch{Type: PathRegularExpression, Value: "("} },
			[]string{"rules[0].matches[0].path.value"}},
		{"bad header name and type", func(s *Service) {
			s.Rules[0].Matches[0].Headers = []ValueMatch{{Type: "Prefix", Name: "x env", Value: "a"}}
		}, []string{"rules[0].matches[0].headers[0].name", "rules[0].matches[0].headers[0].type"}},
		{"negative weight", func(s *Service) { s.Rules[0].Action.Forward.Backends[1].Weight = -1 },
			[]string{"rules[0].action.forward.backends[1].weight"}},
		{"no action", func(s *Service) { s.Rules[0].Action = Action{} }, []string{"rules[0].action"}},
		{"two actions", func(s *Service) { s.Rules[0].Action.FixedResponse = &FixedResponseAction{StatusCode: 404} },
			[]string{"rules[0].action"}},
		{"bad fixed status", func(s *Service) { s.Rules[0].Action = Action{FixedResponse: &FixedResponseAction{StatusCode: 99}} },
			[]string{"rules[0].action.fixedResponse.statusCode"}},
	}
	checkMutations(t, validService, tests)
}

func TestTargetGroupValidation(t *testing.T) {
	valid := func() *TargetGroup {
		return &TargetGroup{
			Meta: Meta{Name: "v1", Owner: "east"}, Protocol: ProtocolHTTP, ProtocolVersion: HTTP1,
			Targets: []Target{{Address: "10.0.0.1", Port: 8080, Cluster: "east", State: TargetActive}},
		}
	}
	tests := []mutation[TargetGroup]{
		{"valid", func(*TargetGroup) {}, nil},
		{"ipv6 target", func(tg *TargetGroup) { tg.Targets[0].Address = "fd00::1" }, nil},
		{"hostname target", func(tg *TargetGroup) { tg.Targets[0].Address = "backend.local" }, []string{"targets[0].address"}},
		{"no port anywhere", func(tg *TargetGroup) { tg.Targets[0].Port = 0 }, []string{"targets[0].port"}},
		{"group port suffices", func(tg *TargetGroup) { tg.Targets[0].Port, tg.Port = 0, 80 }, nil},
		{"target in another cluster", func(tg *TargetGroup) { tg.Targets[0].Cluster = "west" }, []string{"targets[0].cluster"}},
		{"no cluster, bad state", func(tg *TargetGroup) { tg.Targets[0].Cluster, tg.Targets[0].State = "", "Gone" },
			[]string{"targets[0].cluster", "targets[0].state"}},
		{"bad protocol", func(tg *TargetGroup) { tg.Protocol, tg.ProtocolVersion = "UDP", "HTTP3" },
			[]string{"protocol", "protocolVersion"}},
		{"health check out of range", func(tg *TargetGroup) {
			tg.HealthCheck = HealthCheck{IntervalSeconds: 1, TimeoutSeconds: 121, HealthyThresholdCount: 11, Path: "health", Matcher: "200-199"}
		}, []string{"healthCheck.healthyThresholdCount", "healthCheck.intervalSeconds", "healthCheck.matcher", "healthCheck.path", "healthCheck.timeoutSeconds"}},
		{"health check path with a header in it", func(tg *TargetGroup) { tg.HealthCheck.Path = "/h HTTP/1.1\r\nX-Injected: 1" }, []string{"healthCheck.path"}},
		{"health check protocol and version", func(tg *TargetGroup) { tg.HealthCheck.Protocol, tg.HealthCheck.ProtocolVersion = "TCP", "GRPC" },
			[]string{"healthCheck.protocol", "healthCheck.protocolVersion"}},
		{"health check over HTTPS and HTTP/2", func(tg *TargetGroup) { tg.HealthCheck.Protocol, tg.HealthCheck.ProtocolVersion = ProtocolHTTPS, HTTP2 }, nil},
	}
	checkMutations(t, valid, tests)
}

func TestNetworkValidation(t *testing.T) {
	tests := []struct {
		n    ServiceNetwork
		want []string
	}{
		{ServiceNetwork{Meta: Meta{Name: "hotel", Owner: "east"}, Mode: ModeServiceNetwork, Domain: "hotel.trellis.internal"}, nil},
		{ServiceNetwork{Meta: Meta{Name: "hotel", Owner: "east"}, Mode: ModeServiceNetwork}, []string{"domain"}},
		{ServiceNetwork{Meta: Meta{Name: "edge", Owner: "east"}, Mode: ModeEdge, Domain: "x.internal"}, []string{"domain"}},
		{ServiceNetwork{Meta: Meta{Name: "edge", Owner: "east"}, Mode: "Mesh"}, []string{"mode"}},
		{ServiceNetwork{Meta: Meta{Name: "edge", Owner: "east"}, Mode: ModeEdge, Addresses: []string{"198.18.100.1", "2001:db8::1"}}, nil},
		{ServiceNetwork{Meta: Meta{Name: "edge", Owner: "east"}, Mode: ModeEdge, AllowedClusters: []string{"west", "north"}}, nil},
		{ServiceNetwork{Meta: Meta{Name: "edge", Owner: "east"}, Mode: ModeEdge, AllowedClusters: []string{"*"}}, nil},
		{ServiceNetwork{Meta: Meta{Name: "edge", Owner: "east"}, Mode: ModeEdge, AllowedClusters: []string{"west", "*", "West", "west"}},
			[]string{"allowedClusters[1]", "allowedClusters[2]", "allowedClusters[3]"}},
		{ServiceNetwork{Meta: Meta{Name: "edge", Owner: "east"}, Mode: ModeEdge, Addresses: []string{"198.18.100.1", "nope", "198.18.100.1", "2001:DB8::1"}},
			[]string{"addresses[1]", "addresses[2]", "addresses[3]"}},
		{ServiceNetwork{Meta: Meta{Name: "hotel", Owner: "east"}, Mode: ModeServiceNetwork, Domain: "hotel.trellis.internal", Addresses: []string{"198.18.100.1"}},
			[]string{"addresses"}},
	}
	for _, tt := range tests {
		if got := fieldsOf(t, tt.n.Validate()); !slices.Equal(got, tt.want) {
			t.Errorf("%+v: fields = %v, want %v", tt.n, got, tt.want)
		}
	}
}

// The defaults are Lattice's: on for HTTP1 groups, off for HTTP2, GRPC and
// TCP ones; 30 s / 5 s / 5 / 2 / "/" / "200".
func TestNetworkAllows(t *testing.T) {
	tests := []struct {
		allowed []string
		cluster string
		want    bool
	}{
		{nil, "east", true},
		{nil, "west", false},
		{[]string{"west"}, "west", true},
		{[]string{"west"}, "north", false},
		{[]string{"west"}, "east", true},
		{[]string{"*"}, "north", true},
	}
	for _, tt := range tests {
		n := ServiceNetwork{Meta: Meta{Name: "n", Owner: "east"}, AllowedClusters: tt.allowed}
		if got := n.Allows(tt.cluster); got != tt.want {
			t.Errorf("allowed %v: Allows(%q) = %v, want %v", tt.allowed, tt.cluster, got, tt.want)
		}
	}
}

func TestHealthCheckDefaults(t *testing.T) {
	h := HealthCheck{}.Defaulted(ProtocolHTTP, HTTP1)
	if !*h.Enabled || h.IntervalSeconds != 30 || h.TimeoutSeconds != 5 || h.HealthyThresholdCount != 5 ||
		h.UnhealthyThresholdCount != 2 || h.Path != "/" || h.Matcher != "200" || h.Protocol != ProtocolHTTP || h.ProtocolVersion != HTTP1 {
		t.Errorf("HTTP1 defaults = %+v", h)
	}
	for _, c := range []struct {
		p Protocol
		v ProtocolVersion
	}{{ProtocolHTTP, HTTP2}, {ProtocolHTTP, GRPC}, {ProtocolTCP, HTTP1}} {
		if h := (HealthCheck{}).Defaulted(c.p, c.v); *h.Enabled {
			t.Errorf("%s/%s: health checks enabled by default, want disabled", c.p, c.v)
		}
	}
	on := true
	if h := (HealthCheck{Enabled: &on, IntervalSeconds: 10, Path: "/healthz"}).Defaulted(ProtocolHTTP, HTTP2); !*h.Enabled || h.IntervalSeconds != 10 || h.Path != "/healthz" {
		t.Errorf("explicit settings overridden: %+v", h)
	}
}

func TestParseMatcher(t *testing.T) {
	tests := []struct {
		in   string
		want [][2]int
		err  bool
	}{
		{"200", [][2]int{{200, 200}}, false},
		{"200,202", [][2]int{{200, 200}, {202, 202}}, false},
		{"200-299, 404", [][2]int{{200, 299}, {404, 404}}, false},
		{"199", nil, true},
		{"500", nil, true},
		{"299-200", nil, true},
		{"2x0", nil, true},
		{"", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseMatcher(tt.in)
		if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("ParseMatcher(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func FuzzParseMatcher(f *testing.F) {
	for _, s := range []string{"200", "200,202", "200-299", "404-200", ",,", "2000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ranges, err := ParseMatcher(s)
		if err != nil {
			return
		}
		for _, r := range ranges {
			if r[0] < 200 || r[1] > 499 || r[0] > r[1] {
				t.Fatalf("ParseMatcher(%q) accepted range %v", s, r)
			}
		}
	})
}

func TestKeysRoundTrip(t *testing.T) {
	for _, k := range Kinds {
		kind, name, err := ParseKey(Key(k, "a.b-c"))
		if err != nil || kind != k || name != "a.b-c" {
			t.Errorf("ParseKey(Key(%s)) = %s, %s, %v", k, kind, name, err)
		}
	}
	for _, bad := range []string{"", "/", "/Service", "/Service/", "Service/x", "/service/x", "/Nope/x"} {
		if _, _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	for _, s := range []string{"service", "Services", "TARGETGROUPS", "servicenetwork"} {
		if _, err := ParseKind(s); err != nil {
			t.Errorf("ParseKind(%q): %v", s, err)
		}
	}
}

func TestWorkloadSetValidation(t *testing.T) {
	set := func(name, ns string, ws ...Workload) WorkloadSet {
		return WorkloadSet{Meta: Meta{Name: name, Owner: "east"}, Namespace: ns, Workloads: ws}
	}
	tests := []struct {
		s    WorkloadSet
		want []string
	}{
		{set("shop.east", "shop", Workload{"10.0.0.1", "frontend"}, Workload{"10.0.0.2", "default"}, Workload{"fd00::1", "frontend"}), nil},
		{set("shop.west", "shop"), []string{"name"}},
		{set("shop.east", ""), []string{"namespace"}},
		{set("shop.east", "shop",
			Workload{"10.0.0.2", "frontend"}, Workload{"10.0.0.1", "frontend"}, Workload{"10.0.0.1", "x"},
			Workload{"nope", "frontend"}, Workload{"FD00::1", "frontend"}, Workload{"10.0.0.9", "Bad_Name"}),
			[]string{"workloads[1].address", "workloads[2].address", "workloads[3].address", "workloads[4].address", "workloads[5].serviceAccount"}},
	}
	for _, tt := range tests {
		if got := fieldsOf(t, tt.s.Validate()); !slices.Equal(got, tt.want) {
			t.Errorf("%+v: fields = %v, want %v", tt.s, got, tt.want)
		}
	}
	if p := (&WorkloadSet{Meta: Meta{Owner: "east"}, Namespace: "shop"}).Principal("frontend"); p != "spiffe://east/ns/shop/sa/frontend" {
		t.Errorf("Principal = %q", p)
	}
}

func TestImportBackendValidation(t *testing.T) {
	const bp = "rules[0].action.forward.backends[1]"
	withImport := func(mutate func(*WeightedTargetGroup)) func(*Service) {
		return func(s *Service) {
			b := &s.Rules[0].Action.Forward.Backends[1]
			b.TargetGroup = ""
			b.Import = &ImportRef{Namespace: "shop", Name: "cart", Port: 8080, Protocol: ProtocolHTTP, ProtocolVersion: HTTP1}
			mutate(b)
		}
	}
	tests := []mutation[Service]{
		{"valid", withImport(func(*WeightedTargetGroup) {}), nil},
		{"valid with cluster weights", withImport(func(b *WeightedTargetGroup) {
			b.Import.ClusterWeights = map[string]int32{"east": 90, "west": 10, "north": 0}
		}), nil},
		{"gRPC over HTTP/2", withImport(func(b *WeightedTargetGroup) { b.Import.ProtocolVersion = GRPC }), nil},
		{"TCP for passthrough", withImport(func(b *WeightedTargetGroup) { b.Import.Protocol = ProtocolTCP }), nil},
		{"both target group and import", withImport(func(b *WeightedTargetGroup) { b.TargetGroup = "v2" }), []string{bp + ".import"}},
		{"neither is an invalid reference, not an error", func(s *Service) { s.Rules[0].Action.Forward.Backends[1].TargetGroup = "" }, nil},
		{"bad names", withImport(func(b *WeightedTargetGroup) { b.Import.Namespace, b.Import.Name = "Shop", "" }),
			[]string{bp + ".import.name", bp + ".import.namespace"}},
		{"dotted name", withImport(func(b *WeightedTargetGroup) { b.Import.Name = "cart.v1" }), []string{bp + ".import.name"}},
		{"port 0", withImport(func(b *WeightedTargetGroup) { b.Import.Port = 0 }), []string{bp + ".import.port"}},
		{"port 65536", withImport(func(b *WeightedTargetGroup) { b.Import.Port = 65536 }), []string{bp + ".import.port"}},
		{"bad protocol and version", withImport(func(b *WeightedTargetGroup) { b.Import.Protocol, b.Import.ProtocolVersion = "UDP", "" }),
			[]string{bp + ".import.protocol", bp + ".import.protocolVersion"}},
		{"weights out of range", withImport(func(b *WeightedTargetGroup) {
			b.Import.ClusterWeights = map[string]int32{"east": -1, "west": 1_000_001, "north": 1}
		}), []string{bp + ".import.clusterWeights[east]", bp + ".import.clusterWeights[west]"}},
		{"bad cluster name", withImport(func(b *WeightedTargetGroup) {
			b.Import.ClusterWeights = map[string]int32{"East": 1, "": 1, "west": 1}
		}), []string{bp + ".import.clusterWeights[East]", bp + ".import.clusterWeights[]"}},
		{"every weight zero", withImport(func(b *WeightedTargetGroup) {
			b.Import.ClusterWeights = map[string]int32{"east": 0, "west": 0}
		}), []string{bp + ".import.clusterWeights"}},
		{"weights at the bounds", withImport(func(b *WeightedTargetGroup) {
			b.Import.ClusterWeights = map[string]int32{"east": 1_000_000, "west": 0}
		}), nil},
	}
	checkMutations(t, validService, tests)
}

// An import backend survives the stored encoding, and a backend without
// one encodes as before.
func TestImportBackendEncoding(t *testing.T) {
	s := validService()
	s.Rules[0].Action.Forward.Backends[1] = WeightedTargetGroup{Weight: 10, Import: &ImportRef{
		Namespace: "shop", Name: "cart", Port: 8080, Protocol: ProtocolHTTP, ProtocolVersion: HTTP2,
		ClusterWeights: map[string]int32{"west": 10, "east": 90},
	}}
	b, err := Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"targetGroup":"","import":{"namespace":"shop","name":"cart","port":8080,"protocol":"HTTP","protocolVersion":"HTTP2","clusterWeights":{"east":90,"west":10}},"weight":10}`
	if !strings.Contains(string(b), want) {
		t.Errorf("encoding %s does not contain %s", b, want)
	}
	if plain := `{"targetGroup":"v1","weight":50}`; !strings.Contains(string(b), plain) {
		t.Errorf("encoding %s does not contain %s", b, plain)
	}
	var back Service
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if got := back.Rules[0].Action.Forward.Backends[1].Import; got == nil || got.ClusterWeights["east"] != 90 || got.Port != 8080 {
		t.Errorf("decoded import = %+v", got)
	}
}
