// Package conformance runs the upstream Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance) against Trellis on a real but
// container-free cluster. Everything is in its tests:
//
//   - TestHarnessSelfTest starts the cluster (package test/kube) and the
//     node agent (package nodeagent), lets a stub controller accept a
//     GatewayClass, runs the suite's Setup, and checks every backend the
//     suite deploys with the suite's own request helpers, aimed at the Pod
//     IPs. It proves the harness without Trellis and runs in every `go
//     test ./...`.
//   - TestConformance also starts Trellis (`trellis up --kubeconfig`) in
//     the cluster's network namespace and runs the whole suite once per
//     GatewayClass, writing the reports to docs/conformance. It takes many
//     minutes and runs only with TRELLIS_CONFORMANCE=1 (hack/conformance.sh
//     sets everything up).
//
// The suite's helpers dial Gateway and Pod addresses with plain dialers,
// and those addresses exist only inside the cluster's network namespace. So
// each of these tests runs its suite half as a second process of the same
// test binary started inside the namespace (TestSuiteInNamespace,
// TestBackendsInNamespace), which skip when run any other way.
package conformance
