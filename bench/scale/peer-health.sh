#!/usr/bin/env bash
# Health checks' idle CPU beside a peer's (issue 15): HAProxy (2.6, the
# best-known active health checker among peers; it dials a connection per
# check) and `trellis up` check the same N*M targets (N services of M
# endpoints, 127.x.y.z:9000, as `scale gen` writes them) at the Lattice
# defaults: GET / expecting 200 every 30 s, timeout 5 s, fall 2, rise 5.
# One target process (`scale target`) answers all of them and counts the
# requests, so a window's checks are counted, not assumed. In a network
# namespace of its own (unshare -n, as root).
#
# Phases, run one after another in each round (interleaved, so that the
# machine's load falls on all alike):
#   kept     trellis, checks on connections kept between checks (as far as
#            the open-file limit allows: half of it)
#   dial     trellis with TRELLIS_BENCH_HEALTH_MAX_KEPT_CONNS=-1: every
#            check dials a connection and closes it (with a reset)
#   haproxy  HAProxy (nbthread THREADS), every check a connection
#   off      trellis with the targets' groups unchecked (h2c): the
#            process's CPU without checks, to subtract
#   base-kept, base-dial, base-off   the same with BASE_BIN, another trellis
#            build (an A/B comparison in the same run)
# Each phase starts its process, waits WAIT seconds (past the first
# interval's checks), then measures IDLE seconds: the process's user+system
# ticks from /proc (10 ms each; the user share printed apart), the
# target's, the target's count of requests (the checks), and the
# connections it accepted (the namespace's TCP PassiveOpens). CPU per check is the process's CPU over the checks
# counted. With PERF=1, perf stat over the same window adds context
# switches and syscalls per check (perf's tracepoints add to the CPU they
# count: read CPU from runs without it). HAProxy's servers' states and
# failed checks come from its stats socket after each window.
#
# Environment: TRELLIS_BIN=FILE (another trellis build), BASE_BIN=FILE
# (the base-* phases' build), PHASES (default
# "kept dial haproxy off"), ROUNDS (1), THREADS (HAProxy's nbthread, 1),
# PERF=1, HAPROXY (/usr/sbin/haproxy).
#
# Usage: bench/scale/peer-health.sh [SERVICES] [ENDPOINTS] [WAIT] [IDLE] (defaults 1000 10 45 60).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000}
M=${2:-10}
WAIT=${3:-45}
IDLE=${4:-60}
PHASES=${PHASES:-kept dial haproxy off}
ROUNDS=${ROUNDS:-1}
THREADS=${THREADS:-1}
PERF=${PERF:-}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
. bench/scale/prepare.sh peer
BIN=${TRELLIS_BIN:-$out/trellis}
export N M WAIT IDLE PHASES ROUNDS THREADS PERF HAPROXY BIN out
export BASE_BIN=${BASE_BIN:-}
echo "$(date -u +%FT%TZ) N=$N M=$M: $(( N * M )) targets, $(( N * M / 30 )) checks/s nominal; load: $(uptime | sed 's/.*load/load/')" >&2
unshare -n bash -euo pipefail -c '
ip link set lo up
pids=()
trap "kill \${pids[*]} 2>/dev/null || true; wait 2>/dev/null || true" EXIT
"$out/scale" gen -services "$N" -endpoints "$M" -dir "$out/cfg" >/dev/null
"$out/scale" gen -services "$N" -endpoints "$M" -no-checks -dir "$out/cfg-off" >/dev/null
"$out/scale" haproxy -services "$N" -endpoints "$M" -threads "$THREADS" -out "$out/haproxy.cfg" -socket "$out/haproxy.sock"
"$out/scale" target -listen 0.0.0.0:9000 -count 127.0.0.1:9002 & target=$!; pids+=($target)
sleep 1
ticks() { awk "{print \$14 + \$15}" /proc/$1/stat; }
uticks() { awk "{print \$14}" /proc/$1/stat; }
opens() { awk "/^Tcp:/ && \$2 ~ /^[0-9]/ {print \$7}" /proc/net/snmp; }
count() { curl -s http://127.0.0.1:9002/; }
hz=$(getconf CLK_TCK)
ev=task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_connect,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_futex
for round in $(seq "$ROUNDS"); do
  for phase in $PHASES; do
    bin=$BIN
    case $phase in base-*) bin=$BASE_BIN ;; esac
    case ${phase#base-} in
      kept) "$bin" up --config "$out/cfg" --admin-listen 127.0.0.1:9901 --log-level warn >"$out/$phase.log" 2>&1 & pid=$! ;;
      dial) TRELLIS_BENCH_HEALTH_MAX_KEPT_CONNS=-1 "$bin" up --config "$out/cfg" --admin-listen 127.0.0.1:9901 --log-level warn >"$out/$phase.log" 2>&1 & pid=$! ;;
      off) "$bin" up --config "$out/cfg-off" --admin-listen 127.0.0.1:9901 --log-level warn >"$out/$phase.log" 2>&1 & pid=$! ;;
      haproxy) "$HAPROXY" -db -f "$out/haproxy.cfg" >"$out/$phase.log" 2>&1 & pid=$! ;;
      *) echo "unknown phase $phase" >&2; exit 2 ;;
    esac
    pids+=($pid)
    sleep "$WAIT"
    if ! kill -0 $pid 2>/dev/null; then echo "$phase: exited; its log:" >&2; cat "$out/$phase.log" >&2; exit 1; fi
    t0=$(ticks $pid); u0=$(uticks $pid); e0=$(ticks $target); c0=$(count); o0=$(opens); l0=$(cut -d" " -f1 /proc/loadavg)
    if [ -n "$PERF" ]; then
      perf stat -x, -e "$ev" -p $pid -o "$out/perf.$phase" -- sleep "$IDLE"
    else
      sleep "$IDLE"
    fi
    t1=$(ticks $pid); u1=$(uticks $pid); e1=$(ticks $target); c1=$(count); o1=$(opens); l1=$(cut -d" " -f1 /proc/loadavg)
    fds=$(ls /proc/$pid/fd | wc -l); rss=$(awk "/^VmRSS/ {printf \"%.0f\", \$2/1024}" /proc/$pid/status)
    awk -v r=$round -v p=$phase -v t=$(( t1 - t0 )) -v u=$(( u1 - u0 )) -v e=$(( e1 - e0 )) -v c=$(( c1 - c0 )) -v o=$(( o1 - o0 )) \
        -v hz=$hz -v w=$IDLE -v fds=$fds -v rss=$rss -v l="$l0-$l1" "BEGIN {
      printf \"round %d %-9s cpu %.4f core (user %.0f%%)  checks %.0f/s  %s/check  target %.4f core  conns/check %.2f  fds %d  rss %d MiB  load %s\n\",
        r, p, t / hz / w, (t > 0 ? 100 * u / t : 0), c / w, (c > 0 ? sprintf(\"%.1fus\", t / hz * 1e6 / c) : \"-\"), e / hz / w, (c > 0 ? o / c : 0), fds, rss, l }"
    if [ -n "$PERF" ]; then
      awk -F, -v p=$phase -v q=$(( c1 - c0 )) "
        /^[0-9]/ && q > 0 {
          e = \$3; sub(/.*:sys_enter_?/, \"\", e); if (e == \"\") e = \"syscalls\"
          if (e == \"task-clock\") out = out sprintf(\" cpu %.1fus\", \$1 * 1e3 / q)
          else if (\$1 > 0) out = out sprintf(\" %s %.2f\", e, \$1 / q)
        }
        END { printf \"  perf %s, per check:%s\n\", p, out }" "$out/perf.$phase"
    fi
    [ $phase = haproxy ] && "$out/scale" haproxy -stat -socket "$out/haproxy.sock" | sed "s/^/  /"
    kill $pid; wait $pid 2>/dev/null || true
    sleep 2
  done
done
'
