package model

import (
	"encoding/json"
	"testing"
	"time"
)

func TestFilterValidation(t *testing.T) {
	redirect := func(r RedirectFilter) Filter { return Filter{Redirect: &r} }
	tests := []mutation[Service]{
		{"every filter valid", func(s *Service) {
			s.Rules[0].Filters = []Filter{
				{RequestHeaders: &HeaderFilter{Set: []Header{{Name: "X-A", Value: "1"}}, Add: []Header{{Name: "X-B", Value: "2"}}, Remove: []string{"X-C"}}},
				{ResponseHeaders: &HeaderFilter{Remove: []string{"Server"}}},
				{Rewrite: &RewriteFilter{Hostname: "internal.example.com", Path: &PathModifier{Type: ReplacePrefixMatch, Value: ""}}},
				{Mirror: &MirrorFilter{TargetGroup: "shadow", Numerator: 1, Denominator: 3}},
				{CORS: &CORSFilter{AllowOrigins: []string{"https://*.example.com", "http://localhost:3000"}, AllowMethods: []string{"*"}}},
			}
			s.Rules[0].Timeouts = &Timeouts{Request: Duration(10 * time.Second), BackendRequest: Duration(time.Second)}
			s.Rules[0].Retry = &Retry{Codes: []int{503}, Attempts: 2}
			s.Rules[0].SessionPersistence = &SessionPersistence{Type: SessionCookie, Name: "s", Permanent: true, AbsoluteTimeout: Duration(time.Hour)}
		}, nil},
		{"redirect without action", func(s *Service) {
			s.Rules[0].Filters = []Filter{redirect(RedirectFilter{StatusCode: 301, Scheme: "https"})}
			s.Rules[0].Action = Action{}
		}, nil},
		{"filter with no member", func(s *Service) { s.Rules[0].Filters = []Filter{{}} }, []string{"rules[0].filters[0]"}},
		{"filter with two members", func(s *Service) {
			s.Rules[0].Filters = []Filter{{Redirect: &RedirectFilter{StatusCode: 302}, Rewrite: &RewriteFilter{}}}
		}, []string{"rules[0].filters[0]"}},
		{"bad redirect", func(s *Service) {
			s.Rules[0].Filters = []Filter{redirect(RedirectFilter{Scheme: "ftp", Hostname: "Bad_Host", Port: 70000, StatusCode: 304,
				Path: &PathModifier{Type: ReplaceFullPath, Value: "rel"}})}
		}, []string{"rules[0].filters[0].redirect.hostname", "rules[0].filters[0].redirect.path.value", "rules[0].filters[0].redirect.port",
			"rules[0].filters[0].redirect.scheme", "rules[0].filters[0].redirect.statusCode"}},
		{"redirect and rewrite together", func(s *Service) {
			s.Rules[0].Filters = []Filter{redirect(RedirectFilter{StatusCode: 302}), {Rewrite: &RewriteFilter{Hostname: "a.example.com"}}}
		}, []string{"rules[0].filters[1]"}},
		{"two redirects", func(s *Service) {
			s.Rules[0].Filters = []Filter{redirect(RedirectFilter{StatusCode: 302}), redirect(RedirectFilter{StatusCode: 301})}
		}, []string{"rules[0].filters[1]"}},
		{"two mirrors are fine", func(s *Service) {
			m := Filter{Mirror: &MirrorFilter{TargetGroup: "a", Numerator: 1, Denominator: 1}}
			s.Rules[0].Filters = []Filter{m, m}
		}, nil},
		{"prefix replacement needs prefix matches", func(s *Service) {
			s.Rules[0].Matches = append(s.Rules[0].Matches, Match{Path: &PathMatch{Type: PathExact, Value: "/x"}})
			s.Rules[0].Filters = []Filter{{Rewrite: &RewriteFilter{Path: &PathModifier{Type: ReplacePrefixMatch, Value: "/y"}}}}
		}, []string{"rules[0].filters[0].rewrite.path.type"}},
		{"header edited twice, bad names and values", func(s *Service) {
			s.Rules[0].Filters = []Filter{{RequestHeaders: &HeaderFilter{
				Set: []Header{{Name: "X-A", Value: "1"}, {Name: "bad name", Value: "x"}}, Add: []Header{{Name: "X-B", Value: "a\nb"}}, Remove: []string{"x-a"}}}}
		}, []string{"rules[0].filters[0].requestHeaders.add[0].value", "rules[0].filters[0].requestHeaders.remove[0]",
			"rules[0].filters[0].requestHeaders.set[1].name"}},
		{"bad mirror", func(s *Service) {
			s.Rules[0].Filters = []Filter{{Mirror: &MirrorFilter{Numerator: 4, Denominator: 3}}}
		}, []string{"rules[0].filters[0].mirror.numerator", "rules[0].filters[0].mirror.targetGroup"}},
		{"bad cors", func(s *Service) {
			s.Rules[0].Filters = []Filter{{CORS: &CORSFilter{AllowOrigins: []string{"*", "example.com"}, AllowMethods: []string{"GET", "*"},
				ExposeHeaders: []string{"bad header"}, MaxAgeSeconds: -1}}}
		}, []string{"rules[0].filters[0].cors.allowMethods", "rules[0].filters[0].cors.allowOrigins", "rules[0].filters[0].cors.allowOrigins[1]",
			"rules[0].filters[0].cors.exposeHeaders[0]", "rules[0].filters[0].cors.maxAgeSeconds"}},
		{"backend filters validated", func(s *Service) {
			s.Rules[0].Action.Forward.Backends[1].Filters = []Filter{redirect(RedirectFilter{StatusCode: 200})}
		}, []string{"rules[0].action.forward.backends[1].filters[0].redirect.statusCode"}},
		{"backend timeout over request timeout", func(s *Service) {
			s.Rules[0].Timeouts = &Timeouts{Request: Duration(time.Second), BackendRequest: Duration(2 * time.Second)}
		}, []string{"rules[0].timeouts.backendRequest"}},
		{"bad retry", func(s *Service) { s.Rules[0].Retry = &Retry{Codes: []int{200}, Attempts: 11, Backoff: -1} },
			[]string{"rules[0].retry.attempts", "rules[0].retry.backoff", "rules[0].retry.codes[0]"}},
		{"bad session", func(s *Service) {
			s.Rules[0].SessionPersistence = &SessionPersistence{Type: SessionHeader, Name: "", Permanent: true}
		}, []string{"rules[0].sessionPersistence.absoluteTimeout", "rules[0].sessionPersistence.name", "rules[0].sessionPersistence.permanent"}},
		{"local-first rule", func(s *Service) { s.Rules[0].Locality = LocalityLocalFirst }, nil},
		{"unknown locality", func(s *Service) { s.Rules[0].Locality = "Nearest" }, []string{"rules[0].locality"}},
		{"listeners on one port with different hostnames", func(s *Service) {
			s.Listeners = []Listener{
				{Name: "a", Port: 80, Protocol: ProtocolHTTP, Hostname: "*.example.com", Hostnames: []string{"shop.example.com"}},
				{Name: "b", Port: 80, Protocol: ProtocolHTTP, Hostname: "api.example.com", Hostnames: []string{"api.example.com"}},
				{Name: "c", Port: 80, Protocol: ProtocolHTTP},
			}
		}, nil},
		{"listener hostname problems", func(s *Service) {
			s.Listeners = []Listener{
				{Name: "a", Port: 80, Protocol: ProtocolHTTP, Hostname: "*.example.com", Hostnames: []string{"example.com", "Bad"}},
				{Name: "b", Port: 80, Protocol: ProtocolHTTP, Hostname: "*.example.com"},
				{Name: "c", Port: 80, Protocol: ProtocolTLSPassthrough, Hostname: "x.example.com"},
			}
		}, []string{"listeners[0].hostnames[0]", "listeners[0].hostnames[1]", "listeners[1].port", "listeners[2].protocol"}},
	}
	checkMutations(t, validService, tests)
}

func TestDurationJSON(t *testing.T) {
	in := Timeouts{Request: Duration(90 * time.Second), BackendRequest: Duration(1500 * time.Millisecond)}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"request":"1m30s","backendRequest":"1.5s"}` {
		t.Errorf("marshalled %s", b)
	}
	var out Timeouts
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("round trip: %+v, %v", out, err)
	}
	if err := json.Unmarshal([]byte(`{"request":"soon"}`), &out); err == nil {
		t.Error("a bad duration unmarshalled")
	}
	if b, _ := json.Marshal(Timeouts{}); string(b) != `{}` {
		t.Errorf("zero timeouts marshal as %s, want {}", b)
	}
}

func TestHostnameWithin(t *testing.T) {
	for _, tt := range []struct {
		h, l string
		want bool
	}{
		{"a.example.com", "*.example.com", true},
		{"*.a.example.com", "*.example.com", true},
		{"a.b.example.com", "*.example.com", true},
		{"example.com", "*.example.com", false},
		{"a.example.com", "a.example.com", true},
		{"*.example.com", "a.example.com", false},
		{"a.example.org", "*.example.com", false},
	} {
		if got := HostnameWithin(tt.h, tt.l); got != tt.want {
			t.Errorf("HostnameWithin(%q, %q) = %v", tt.h, tt.l, got)
		}
	}
}
