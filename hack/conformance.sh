#!/usr/bin/env bash
# Runs the upstream Gateway API conformance suite
# (sigs.k8s.io/gateway-api/conformance, the version go.mod requires) against
# Trellis, from a clean checkout:
#
#   1. builds etcd, kube-apiserver and kube-controller-manager
#      (hack/build-kube.sh; cached between runs) and the trellis binary;
#   2. runs test/conformance's TestHarnessSelfTest (cluster, node agent and
#      every emulated backend, checked with the suite's own helpers), then
#      TestConformance: a cluster in a network namespace of its own, the
#      node agent, `trellis up --kubeconfig`, and the suite once per
#      GatewayClass (trellis-edge, then trellis) with the GATEWAY-HTTP,
#      GATEWAY-GRPC and GATEWAY-TLS profiles;
#   3. writes docs/conformance/report-<class>.yaml.
#
# It needs root (network namespaces) and `ip` from iproute2, installed if
# missing. Full logs (suite output per class, the trellis log, and the last
# status of every Gateway API object) go to $TRELLIS_CONFORMANCE_LOG_DIR,
# by default a directory under /tmp whose name is printed. The environment
# variables that test/conformance/conformance_test.go documents pass
# through (TRELLIS_CONFORMANCE_CLASSES, _SKIP, _RUN_TEST, _DEBUG, ...).
#
# The exit status is the suite's: non-zero when any selected test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

if [ "$(id -u)" != 0 ]; then
  echo "hack/conformance.sh: needs root (it creates network namespaces)" >&2
  exit 1
fi
if ! command -v ip >/dev/null; then
  echo "== installing iproute2 (for network namespaces)"
  apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
fi

echo "== building the control plane (hack/build-kube.sh)"
TRELLIS_KUBE_BIN=$(hack/build-kube.sh | tail -n1)
export TRELLIS_KUBE_BIN
built=$SECONDS

logs=${TRELLIS_CONFORMANCE_LOG_DIR:-$(mktemp -d /tmp/trellis-conformance.XXXXXX)}
mkdir -p "$logs"
export TRELLIS_CONFORMANCE_LOG_DIR=$logs
echo "== building trellis; logs go to $logs"
go build -o "$logs/trellis" ./cmd/trellis
export TRELLIS_BIN=$logs/trellis
export TRELLIS_CONFORMANCE=1
export TRELLIS_CONFORMANCE_REPORT_DIR=${TRELLIS_CONFORMANCE_REPORT_DIR:-$PWD/docs/conformance}
if [ -z "${TRELLIS_VERSION:-}" ]; then
  TRELLIS_VERSION=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
  export TRELLIS_VERSION
fi

echo "== harness self-test"
go test -count=1 -v -timeout 10m -run '^TestHarnessSelfTest$' ./test/conformance

echo "== conformance suite (reports to $TRELLIS_CONFORMANCE_REPORT_DIR)"
status=0
go test -count=1 -v -timeout 60m -run '^TestConformance$' ./test/conformance || status=$?

echo "== conformance done in $((SECONDS - start)) s (control-plane build $((built - start)) s); logs in $logs"
exit "$status"
