#!/usr/bin/env bash
# How soon after a change the Multi-Cluster Services objects of every
# cluster show it (issue 12's goal: 2 s): runs the Kubernetes provider's MCS
# tests (real kube-apiservers and etcd, several controllers) ROUNDS times and
# prints each measured change, then the count over the goal and the
# slowest. The tests assert correctness; this script is where the speed goal
# is judged, so that a loaded machine does not make the tests flaky.
#
# Usage: bench/mcs-change.sh [ROUNDS] (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
TRELLIS_KUBE_BIN=$(./hack/build-kube.sh | tail -n1)
export TRELLIS_KUBE_BIN
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq "$ROUNDS"); do
  go test -count=1 -v -run 'TestExports|TestMCS|TestImport' ./internal/provider/kubernetes/ 2>&1 | grep -o 'change: .*' >>"$out" || true
done
sort "$out" | uniq -c | sort -rn | head -50
echo "measured: $(wc -l <"$out"), over the goal: $(grep -c OVER "$out" || true)"
# The slowest change held to the 2 s goal, in ms.
echo "slowest against the 2 s goal: $(grep 'goal of 2s' "$out" | grep -o '[0-9.]*m\?s (' | tr -d ' (' |
  awk '/ms$/ {sub("ms", ""); print $0; next} {sub("s", ""); print $0 * 1000}' | sort -n | tail -n1) ms"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
