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
#
# SCALE_CACHE=1 (the default) keeps the apiserver's etcd data once the
# objects are created, in the user's cache directory
# (trellis/kube-templates/*-data-scale-NxM-f*, named by the binaries, the
# apiserver's command line, SERVICES, ENDPOINTS and the objects' form), and
# a later run of the same size starts from a copy of it, checked for N
# Services, EndpointSlices and HTTPRoutes without status, instead of
# creating them again (minutes at 10,000); the create time is reported only
# by a run that creates. SCALE_CACHE=0 creates the objects every run and
# keeps nothing. Remove the directory to drop a cache.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
M=${2:-10}
C=${3:-50}
W=${4:-32}
export TRELLIS_KUBE_BIN=${TRELLIS_KUBE_BIN:-$(hack/build-kube.sh | tail -n1)}
uptime
go test ./internal/provider/kubernetes -run '^$' -bench '^BenchmarkScale$' -benchtime 1x -timeout 60m -count 1 \
  -args -scale.cache="$([ "${SCALE_CACHE:-1}" = 0 ] && echo false || echo true)" -scale.services "$N" -scale.endpoints "$M" -scale.changes "$C" -scale.clients "$W" \
  ${SCALE_CPUPROFILE:+-scale.cpuprofile "$SCALE_CPUPROFILE"} ${SCALE_COLDPROFILE:+-scale.coldprofile "$SCALE_COLDPROFILE"} 2>&1 |
  grep -E '^(Benchmark|PASS|FAIL|ok)|bench_test.go|--- '
uptime
