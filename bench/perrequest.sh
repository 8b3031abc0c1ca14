#!/usr/bin/env bash
# Per-request syscalls, context switches and CPU time of running proxy
# processes, counted with the kernel's tracepoints over exactly one wrk run
# (unlike strace, which slows every syscall and so changes the scheduling
# it is meant to show). Start the contenders with `BENCH_HOLD=1
# bench/proxies.sh`, which prints their PIDs and ports, then e.g.:
#
#   bench/perrequest.sh trellis 1234 http://127.0.0.1:18110/api/items
#   bench/perrequest.sh nginx 1240,1241 http://127.0.0.1:18111/api/items
#
# Besides the proxy's calls it reports the reads that found nothing
# (read_eagain: a read that returned EAGAIN, after which the caller waits
# for the poller), wrk's own CPU per request, and with BACKEND=PID[,PID...]
# (the backend's workers) the backend's CPU per request: what the proxy
# makes the others on the same cores spend.
#
# LIGHT=1 counts only CPU time and context switches: no syscall
# tracepoints, which slow the proxy's calls (for rates and p99s to compare).
#
# Usage: [BACKEND=PIDS] [LIGHT=1] bench/perrequest.sh NAME PID[,PID...] URL [WRK ARGS...]
# (wrk defaults: -t2 -c64 -d4s, with the benchmark's Host and x-env).
# Needs perf (Debian: linux-perf) and root.
set -euo pipefail
name=$1 pids=$2 url=$3
shift 3
args=("$@")
((${#args[@]})) || args=(-t2 -c64 -d4s)
ev=raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_nanosleep,context-switches,task-clock
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# cpu PID... → their user + system time in clock ticks.
cpu() {
  local p t=0
  for p in ${1//,/ }; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo $t
}
b0=0
[ -z "${BACKEND:-}" ] || b0=$(cpu "$BACKEND")
evs=(-e "$ev" -e syscalls:sys_exit_read --filter 'ret == -11')
[ -z "${LIGHT:-}" ] || evs=(-e context-switches,task-clock)
perf stat -x, "${evs[@]}" -p "$pids" -o "$tmp/perf" -- \
  perf stat -x, -e task-clock -o "$tmp/wrkcpu" -- \
  wrk "${args[@]}" --latency -H 'Host: bench.example.com' -H 'x-env: prod' "$url" >"$tmp/wrk"
b1=0
[ -z "${BACKEND:-}" ] || b1=$(cpu "$BACKEND")
reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk")
rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk")
p99=$(awk '$1=="99%" {print $2}' "$tmp/wrk")
wrkcpu=$(awk -F, '/task-clock/ {print $1}' "$tmp/wrkcpu")
awk -F, -v n="$name" -v q="$reqs" -v r="$rps" -v p99="$p99" -v w="$wrkcpu" -v bt=$((b1 - b0)) -v hz="$(getconf CLK_TCK)" -v b="${BACKEND:-}" '
  /^[0-9]/ {
    e = $3
    if (e ~ /sys_exit_read/) e = "read_eagain"
    else { sub(/.*:sys_enter_?/, "", e); if (e == "") e = "syscalls" }
    if (e == "task-clock") out = out sprintf(" cpu %.1fµs", $1 * 1e3 / q)
    else if ($1 > 0) out = out sprintf(" %s %.2f", e, $1 / q)
  }
  END {
    out = out sprintf("; wrk cpu %.1fµs", w * 1e3 / q)
    if (b != "") out = out sprintf("; backend cpu %.1fµs", bt * 1e6 / hz / q)
    printf "%s: %s rps, p99 %s; per request:%s\n", n, r, p99, out
  }' "$tmp/perf"
