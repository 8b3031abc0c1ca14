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
# Usage: bench/perrequest.sh NAME PID[,PID...] URL [WRK ARGS...]
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
perf stat -x, -e "$ev" -p "$pids" -o "$tmp/perf" -- \
  wrk "${args[@]}" -H 'Host: bench.example.com' -H 'x-env: prod' "$url" >"$tmp/wrk"
reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk")
rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk")
awk -F, -v n="$name" -v q="$reqs" -v r="$rps" '
  /^[0-9]/ {
    e = $3; sub(/.*:sys_enter_?/, "", e); if (e == "") e = "syscalls"
    if (e == "task-clock") out = out sprintf(" cpu %.1fµs", $1 * 1e3 / q)
    else if ($1 > 0) out = out sprintf(" %s %.2f", e, $1 / q)
  }
  END { printf "%s: %s rps; per request:%s\n", n, r, out }' "$tmp/perf"
