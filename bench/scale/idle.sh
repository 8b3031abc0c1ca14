#!/usr/bin/env bash
# Issue 15's idle-CPU goal in steady state: `trellis up` with N routes to N
# Services of M endpoints each (every target health-checked at the Lattice
# defaults, one check every 30 s), answered by `trellis echo` on 0.0.0.0:9000,
# in a network namespace of its own (unshare -n, as root). After WAIT seconds
# (past the first checks' wave and the second, spread over the interval) it
# prints trellis's CPU over IDLE seconds, the echo target's, RSS, file
# descriptors, goroutines and TCP states (TIME-WAIT counts closed check
# connections), and the bytes allocated a second over the window (from
# /metrics' go_memstats_alloc_bytes_total) with the Go heap in use after it.
#
# CPU is measured twice: from /proc's user+system ticks (10 ms each: over
# 60 s, 0.0002 core) and, with PERF=1, by perf's task-clock, which also
# counts syscalls, context switches and futex calls over the same window,
# printed per check (N*M/INTERVAL checks a second) for trellis and the target
# apart. Needs perf (Debian: linux-perf) and root.
#
# Environment:
#   TRELLIS_BIN=FILE  run that trellis binary instead of this tree's (the
#                     same target and driver, for an A/B comparison)
#   NO_CHECKS=1       targets speak h2c, whose groups are not checked: the
#                     process's cost without checks, to subtract
#   PROFILE=FILE      save a CPU profile of the window there (not with PERF)
#   ALLOCS=FILE       save the window's allocations there (a delta heap
#                     profile: go tool pprof -sample_index=alloc_space FILE)
#   PERF=1            perf stat over the window (above)
#   INTERVAL=S        check every S seconds (5-300) rather than 30: a
#                     TargetGroupPolicy per Service (scale gen -interval),
#                     for a chosen rate of checks
#
# Usage: bench/scale/idle.sh [SERVICES] [ENDPOINTS] [WAIT] [IDLE] (defaults 2000 10 60 20).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000}
M=${2:-10}
WAIT=${3:-60}
IDLE=${4:-20}
PROFILE=${PROFILE:-}
PERF=${PERF:-}
ALLOCS=${ALLOCS:-}
GENFLAGS=
[ -n "${NO_CHECKS:-}" ] && GENFLAGS=-no-checks
INTERVAL=${INTERVAL:-30}
[ "$INTERVAL" != 30 ] && GENFLAGS="$GENFLAGS -interval $INTERVAL"
. bench/scale/prepare.sh idle
BIN=${TRELLIS_BIN:-$out/trellis}
export N M WAIT IDLE PROFILE PERF ALLOCS GENFLAGS BIN out INTERVAL
unshare -n bash -euo pipefail -c '
ip link set lo up
pids=()
trap "kill \${pids[*]} 2>/dev/null || true; wait 2>/dev/null || true" EXIT
"$out/scale" gen -services "$N" -endpoints "$M" $GENFLAGS -dir "$out/cfg" >/dev/null
"$out/trellis" echo --listen 0.0.0.0:9000 --log-level warn >/dev/null 2>&1 & target=$!; pids+=($target)
"$BIN" up --config "$out/cfg" --admin-listen 127.0.0.1:9901 --log-level warn >"$out/up.log" 2>&1 & up=$!; pids+=($up)
sleep "$WAIT"
ticks() { awk "{print \$14 + \$15}" /proc/$1/stat; }
core() { awk -v a=$1 -v b=$2 -v h=$(getconf CLK_TCK) -v t=$IDLE "BEGIN {printf \"%.4f core\", (b - a) / h / t}"; }
ev=task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_futex,syscalls:sys_enter_nanosleep
metric() { curl -s http://127.0.0.1:9901/metrics | awk -v m=$1 "\$1 == m {printf \"%.0f\", \$2}"; }
a0=$(metric go_memstats_alloc_bytes_total); c0=$(metric go_gc_duration_seconds_count)
t0=$(ticks $up); e0=$(ticks $target)
if [ -n "$ALLOCS" ]; then
  curl -s -o "$ALLOCS" "http://127.0.0.1:9901/debug/pprof/allocs?seconds=$IDLE" & pids+=($!)
fi
if [ -n "$PERF" ]; then
  perf stat -x, -e "$ev" -p $up -o "$out/perf.up" -- sleep "$IDLE" & p1=$!
  perf stat -x, -e "$ev" -p $target -o "$out/perf.echo" -- sleep "$IDLE" & p2=$!
  wait $p1 $p2
elif [ -n "$PROFILE" ]; then
  curl -s -o "$PROFILE" "http://127.0.0.1:9901/debug/pprof/profile?seconds=$IDLE"
else
  sleep "$IDLE"
fi
t1=$(ticks $up); e1=$(ticks $target)
[ -n "$ALLOCS" ] && wait ${pids[-1]}
a1=$(metric go_memstats_alloc_bytes_total); c1=$(metric go_gc_duration_seconds_count)
echo "allocated $(awk -v a=${a0:-0} -v b=${a1:-0} -v t=$IDLE "BEGIN {printf \"%.2f MB/s\", (b - a) / t / 1e6}") over the window, Go heap in use $(metric go_memstats_heap_inuse_bytes | awk "{printf \"%.0f MiB\", \$1/1048576}"), $(( ${c1:-0} - ${c0:-0} )) GC cycles"
g=$(curl -s "http://127.0.0.1:9901/debug/pprof/goroutine?debug=1" | awk "NR == 1 {print \$NF}")
echo "N=$N M=$M ${GENFLAGS:-checks on} $(basename "$BIN"): trellis idle CPU $(core $t0 $t1) (echo target $(core $e0 $e1)), RSS $(awk "/^VmRSS/ {printf \"%.0f MiB\", \$2/1024}" /proc/$up/status), fds $(ls /proc/$up/fd | wc -l), goroutines ${g:-?}"
ss -tan | awk "NR > 1 {n[\$1]++} END {for (s in n) printf \"%s %d  \", s, n[s]; print \"\"}"
if [ -n "$PERF" ]; then
  for who in up echo; do
    awk -F, -v who=$who -v q=$(( N * M * IDLE / INTERVAL )) -v t=$IDLE "
      /^[0-9]/ {
        e = \$3; sub(/.*:sys_enter_?/, \"\", e); if (e == \"\") e = \"syscalls\"
        if (e == \"task-clock\") out = out sprintf(\" cpu %.4f core = %.1fus\", \$1 / 1e3 / t, \$1 * 1e3 / q)
        else if (\$1 > 0) out = out sprintf(\" %s %.2f\", e, \$1 / q)
      }
      END { printf \"perf %s, per check (%d checks):%s\n\", who, q, out }" "$out/perf.$who"
  done
fi
'
