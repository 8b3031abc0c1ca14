#!/usr/bin/env bash
# Issue 15's idle-CPU goal in steady state: `trellis up` with N routes to N
# Services of M endpoints each (every target health-checked at the Lattice
# defaults, one check every 30 s), answered by `trellis echo` on 0.0.0.0:9000,
# in a network namespace of its own (unshare -n, as root). After WAIT seconds
# (past the first checks' wave and the second, spread over the interval) it
# prints trellis's CPU over IDLE seconds, the echo target's, RSS, file
# descriptors and TCP states (TIME-WAIT counts closed check connections).
# With PROFILE set, it saves a CPU profile of the same window there.
#
# Usage: bench/scale/idle.sh [SERVICES] [ENDPOINTS] [WAIT] [IDLE] (defaults 2000 10 60 20).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000}
M=${2:-10}
WAIT=${3:-60}
IDLE=${4:-20}
PROFILE=${PROFILE:-}
. bench/scale/prepare.sh idle
export N M WAIT IDLE PROFILE out
unshare -n bash -euo pipefail -c '
ip link set lo up
pids=()
trap "kill \${pids[*]} 2>/dev/null || true; wait 2>/dev/null || true" EXIT
"$out/scale" gen -services "$N" -endpoints "$M" -dir "$out/cfg" >/dev/null
"$out/trellis" echo --listen 0.0.0.0:9000 --log-level warn >/dev/null 2>&1 & target=$!; pids+=($target)
"$out/trellis" up --config "$out/cfg" --admin-listen 127.0.0.1:9901 --log-level warn >"$out/up.log" 2>&1 & up=$!; pids+=($up)
sleep "$WAIT"
ticks() { awk "{print \$14 + \$15}" /proc/$1/stat; }
core() { awk -v a=$1 -v b=$2 -v h=$(getconf CLK_TCK) -v t=$IDLE "BEGIN {printf \"%.3f core\", (b - a) / h / t}"; }
t0=$(ticks $up); e0=$(ticks $target)
if [ -n "$PROFILE" ]; then
  curl -s -o "$PROFILE" "http://127.0.0.1:9901/debug/pprof/profile?seconds=$IDLE"
else
  sleep "$IDLE"
fi
t1=$(ticks $up); e1=$(ticks $target)
echo "N=$N M=$M: trellis idle CPU $(core $t0 $t1) (echo target $(core $e0 $e1)), RSS $(awk "/^VmRSS/ {printf \"%.0f MiB\", \$2/1024}" /proc/$up/status), fds $(ls /proc/$up/fd | wc -l)"
ss -tan | awk "NR > 1 {n[\$1]++} END {for (s in n) printf \"%s %d  \", s, n[s]; print \"\"}"
'
