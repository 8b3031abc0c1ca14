package kubernetes_test

import (
	"fmt"
	"strings"
)

// The YAML documents the tests create, each ending in "---" so that they
// concatenate into one stream for env.create.

// classes are the GatewayClasses every test with Gateways creates: trellis
// for service networks, trellis-edge for edge Gateways, and trellis-tuned,
// whose parameters name a Tuning that does not exist.
var classes = gatewayClassYAML("trellis", "trellis.dev/service-network", "") +
	gatewayClassYAML("trellis-edge", "trellis.dev/gateway", "") +
	gatewayClassYAML("trellis-tuned", "trellis.dev/service-network", ", parametersRef: {group: trellis.dev, kind: Tuning, name: fast}")

// gatewayClassYAML is a GatewayClass of controller; more is added to its spec.
func gatewayClassYAML(name, controller, more string) string {
	return fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: %s}
spec: {controllerName: %s%s}
---
`, name, controller, more)
}

func namespace(name string, labels string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {%s}}\n---\n", name, labels)
}

// httpListener is a Gateway's listeners: one, "http", for HTTP on port 80.
const httpListener = "[{name: http, protocol: HTTP, port: 80}]"

// gatewayYAML is a Gateway of class in namespace ns with listeners, a YAML
// flow list.
func gatewayYAML(ns, name, class, listeners string) string {
	return fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: %s, namespace: %s}
spec: {gatewayClassName: %s, listeners: %s}
---
`, name, ns, class, listeners)
}

// edgeGateway is namespace ns and one edge Gateway "web" in it on port
// 8080.
func edgeGateway(ns string) string {
	return namespace(ns, "") + gatewayYAML(ns, "web", "trellis-edge", "[{name: http, protocol: HTTP, port: 8080}]")
}

// routeYAML is a Gateway API route of kind (HTTPRoute, GRPCRoute, TLSRoute) in
// namespace ns with spec, a YAML flow mapping.
func routeYAML(kind, ns, name, spec string) string {
	return fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: %s
metadata: {name: %s, namespace: %s}
spec: %s
---
`, kind, name, ns, spec)
}

// authPolicyYAML is an AuthPolicy in namespace ns on HTTPRoute route, with
// one policy statement (a YAML flow mapping).
func authPolicyYAML(ns, name, route, statement string) string {
	return fmt.Sprintf(`
apiVersion: trellis.dev/v1alpha1
kind: AuthPolicy
metadata: {name: %s, namespace: %s}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: %s}]
  policy:
    Statement: [%s]
---
`, name, ns, route, statement)
}

// backend is a Service of port 80 to target port 8080 in namespace ns, and
// its EndpointSlice of one ready endpoint, ip.
func backend(ns, name, ip string) string {
	return serviceYAML(ns, name, "{port: 80, targetPort: 8080}", 8080, ip)
}

// serviceYAML is a Service of one port (a YAML flow mapping) in namespace ns,
// and its EndpointSlice of ready endpoints at ips on targetPort.
func serviceYAML(ns, name, port string, targetPort int, ips ...string) string {
	var endpoints []string
	for _, ip := range ips {
		endpoints = append(endpoints, "{addresses: ["+ip+"], conditions: {ready: true}}")
	}
	return fmt.Sprintf(`
apiVersion: v1
kind: Service
metadata: {name: %[2]s, namespace: %[1]s}
spec: {ports: [%[3]s]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[2]s-1, namespace: %[1]s, labels: {kubernetes.io/service-name: %[2]s}}
addressType: IPv4
ports: [{port: %[4]d}]
endpoints: [%[5]s]
---
`, ns, name, port, targetPort, strings.Join(endpoints, ", "))
}
