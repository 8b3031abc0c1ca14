package sameyaml_test

import (
	"strings"

	"trellis.dev/trellis/test/manifest"
)

// The pieces the crafted cases are built of. base is a service network with
// one Service and its endpoints, which the crafted cases add a route (or
// more) to; edgeBase is an edge GatewayClass with the same Service. The
// endpoint is not on loopback, which the apiserver refuses (see the
// "loopback endpoints" case).
var (
	svc = service("name: svc", "[{name: http, port: 80, targetPort: 8090}]") +
		slice("svc-1", "svc", "IPv4", "[{name: http, protocol: TCP, port: 8090}]", "[{addresses: [198.18.0.10], conditions: {ready: true}}]")
	base     = manifest.ServiceNetwork("net", "", "[{name: http, protocol: HTTP, port: 8080}]") + svc
	edgeBase = manifest.Class("edge", manifest.GatewayController) + svc
)

// Route fields the cases share: parentRefs to the Gateway net or edge, and
// one rule sending everything to svc.
const (
	onNet  = "  parentRefs: [{name: net}]\n"
	onEdge = "  parentRefs: [{name: edge}]\n"
	toSvc  = "  rules: [{backendRefs: [{name: svc, port: 80}]}]\n"
)

// service is a Service with metadata meta whose spec.ports is ports.
func service(meta, ports string) string {
	return manifest.Spec("v1", "Service", meta, "  ports: "+ports+"\n")
}

// slice is an EndpointSlice name of Service svc with the given address
// type, ports and endpoints (YAML values).
func slice(name, svc, addressType, ports, endpoints string) string {
	return manifest.Doc("discovery.k8s.io/v1", "EndpointSlice", "name: "+name+", labels: {kubernetes.io/service-name: "+svc+"}",
		"addressType: "+addressType+"\nports: "+ports+"\nendpoints: "+endpoints+"\n")
}

// route is a route of kind with metadata meta whose spec is fields.
func route(kind, meta, fields string) string {
	return manifest.Spec(manifest.GatewayAPI, kind, meta, fields)
}

// netRoute is base with an HTTPRoute "r" on net whose other spec fields
// are fields.
func netRoute(fields string) string {
	return base + route("HTTPRoute", "name: r", onNet+fields)
}

// httpRoute is base with an HTTPRoute "r" whose spec.rules is rules.
func httpRoute(rules string) string { return netRoute("  rules:\n" + rules) }

// grpcRoute is base with a GRPCRoute "g" whose spec.rules is rules.
func grpcRoute(rules string) string {
	return base + route("GRPCRoute", "name: g", onNet+"  rules:\n"+rules)
}

// edge is the Gateway "edge" of class edge with the other spec fields
// fields.
func edge(fields string) string {
	return manifest.Spec(manifest.GatewayAPI, "Gateway", "name: edge", "  gatewayClassName: edge\n"+fields)
}

// edgeGateway is edgeBase with a Gateway "edge" whose spec.listeners is
// listeners, and a route attached to it.
func edgeGateway(listeners string) string {
	return edgeBase + edge("  listeners:\n"+listeners) + route("HTTPRoute", "name: r", onEdge+toSvc)
}

// policy is base with an AuthPolicy "p" whose spec is fields; allowAll is
// a policy field that allows everything.
func policy(fields string) string {
	return base + manifest.Spec("trellis.dev/v1alpha1", "AuthPolicy", "name: p", fields)
}

const allowAll = `  policy: {Statement: [{Effect: Allow, Principal: "*", Action: "*", Resource: "*"}]}` + "\n"

// serviceImport is base with a ServiceImport "imp" whose spec is the YAML
// value spec.
func serviceImport(spec string) string {
	return base + manifest.Doc("multicluster.x-k8s.io/v1beta1", "ServiceImport", "name: imp", "spec: "+spec+"\n")
}

// namespace is a Namespace name.
func namespace(name string) string { return manifest.Doc("v1", "Namespace", "name: "+name, "") }

// tlsListener is an edge listener list with one TLS passthrough listener.
const tlsListener = "  listeners: [{name: tls, protocol: TLS, port: 8443, tls: {mode: Passthrough}}]\n"

// crafted are the cases aimed at the installed CRDs' defaults and
// validations (and the core kinds' that change what is routed).
var crafted = []sameCase{
	// Defaults.
	{name: "default/route without rules", yaml: netRoute("")},
	{name: "default/rule without matches", yaml: httpRoute(`  - backendRefs: [{name: svc, port: 80}]
`)},
	{name: "default/match without path", yaml: httpRoute(`  - matches: [{method: GET}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "default/path type", yaml: httpRoute(`  - matches: [{path: {value: /x}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "default/path value", yaml: httpRoute(`  - matches: [{path: {type: PathPrefix}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "default/header and query match type", yaml: httpRoute(`  - matches: [{headers: [{name: x-a, value: b}], queryParams: [{name: q, value: v}]}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "default/backend weight group kind", yaml: httpRoute(`  - backendRefs: [{name: svc, port: 80}, {name: svc, port: 80, weight: 3}]
`)},
	{name: "default/parentRef group kind", yaml: base + route("HTTPRoute", "name: r", "  parentRefs: [{name: net, sectionName: http, port: 8080}]\n"+toSvc)},
	{name: "default/redirect status code", yaml: httpRoute(`  - filters: [{type: RequestRedirect, requestRedirect: {hostname: other.example}}]
`)},
	{name: "default/mirror backend kind", yaml: httpRoute(`  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 80}}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "default/allowedRoutes from Same", yaml: base + namespace("other") + route("HTTPRoute", "name: r, namespace: other",
		"  parentRefs: [{name: net, namespace: default}]\n  rules: [{backendRefs: [{name: svc, namespace: default, port: 80}]}]\n")},
	{name: "default/namespace name label", yaml: namespace("other") + namespace("default") +
		manifest.ServiceNetwork("net", "", "[{name: http, protocol: HTTP, port: 8080, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: other}}}}}]") +
		route("HTTPRoute", "name: r, namespace: other", "  parentRefs: [{name: net, namespace: default}]\n"+toSvc) +
		service("name: svc, namespace: other", "[{name: http, port: 80}]")},
	{name: "default/service targetPort and protocol", yaml: base + service("name: plain", "[{port: 80}]") +
		slice("plain-1", "plain", "IPv4", "[{port: 80}]", "[{addresses: [198.18.0.11]}]") +
		route("HTTPRoute", "name: r", onNet+"  rules: [{backendRefs: [{name: plain, port: 80}]}]\n")},
	{name: "default/listener tls mode", yaml: edgeGateway(`  - name: https
    protocol: HTTPS
    port: 8443
    hostname: a.example
    tls: {certificateRefs: [{name: missing}]}
`)},
	{name: "default/cors maxAge", yaml: httpRoute(`  - filters: [{type: CORS, cors: {allowOrigins: ["*"]}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "default/mirror fraction denominator", yaml: httpRoute(`  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 80}, fraction: {numerator: 5}}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "default/session persistence", yaml: httpRoute(`  - sessionPersistence: {sessionName: s, cookieConfig: {}}
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "default/edge gateway address type", yaml: edgeBase + edge("  addresses: [{value: 198.18.0.1}]\n  listeners: [{name: http, protocol: HTTP, port: 8080}]\n") + route("HTTPRoute", "name: r", onEdge+toSvc)},
	{name: "default/grpc method type", yaml: grpcRoute(`  - matches: [{method: {service: pkg.Svc, method: Get}}, {headers: [{name: x-a, value: b}]}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "default/grpc rule without matches", yaml: grpcRoute(`  - backendRefs: [{name: svc, port: 80}]
`)},

	// Validations that change what is routed.
	{name: "invalid/path not absolute", yaml: httpRoute(`  - matches: [{path: {type: PathPrefix, value: foo}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/exact path with //", yaml: httpRoute(`  - matches: [{path: {type: Exact, value: /a//b}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/path with /../", yaml: httpRoute(`  - matches: [{path: {type: PathPrefix, value: /a/../b}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/path type", yaml: httpRoute(`  - matches: [{path: {type: Glob, value: /a}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/duplicate listener names", yaml: edgeGateway(`  - {name: http, protocol: HTTP, port: 8080}
  - {name: http, protocol: HTTP, port: 8081}
`)},
	{name: "invalid/duplicate port protocol hostname", yaml: edgeGateway(`  - {name: a, protocol: HTTP, port: 8080}
  - {name: b, protocol: HTTP, port: 8080}
`)},
	{name: "invalid/https listener without tls", yaml: edgeGateway(`  - {name: https, protocol: HTTPS, port: 8443}
`)},
	{name: "invalid/listener port 0", yaml: edgeGateway(`  - {name: http, protocol: HTTP, port: 0}
`)},
	{name: "invalid/listener hostname", yaml: edgeGateway(`  - {name: http, protocol: HTTP, port: 8080, hostname: "bad_host.example"}
`)},
	{name: "invalid/route hostname", yaml: netRoute(`  hostnames: ["Bad.Example"]` + "\n" + toSvc)},
	{name: "invalid/route hostname IP", yaml: netRoute(`  hostnames: ["10.0.0.1"]` + "\n" + toSvc)},
	{name: "invalid/weight too large", yaml: httpRoute(`  - backendRefs: [{name: svc, port: 80, weight: 1000001}]
`)},
	{name: "invalid/weight negative", yaml: httpRoute(`  - backendRefs: [{name: svc, port: 80, weight: -1}]
`)},
	{name: "invalid/backend port out of range", yaml: httpRoute(`  - backendRefs: [{name: svc, port: 70000}]
`)},
	{name: "invalid/backend Service without port", yaml: httpRoute(`  - backendRefs: [{name: svc}]
`)},
	{name: "invalid/header name", yaml: httpRoute(`  - matches: [{headers: [{name: "bad header", value: b}]}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/duplicate header match", yaml: httpRoute(`  - matches: [{headers: [{name: x-a, value: b}, {name: x-a, value: c}]}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/filter without its field", yaml: httpRoute(`  - filters: [{type: RequestHeaderModifier}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/filter with another's field", yaml: httpRoute(`  - filters: [{type: RequestHeaderModifier, requestRedirect: {hostname: a.example}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/redirect and rewrite together", yaml: httpRoute(`  - filters:
    - {type: RequestRedirect, requestRedirect: {hostname: a.example}}
    - {type: URLRewrite, urlRewrite: {hostname: b.example}}
`)},
	{name: "invalid/replacePrefixMatch without prefix match", yaml: httpRoute(`  - matches: [{path: {type: Exact, value: /a}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]
`)},
	{name: "invalid/redirect path type without its field", yaml: httpRoute(`  - filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replacePrefixMatch: /b}}}]
`)},
	{name: "invalid/redirect scheme", yaml: httpRoute(`  - filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]
`)},
	{name: "invalid/redirect status code", yaml: httpRoute(`  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 399}}]
`)},
	{name: "invalid/duplicate header modifier", yaml: httpRoute(`  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: "1"}, {name: x-a, value: "2"}]}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/timeouts backend over request", yaml: httpRoute(`  - timeouts: {request: 1s, backendRequest: 2s}
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/grpc exact method without service", yaml: grpcRoute(`  - matches: [{method: {type: Exact, method: Get}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/grpc service name", yaml: grpcRoute(`  - matches: [{method: {service: "bad service", method: Get}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "gap/gatewayclass controllerName", gap: "GatewayClass controllerName", yaml: manifest.Class("trellis", `"no-slash"`)},
	{name: "invalid/authpolicy without targetRefs", yaml: policy("  targetRefs: []\n" + allowAll)},
	{name: "invalid/authpolicy targetRef kind", yaml: policy(`  targetRefs: [{group: gateway.networking.k8s.io, kind: "Bad Kind", name: net}]` + "\n" + allowAll)},
	{name: "gap/service ports without names", gap: "core kinds", yaml: base + service("name: two", "[{port: 80}, {port: 81}]")},
	{name: "gap/tls secret without key", gap: "core kinds", yaml: edgeBase + manifest.Doc("v1", "Secret", "name: cert", "type: kubernetes.io/tls\ndata: {tls.crt: \"\"}\n")},
	{name: "invalid/tls route without hostnames", yaml: edgeBase + edge(tlsListener) + route("TLSRoute", "name: t", onEdge+toSvc)},
	{name: "invalid/tls route without rules", yaml: edgeBase + edge(tlsListener) + route("TLSRoute", "name: t", onEdge+"  hostnames: [db.example.com]\n")},
	{name: "invalid/path with %2F", yaml: httpRoute(`  - matches: [{path: {type: PathPrefix, value: /a%2Fb}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/path with #", yaml: httpRoute(`  - matches: [{path: {type: Exact, value: "/a#b"}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/path ending /.", yaml: httpRoute(`  - matches: [{path: {type: PathPrefix, value: /a/.}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/grpc method name", yaml: grpcRoute(`  - matches: [{method: {service: pkg.Svc, method: "Get/x"}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/timeout duration format", yaml: httpRoute(`  - timeouts: {request: 1.5s}
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/seventeen hostnames", yaml: netRoute(`  hostnames: [h1.example, h2.example, h3.example, h4.example, h5.example, h6.example, h7.example, h8.example, h9.example,
    h10.example, h11.example, h12.example, h13.example, h14.example, h15.example, h16.example, h17.example]
` + toSvc)},
	{name: "invalid/seventeen rules", yaml: httpRoute(strings.Repeat(`  - backendRefs: [{name: svc, port: 80}]
`, 17))},
	{name: "invalid/seventeen backendRefs", yaml: httpRoute(`  - backendRefs: [` + strings.Repeat(`{name: svc, port: 80}, `, 17) + `]
`)},
	{name: "invalid/duplicate parentRefs", yaml: base + route("HTTPRoute", "name: r", "  parentRefs: [{name: net}, {name: net}]\n"+toSvc)},
	{name: "invalid/duplicate rule names", yaml: httpRoute(`  - name: a
    backendRefs: [{name: svc, port: 80}]
  - name: a
    matches: [{path: {value: /b}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/rewrite hostname", yaml: httpRoute(`  - filters: [{type: URLRewrite, urlRewrite: {hostname: "bad_host"}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/header modifier name", yaml: httpRoute(`  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: "bad name", value: v}]}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/listener protocol", yaml: edgeGateway(`  - {name: http, protocol: "bad proto", port: 8080}
`)},
	{name: "invalid/grpc route hostname", yaml: base + route("GRPCRoute", "name: g", onNet+`  hostnames: ["bad_host.example"]`+"\n"+toSvc)},
	{name: "gap/referencegrant without from", gap: "ReferenceGrant lists", yaml: base + manifest.Spec(manifest.GatewayAPI, "ReferenceGrant", "name: g", "  from: []\n  to: [{group: \"\", kind: Service}]\n")},
	{name: "invalid/mirror percent over 100", yaml: httpRoute(`  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 80}, percent: 101}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/repeated header modifier filter", yaml: httpRoute(`  - filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: "1"}]}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-b, value: "2"}]}}
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/repeated grpc header modifier filter", yaml: grpcRoute(`  - filters:
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-a, value: "1"}]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-b, value: "2"}]}}
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/backend filter redirect", yaml: httpRoute(`  - backendRefs: [{name: svc, port: 80, filters: [{type: RequestRedirect, requestRedirect: {hostname: a.example}}]}]
`)},
	{name: "invalid/selector without selector", yaml: base + manifest.Spec(manifest.GatewayAPI, "Gateway", "name: other", "  gatewayClassName: trellis\n  listeners: [{name: http, protocol: HTTP, port: 8081, allowedRoutes: {namespaces: {from: Selector}}}]\n")},
	{name: "invalid/cors origin", yaml: httpRoute(`  - filters: [{type: CORS, cors: {allowOrigins: ["not an origin"]}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/cors method", yaml: httpRoute(`  - filters: [{type: CORS, cors: {allowOrigins: ["*"], allowMethods: [FETCH]}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/retry code", yaml: httpRoute(`  - retry: {codes: [200]}
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/listener allowed kinds", yaml: edgeGateway(`  - name: http
    protocol: HTTP
    port: 8080
    allowedRoutes: {kinds: [{kind: "bad kind"}]}
`)},
	{name: "invalid/gateway address value", yaml: edgeBase + edge(`  addresses: [{type: IPAddress, value: "not-an-ip"}]`+"\n  listeners: [{name: http, protocol: HTTP, port: 8080}]\n")},
	{name: "invalid/endpointslice port", yaml: base + slice("svc-2", "svc", "IPv4", "[{name: http, protocol: TCP, port: 70000}]", "[{addresses: [198.18.0.12], conditions: {ready: true}}]")},
	{name: "gap/endpointslice address type", gap: "core kinds", yaml: base + slice("svc-2", "svc", "IPv5", "[{name: http, protocol: TCP, port: 8090}]", "[{addresses: [198.18.0.12], conditions: {ready: true}}]")},
	{name: "invalid/unknown field", yaml: netRoute("  rulez: []\n")},
	{name: "default/service name with a digit first", yaml: base + service("name: 1svc", "[{name: http, port: 80}]") + route("HTTPRoute", "name: r", onNet+"  rules: [{backendRefs: [{name: 1svc, port: 80}]}]\n")},
	{name: "invalid/empty rules", yaml: netRoute("  rules: []\n")},
	{name: "default/grpc route without rules", yaml: base + route("GRPCRoute", "name: g", onNet)},
	{name: "invalid/gateway without listeners", yaml: edgeBase + edge("  listeners: []\n")},
	{name: "invalid/tls listener hostname on TCP", yaml: edgeGateway(`  - {name: tcp, protocol: TCP, port: 9000, hostname: a.example}
`)},
	{name: "invalid/https listener passthrough", yaml: edgeGateway(`  - {name: https, protocol: HTTPS, port: 8443, hostname: a.example, tls: {mode: Passthrough}}
`)},
	{name: "invalid/rewrite replacePrefixMatch without prefix match", yaml: httpRoute(`  - matches: [{path: {type: Exact, value: /a}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "invalid/mirror percent and fraction", yaml: httpRoute(`  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 80}, percent: 5, fraction: {numerator: 1}}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "gap/serviceimport type", gap: "ServiceImport type", yaml: serviceImport("{type: Bogus, ports: [{port: 80}]}")},
	{name: "invalid/serviceimport port", yaml: serviceImport("{type: ClusterSetIP, ports: [{port: 0}]}")},
	{name: "differ/namespace on a cluster-scoped kind", stricter: "namespace on a cluster-scoped kind", yaml: manifest.Spec(manifest.GatewayAPI, "GatewayClass", "name: trellis, namespace: default", "  controllerName: trellis.dev/service-network\n")},
	{name: "invalid/authpolicy targetRef without name", yaml: policy(`  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: ""}]` + "\n" + allowAll)},
	{name: "invalid/authpolicy without policy", yaml: policy("  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: net}]\n")},
	{name: "invalid/parentRef port 0", yaml: base + route("HTTPRoute", "name: r", "  parentRefs: [{name: net, port: 0}]\n"+toSvc)},
	{name: "invalid/parentRef sectionName", yaml: base + route("HTTPRoute", "name: r", `  parentRefs: [{name: net, sectionName: "Bad_Name"}]`+"\n"+toSvc)},
	{name: "invalid/listener name", yaml: edgeGateway(`  - {name: "Bad_Name", protocol: HTTP, port: 8080}
`)},
	{name: "invalid/backendRef name empty", yaml: httpRoute(`  - backendRefs: [{name: "", port: 80}]
`)},
	{name: "differ/loopback endpoints", yaml: base + slice("svc-2", "svc", "IPv4", "[{name: http, protocol: TCP, port: 8090}]", "[{addresses: [127.0.0.1], conditions: {ready: true}}]")},
}
