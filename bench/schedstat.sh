#!/usr/bin/env bash
# What a command's requests cost a process's threads in the Linux scheduler:
# runs CMD and prints, per request, the CPU time, the time runnable but
# waiting for a CPU, and the scheduler slices of all PID's threads, and
# the same for its Go runtime monitor thread (sysmon: the first thread the
# runtime starts, the process's second). docs/benchmarks.md, "Where a slow
# request spends its time".
#
# Usage: bench/schedstat.sh REQUESTS PID -- CMD [ARGS...]
set -euo pipefail
n=$1 pid=$2
shift 2
[ "${1:-}" = -- ] && shift
# sums of the fields of /proc/PID/task/*/schedstat: cpu ns, wait ns, slices
total() { cat /proc/"$pid"/task/*/schedstat | awk '{c+=$1; w+=$2; s+=$3} END {printf "%.0f %.0f %.0f\n", c, w, s}'; }
sysmon=$(ls /proc/"$pid"/task | sort -n | sed -n 2p)
a=($(total)); s0=($(cat /proc/"$pid"/task/"$sysmon"/schedstat))
"$@"
b=($(total)); s1=($(cat /proc/"$pid"/task/"$sysmon"/schedstat))
awk -v n="$n" -v c=$((b[0] - a[0])) -v w=$((b[1] - a[1])) -v s=$((b[2] - a[2])) \
  -v sc=$((s1[0] - s0[0])) -v ss=$((s1[2] - s0[2])) -v thr="$(ls /proc/"$pid"/task | wc -l)" \
  'BEGIN {printf "per request: CPU %.1f µs, run-queue wait %.1f µs, slices %.2f (%d threads); sysmon CPU %.2f µs, slices %.2f\n", c/n/1e3, w/n/1e3, s/n, thr, sc/n/1e3, ss/n}'
