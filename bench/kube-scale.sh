#!/usr/bin/env bash
# Issue 15's size through a real kube-apiserver (the controller's side of
# bench/scale/run.sh): N Services with an EndpointSlice of M ready endpoints
# and N HTTPRoutes, created with C clients at once; then the cold start of
# the controller and a proxy to every route served and Accepted; then
# CHANGES single-route hostname updates → served, p50/p99. It runs
# BenchmarkScale of internal/provider/kubernetes (as root: the apiserver,
# the proxy and the targets run in a network namespace of the test's own).
#
# Usage: bench/kube-scale.sh [SERVICES] [ENDPOINTS] [CHANGES] [CLIENTS]
# (defaults 10000 10 50 32). Creating 30,000 objects takes the apiserver
# minutes; the run reports how long. SCALE_CPUPROFILE=/abs/file writes a
# CPU profile of the test process (controller, control plane, test client)
# during the changes alone, SCALE_COLDPROFILE=/abs/file one of the cold
# start.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
M=${2:-10}
C=${3:-50}
W=${4:-32}
export TRELLIS_KUBE_BIN=${TRELLIS_KUBE_BIN:-$(hack/build-kube.sh | tail -n1)}
uptime
go test ./internal/provider/kubernetes -run '^$' -bench '^BenchmarkScale$' -benchtime 1x -timeout 60m -count 1 \
  -args -scale.services "$N" -scale.endpoints "$M" -scale.changes "$C" -scale.clients "$W" \
  ${SCALE_CPUPROFILE:+-scale.cpuprofile "$SCALE_CPUPROFILE"} ${SCALE_COLDPROFILE:+-scale.coldprofile "$SCALE_COLDPROFILE"} 2>&1 |
  grep -E '^(Benchmark|PASS|FAIL|ok)|bench_test.go|--- '
uptime
