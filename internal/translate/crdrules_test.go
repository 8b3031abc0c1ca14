package translate_test

import (
	"strings"
	"testing"

	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/internal/translate"
	"trellis.dev/trellis/test/manifest"
)

// crdNetwork is a service network with a Service, which the cases below
// add a route to.
var crdNetwork = manifest.ServiceNetwork("net", "", "[{name: http, protocol: HTTP, port: 8080}]") +
	manifest.Doc("v1", "Service", "name: svc", "spec: {ports: [{port: 80}]}\n")

// crdRoute is an HTTPRoute on crdNetwork with the given rules.
func crdRoute(rules string) string {
	return crdNetwork + manifest.Spec(manifest.GatewayAPI, "HTTPRoute", "name: r", "  parentRefs: [{name: net}]\n  rules:\n"+rules)
}

// TestCRDRules checks the Problems that stand in for the route CRDs'
// validations (an apiserver refuses these; test/sameyaml compares the two
// against a real one): each case reports a Problem on the field named.
func TestCRDRules(t *testing.T) {
	backend := "    backendRefs: [{name: svc, port: 80}]\n"
	oneRule := "  - backendRefs: [{name: svc, port: 80}]\n"
	tests := []struct {
		name, yaml, field string
	}{
		{"path //", crdRoute("  - matches: [{path: {value: /a//b}}]\n" + backend), "spec.rules[0].matches[0].path.value"},
		{"path /..", crdRoute("  - matches: [{path: {type: Exact, value: /a/..}}]\n" + backend), "spec.rules[0].matches[0].path.value"},
		{"path %2F", crdRoute("  - matches: [{path: {value: /a%2Fb}}]\n" + backend), "spec.rules[0].matches[0].path.value"},
		{"17 rules", crdRoute(strings.Repeat(oneRule, 17)), "spec.rules"},
		{"17 backendRefs", crdRoute("  - backendRefs: [" + strings.Repeat("{name: svc, port: 80}, ", 17) + "]\n"), "spec.rules[0].backendRefs"},
		{"128 matches", crdRoute(strings.Repeat("  - matches: ["+strings.Repeat("{path: {value: /a}}, ", 64)+"]\n"+backend, 2)), "spec.rules"},
		{"17 header matches", crdRoute("  - matches: [{headers: [" + strings.Repeat("{name: x, value: v}, ", 17) + "]}]\n" + backend), "spec.rules[0].matches[0].headers"},
		{"empty rules", crdRoute("    []\n"), "spec.rules"},
		{"rule names", crdRoute("  - name: a\n" + backend + "  - name: a\n" + backend), "spec.rules[1].name"},
		{"cors method", crdRoute("  - filters: [{type: CORS, cors: {allowMethods: [FETCH]}}]\n" + backend), "spec.rules[0].filters[0].cors.allowMethods[0]"},
		{"parentRefs repeated", strings.Replace(crdRoute(oneRule), "[{name: net}]", "[{name: net}, {name: net}]", 1), "spec.parentRefs[1]"},
		{"parentRefs unalike", strings.Replace(crdRoute(oneRule), "[{name: net}]", "[{name: net}, {name: net, sectionName: http}]", 1), "spec.parentRefs[1]"},
		{"listener name", strings.Replace(crdNetwork, "name: http,", "name: Bad_Name,", 1), "spec.listeners[0].name"},
		{"grpc service", crdNetwork + manifest.Spec(manifest.GatewayAPI, "GRPCRoute", "name: g",
			"  parentRefs: [{name: net}]\n  rules: [{matches: [{method: {service: \"a b\", method: Get}}], backendRefs: [{name: svc, port: 80}]}]\n"), "spec.rules[0].matches[0].method.service"},
		{"authpolicy without targets", crdNetwork + manifest.Spec("trellis.dev/v1alpha1", "AuthPolicy", "name: p",
			"  targetRefs: []\n"+`  policy: {Statement: [{Effect: Allow, Principal: "*", Action: "*", Resource: "*"}]}`+"\n"), "spec.targetRefs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := file.Parse("case.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			in.Cluster = "local"
			out := translate.Translate(in)
			var fields []string
			for _, p := range out.Problems {
				if p.Field == tt.field {
					return
				}
				fields = append(fields, p.Field)
			}
			t.Errorf("no Problem on %s; Problems on %v", tt.field, fields)
		})
	}
}

// TestCORSMaxAgeDefault checks that a CORS filter without maxAge gets the
// CRD's default, 5 seconds.
func TestCORSMaxAgeDefault(t *testing.T) {
	in, err := file.Parse("case.yaml", []byte(crdRoute("  - filters: [{type: CORS, cors: {allowOrigins: [\"*\"]}}]\n    backendRefs: [{name: svc, port: 80}]\n")))
	if err != nil {
		t.Fatal(err)
	}
	in.Cluster = "local"
	out := translate.Translate(in)
	if len(out.Services) != 1 || len(out.Problems) != 0 {
		t.Fatalf("services %v, problems %v", out.Services, out.Problems)
	}
	if c := out.Services[0].Rules[0].Filters[0].CORS; c == nil || c.MaxAgeSeconds != 5 {
		t.Errorf("CORS filter %+v, want maxAgeSeconds 5", c)
	}
}
