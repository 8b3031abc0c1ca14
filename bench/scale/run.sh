#!/usr/bin/env bash
# Issue 15's scale measurement: `trellis up --config DIR` with N routes to N
# Services of M endpoints each (bench/scale/main.go says what is measured).
# It runs in a network namespace of its own (unshare -n, as root), so that the
# one echo listener on 0.0.0.0:9000 answers every 127.x.y.z target and nothing
# listens outside the namespace.
#
# Usage: bench/scale/run.sh [SERVICES] [ENDPOINTS] [CHANGES] [extra flags of `scale run`]
# (defaults 1000 10 50).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000}
M=${2:-10}
C=${3:-50}
shift $(( $# < 3 ? $# : 3 ))
out=$(mktemp -d /tmp/trellis-scale-bin.XXXXXX)
trap 'rm -rf "$out"' EXIT
# Health checks keep a connection per target (at most half of trellis's
# open-file limit, internal/proxy/health): room for 100,000 of them, and for
# the echo listener's side of each.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n) (checks keep at most half as many connections)" >&2
go build -o "$out/trellis" ./cmd/trellis
go build -o "$out/scale" ./bench/scale
unshare -n bash -c 'ip link set lo up && exec "$0" "$@"' \
  "$out/scale" run -trellis "$out/trellis" -services "$N" -endpoints "$M" -changes "$C" "$@"
