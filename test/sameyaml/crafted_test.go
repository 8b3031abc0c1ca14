package sameyaml_test

import "strings"

// base is a service network with one Service and its endpoints, which the
// crafted cases add a route (or more) to. The endpoint is not on loopback,
// which the apiserver refuses (see the "loopback endpoints" case).
const base = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: trellis.dev/service-network}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: net}
spec:
  gatewayClassName: trellis
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  ports: [{name: http, port: 80, targetPort: 8090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-1, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8090}]
endpoints: [{addresses: [198.18.0.10], conditions: {ready: true}}]
`

// edgeBase is an edge Gateway, for listener cases.
const edgeBase = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: edge}
spec: {controllerName: trellis.dev/gateway}
---
apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  ports: [{name: http, port: 80, targetPort: 8090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-1, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8090}]
endpoints: [{addresses: [198.18.0.10], conditions: {ready: true}}]
`

// httpRoute is base with an HTTPRoute "r" whose spec.rules is rules.
func httpRoute(rules string) string {
	return base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net}]
  rules:
` + rules
}

// grpcRoute is base with a GRPCRoute "g" whose spec.rules is rules.
func grpcRoute(rules string) string {
	return base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  parentRefs: [{name: net}]
  rules:
` + rules
}

// edgeGateway is edgeBase with a Gateway "edge" whose spec.listeners is
// listeners, and a route attached to it.
func edgeGateway(listeners string) string {
	return edgeBase + `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: edge
  listeners:
` + listeners + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`
}

// crafted are the cases aimed at the installed CRDs' defaults and
// validations (and the core kinds' that change what is routed).
var crafted = []sameCase{
	// Defaults.
	{name: "default/route without rules", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net}]
`},
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
	{name: "default/parentRef group kind", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net, sectionName: http, port: 8080}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`},
	{name: "default/redirect status code", yaml: httpRoute(`  - filters: [{type: RequestRedirect, requestRedirect: {hostname: other.example}}]
`)},
	{name: "default/mirror backend kind", yaml: httpRoute(`  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 80}}}]
    backendRefs: [{name: svc, port: 80}]
`)},
	{name: "default/allowedRoutes from Same", yaml: base + `---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: other}
spec:
  parentRefs: [{name: net, namespace: default}]
  rules: [{backendRefs: [{name: svc, namespace: default, port: 80}]}]
`},
	{name: "default/namespace name label", yaml: `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: trellis.dev/service-network}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: net}
spec:
  gatewayClassName: trellis
  listeners:
  - name: http
    protocol: HTTP
    port: 8080
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {kubernetes.io/metadata.name: other}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: other}
spec:
  parentRefs: [{name: net, namespace: default}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: other}
spec:
  ports: [{name: http, port: 80}]
`},
	{name: "default/service targetPort and protocol", yaml: base + `---
apiVersion: v1
kind: Service
metadata: {name: plain}
spec:
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: plain-1, labels: {kubernetes.io/service-name: plain}}
addressType: IPv4
ports: [{port: 80}]
endpoints: [{addresses: [198.18.0.11]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net}]
  rules: [{backendRefs: [{name: plain, port: 80}]}]
`},
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
	{name: "default/edge gateway address type", yaml: edgeBase + `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: edge
  addresses: [{value: 198.18.0.1}]
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`},
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
	{name: "invalid/route hostname", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net}]
  hostnames: ["Bad.Example"]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`},
	{name: "invalid/route hostname IP", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net}]
  hostnames: ["10.0.0.1"]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`},
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
	{name: "gap/gatewayclass controllerName", gap: "GatewayClass controllerName", yaml: `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: "no-slash"}
`},
	{name: "invalid/authpolicy without targetRefs", yaml: base + `---
apiVersion: trellis.dev/v1alpha1
kind: AuthPolicy
metadata: {name: p}
spec:
  targetRefs: []
  policy: {Statement: [{Effect: Allow, Principal: "*", Action: "*", Resource: "*"}]}
`},
	{name: "invalid/authpolicy targetRef kind", yaml: base + `---
apiVersion: trellis.dev/v1alpha1
kind: AuthPolicy
metadata: {name: p}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: "Bad Kind", name: net}]
  policy: {Statement: [{Effect: Allow, Principal: "*", Action: "*", Resource: "*"}]}
`},
	{name: "gap/service ports without names", gap: "core kinds", yaml: base + `---
apiVersion: v1
kind: Service
metadata: {name: two}
spec:
  ports: [{port: 80}, {port: 81}]
`},
	{name: "gap/tls secret without key", gap: "core kinds", yaml: edgeBase + `---
apiVersion: v1
kind: Secret
metadata: {name: cert}
type: kubernetes.io/tls
data: {tls.crt: ""}
`},
	{name: "invalid/tls route without hostnames", yaml: edgeBase + `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: edge
  listeners: [{name: tls, protocol: TLS, port: 8443, tls: {mode: Passthrough}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: t}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`},
	{name: "invalid/tls route without rules", yaml: edgeBase + `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: edge
  listeners: [{name: tls, protocol: TLS, port: 8443, tls: {mode: Passthrough}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: t}
spec:
  parentRefs: [{name: edge}]
  hostnames: [db.example.com]
`},
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
	{name: "invalid/seventeen hostnames", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net}]
  hostnames: [h1.example, h2.example, h3.example, h4.example, h5.example, h6.example, h7.example, h8.example, h9.example,
    h10.example, h11.example, h12.example, h13.example, h14.example, h15.example, h16.example, h17.example]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`},
	{name: "invalid/seventeen rules", yaml: httpRoute(strings.Repeat(`  - backendRefs: [{name: svc, port: 80}]
`, 17))},
	{name: "invalid/seventeen backendRefs", yaml: httpRoute(`  - backendRefs: [` + strings.Repeat(`{name: svc, port: 80}, `, 17) + `]
`)},
	{name: "invalid/duplicate parentRefs", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net}, {name: net}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`},
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
	{name: "invalid/grpc route hostname", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  parentRefs: [{name: net}]
  hostnames: ["bad_host.example"]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`},
	{name: "gap/referencegrant without from", gap: "ReferenceGrant lists", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: g}
spec:
  from: []
  to: [{group: "", kind: Service}]
`},
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
	{name: "invalid/selector without selector", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other}
spec:
  gatewayClassName: trellis
  listeners: [{name: http, protocol: HTTP, port: 8081, allowedRoutes: {namespaces: {from: Selector}}}]
`},
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
	{name: "invalid/gateway address value", yaml: edgeBase + `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: edge
  addresses: [{type: IPAddress, value: "not-an-ip"}]
  listeners: [{name: http, protocol: HTTP, port: 8080}]
`},
	{name: "invalid/endpointslice port", yaml: base + `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-2, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 70000}]
endpoints: [{addresses: [198.18.0.12], conditions: {ready: true}}]
`},
	{name: "gap/endpointslice address type", gap: "core kinds", yaml: base + `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-2, labels: {kubernetes.io/service-name: svc}}
addressType: IPv5
ports: [{name: http, protocol: TCP, port: 8090}]
endpoints: [{addresses: [198.18.0.12], conditions: {ready: true}}]
`},
	{name: "invalid/unknown field", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net}]
  rulez: []
`},
	{name: "default/service name with a digit first", yaml: base + `---
apiVersion: v1
kind: Service
metadata: {name: 1svc}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net}]
  rules: [{backendRefs: [{name: 1svc, port: 80}]}]
`},
	{name: "invalid/empty rules", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net}]
  rules: []
`},
	{name: "default/grpc route without rules", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  parentRefs: [{name: net}]
`},
	{name: "invalid/gateway without listeners", yaml: edgeBase + `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: edge
  listeners: []
`},
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
	{name: "gap/serviceimport type", gap: "ServiceImport type", yaml: base + `---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {name: imp}
spec: {type: Bogus, ports: [{port: 80}]}
`},
	{name: "invalid/serviceimport port", yaml: base + `---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {name: imp}
spec: {type: ClusterSetIP, ports: [{port: 0}]}
`},
	{name: "differ/namespace on a cluster-scoped kind", stricter: "namespace on a cluster-scoped kind", yaml: `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis, namespace: default}
spec: {controllerName: trellis.dev/service-network}
`},
	{name: "invalid/authpolicy targetRef without name", yaml: base + `---
apiVersion: trellis.dev/v1alpha1
kind: AuthPolicy
metadata: {name: p}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: ""}]
  policy: {Statement: [{Effect: Allow, Principal: "*", Action: "*", Resource: "*"}]}
`},
	{name: "invalid/authpolicy without policy", yaml: base + `---
apiVersion: trellis.dev/v1alpha1
kind: AuthPolicy
metadata: {name: p}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: net}]
`},
	{name: "invalid/parentRef port 0", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net, port: 0}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`},
	{name: "invalid/parentRef sectionName", yaml: base + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: net, sectionName: "Bad_Name"}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`},
	{name: "invalid/listener name", yaml: edgeGateway(`  - {name: "Bad_Name", protocol: HTTP, port: 8080}
`)},
	{name: "invalid/backendRef name empty", yaml: httpRoute(`  - backendRefs: [{name: "", port: 80}]
`)},
	{name: "differ/loopback endpoints", yaml: base + `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-2, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8090}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
`},
}
