package auth

import "testing"

func TestAuthorizeLevels(t *testing.T) {
	// What one level's policy does with the test request.
	levels := map[string]*Policy{
		"off":      nil,
		"allow":    mustParse(t, statements(stmt("Allow", `"*"`, `"*"`, `"*"`))),
		"implicit": mustParse(t, statements(stmt("Allow", `"*"`, `"*"`, `"other/*"`))),
		"explicit": mustParse(t, statements(stmt("Allow", `"*"`, `"*"`, `"*"`), stmt("Deny", `"*"`, `"*"`, `"*"`))),
	}
	allowed := Result{Allowed: true}
	netExplicit := Result{DeniedBy: LevelNetwork, Explicit: true}
	netImplicit := Result{DeniedBy: LevelNetwork}
	svcExplicit := Result{DeniedBy: LevelService, Explicit: true}
	svcImplicit := Result{DeniedBy: LevelService}
	tests := []struct {
		network, service string
		want             Result
	}{
		{"off", "off", allowed},
		{"off", "allow", allowed},
		{"off", "implicit", svcImplicit},
		{"off", "explicit", svcExplicit},
		{"allow", "off", allowed},
		{"allow", "allow", allowed},
		{"allow", "implicit", svcImplicit},
		{"allow", "explicit", svcExplicit},
		{"implicit", "off", netImplicit},
		{"implicit", "allow", netImplicit},
		{"implicit", "implicit", netImplicit},
		{"implicit", "explicit", svcExplicit}, // an explicit deny outranks an implicit one
		{"explicit", "off", netExplicit},
		{"explicit", "allow", netExplicit},
		{"explicit", "implicit", netExplicit},
		{"explicit", "explicit", netExplicit},
	}
	for _, tt := range tests {
		t.Run("network "+tt.network+", service "+tt.service, func(t *testing.T) {
			got := Authorize(levels[tt.network], levels[tt.service], testRequest())
			if got != tt.want {
				t.Errorf("Authorize = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAuthorizeUsesTheRequest(t *testing.T) {
	// The service allows only workloads of the shop namespace; the network
	// denies Connect.
	network := mustParse(t, statements(stmt("Allow", `"*"`, `"*"`, `"*"`), stmt("Deny", `"*"`, `"trellis:Connect"`, `"*"`)))
	service := mustParse(t, statements(stmt("Allow", `{"Trellis":"spiffe://east/ns/shop/*"}`, `"*"`, `"*"`)))
	if got := Authorize(network, service, testRequest(asWorkload)); !got.Allowed {
		t.Errorf("workload Invoke: %+v, want allowed", got)
	}
	if got := Authorize(network, service, testRequest()); got != (Result{DeniedBy: LevelService}) {
		t.Errorf("anonymous Invoke: %+v, want an implicit deny by the service", got)
	}
	if got := Authorize(network, service, testRequest(asWorkload, asConnect)); got != (Result{DeniedBy: LevelNetwork, Explicit: true}) {
		t.Errorf("workload Connect: %+v, want an explicit deny by the network", got)
	}
}

func TestResultMessage(t *testing.T) {
	tests := []struct {
		name string
		res  Result
		req  *Request
		want string
	}{
		{
			"explicit service deny, anonymous",
			Result{DeniedBy: LevelService, Explicit: true},
			testRequest(withPath("/api")),
			"AccessDeniedException: User: anonymous is not authorized to perform: trellis:Invoke on resource: inventory-default.my-hotel/api with an explicit deny in a service-based policy",
		},
		{
			"implicit network deny, anonymous",
			Result{DeniedBy: LevelNetwork},
			testRequest(withPath("/api")),
			"AccessDeniedException: User: anonymous is not authorized to perform: trellis:Invoke on resource: inventory-default.my-hotel/api because no network-based policy allows trellis:Invoke",
		},
		{
			"explicit network deny, workload",
			Result{DeniedBy: LevelNetwork, Explicit: true},
			testRequest(asWorkload),
			"AccessDeniedException: User: spiffe://east/ns/shop/sa/web is not authorized to perform: trellis:Invoke on resource: inventory-default.my-hotel/api/items with an explicit deny in a network-based policy",
		},
		{
			"implicit service deny of a Connect",
			Result{DeniedBy: LevelService},
			testRequest(asWorkload, asConnect),
			"AccessDeniedException: User: spiffe://east/ns/shop/sa/web is not authorized to perform: trellis:Connect on resource: inventory-default.my-hotel because no service-based policy allows trellis:Connect",
		},
		{
			"no level",
			Result{},
			testRequest(),
			"AccessDeniedException: User: anonymous is not authorized to perform: trellis:Invoke on resource: inventory-default.my-hotel/api/items",
		},
		{"allowed", Result{Allowed: true}, testRequest(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.res.Message(tt.req); got != tt.want {
				t.Errorf("Message =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
	// A nil request must not panic.
	_ = Result{DeniedBy: LevelService}.Message(nil)
}
