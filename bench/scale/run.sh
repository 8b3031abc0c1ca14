#!/usr/bin/env bash
# Issue 15's scale measurement: `trellis up --config DIR` with N routes to N
# Services of M endpoints each (bench/scale/main.go says what is measured).
# It runs in a network namespace of its own (unshare -n, as root), so that the
# one echo listener on 0.0.0.0:9000 answers every 127.x.y.z target and nothing
# listens outside the namespace.
#
# Usage: bench/scale/run.sh [SERVICES] [ENDPOINTS] [CHANGES] [extra flags of `scale run`]
# (defaults 1000 10 50). TRELLIS_BIN=FILE runs that trellis binary instead of
# this tree's (another build, for an A/B comparison with the same driver).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000}
M=${2:-10}
C=${3:-50}
shift $(( $# < 3 ? $# : 3 ))
. bench/scale/prepare.sh scale-bin
unshare -n bash -c 'ip link set lo up && exec "$0" "$@"' \
  "$out/scale" run -trellis "${TRELLIS_BIN:-$out/trellis}" -services "$N" -endpoints "$M" -changes "$C" "$@"
