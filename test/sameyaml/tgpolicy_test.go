package sameyaml_test

import "fmt"

// tgpCase is a TargetGroupPolicy on Service svc of base, with healthCheck
// (YAML lines indented by four) and targetRefs.
func tgpCase(targetRefs, healthCheck string) string {
	return fmt.Sprintf(`%s---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroupPolicy
metadata: {name: checks}
spec:
  targetRefs: %s
  healthCheck:
%s`, httpRoute(`  - backendRefs: [{name: svc, port: 80}]
`), targetRefs, healthCheck)
}

const svcRef = `[{group: "", kind: Service, name: svc}]`

// targetGroupPolicyCases: a valid TargetGroupPolicy setting every field,
// and one case per field out of the CRD's bounds, which the apiserver and
// the file provider must both refuse naming the field.
var targetGroupPolicyCases = []sameCase{
	{name: "tgp/every field", yaml: tgpCase(svcRef, `    enabled: true
    intervalSeconds: 300
    timeoutSeconds: 120
    healthyThresholdCount: 10
    unhealthyThresholdCount: 2
    statusMatch: "200-299,304,404-404"
    path: /healthz?full=1
    port: 65535
    protocol: HTTPS
    protocolVersion: HTTP2
`)},
	{name: "tgp/lowest values", yaml: tgpCase(svcRef, `    enabled: false
    intervalSeconds: 5
    timeoutSeconds: 1
    healthyThresholdCount: 2
    unhealthyThresholdCount: 2
    statusMatch: "200"
    path: /
    port: 1
    protocol: HTTP
    protocolVersion: HTTP1
`)},
	{name: "invalid/tgp intervalSeconds 3", yaml: tgpCase(svcRef, "    intervalSeconds: 3\n")},
	{name: "invalid/tgp intervalSeconds 301", yaml: tgpCase(svcRef, "    intervalSeconds: 301\n")},
	{name: "invalid/tgp timeoutSeconds 0", yaml: tgpCase(svcRef, "    timeoutSeconds: 0\n")},
	{name: "invalid/tgp timeoutSeconds huge", yaml: tgpCase(svcRef, "    timeoutSeconds: 2147483647\n")},
	{name: "invalid/tgp healthyThresholdCount 11", yaml: tgpCase(svcRef, "    healthyThresholdCount: 11\n")},
	{name: "invalid/tgp unhealthyThresholdCount 1", yaml: tgpCase(svcRef, "    unhealthyThresholdCount: 1\n")},
	{name: "invalid/tgp unhealthyThresholdCount negative", yaml: tgpCase(svcRef, "    unhealthyThresholdCount: -2\n")},
	{name: "invalid/tgp statusMatch 600", yaml: tgpCase(svcRef, "    statusMatch: \"600\"\n")},
	{name: "invalid/tgp statusMatch backwards", yaml: tgpCase(svcRef, "    statusMatch: \"200,299-200\"\n")},
	{name: "invalid/tgp statusMatch with spaces", yaml: tgpCase(svcRef, "    statusMatch: \"200, 204\"\n")},
	{name: "invalid/tgp statusMatch empty", yaml: tgpCase(svcRef, "    statusMatch: \"\"\n")},
	{name: "invalid/tgp path without slash", yaml: tgpCase(svcRef, "    path: healthz\n")},
	{name: "invalid/tgp path with a space", yaml: tgpCase(svcRef, "    path: \"/a b\"\n")},
	{name: "invalid/tgp path with a header", yaml: tgpCase(svcRef, "    path: \"/h HTTP/1.1\\r\\nX-Injected: 1\"\n")},
	{name: "invalid/tgp port 0", yaml: tgpCase(svcRef, "    port: 0\n")},
	{name: "invalid/tgp port 65536", yaml: tgpCase(svcRef, "    port: 65536\n")},
	{name: "invalid/tgp protocol TCP", yaml: tgpCase(svcRef, "    protocol: TCP\n")},
	{name: "invalid/tgp protocolVersion GRPC", yaml: tgpCase(svcRef, "    protocolVersion: GRPC\n")},
	{name: "invalid/tgp without targetRefs", yaml: tgpCase("[]", "    path: /x\n")},
	{name: "invalid/tgp targetRef ServiceExport", yaml: tgpCase(`[{group: multicluster.x-k8s.io, kind: ServiceExport, name: svc}]`, "    path: /x\n")},
	{name: "invalid/tgp targetRef kind", yaml: tgpCase(`[{group: "", kind: Pod, name: svc}]`, "    path: /x\n")},
}
