#!/usr/bin/env bash
# Issue 15's memory goals for the processes apart: "a proxy alone under
# 400 MB; the server alone under 300 MB (store on disk)". bench/scale/run.sh
# measures the all-in-one `trellis up`; this script takes the same generated
# configuration (N routes to N Services of M endpoints), lets `trellis up`
# write it into an on-disk store, stops it, and then runs `trellis server` on
# that store and `trellis proxy` following it, as two processes. Once the
# proxy serves the last route it prints each process's resident memory (VmRSS,
# and VmHWM, the peak) and CPU over an idle window (the proxy health-checks
# every target at the Lattice defaults).
#
# Like run.sh it runs in a network namespace of its own (unshare -n, as root),
# where one echo listener on 0.0.0.0:9000 answers every 127.x.y.z target.
#
# After the idle window it scrapes the proxy's /metrics three times (size and
# time of each) and, with HEAPPROFILE=FILE set, saves a heap profile of the
# proxy there (after a collection: what is live). PROXY_BIN=FILE runs that
# binary as the proxy (an A/B against another build on the same store),
# TRELLIS_BIN=FILE runs that one as `up` and the server, and PROXY_ARGS adds
# flags to the proxy (such as --memory-limit 200MiB).
#
# Usage: bench/scale/split.sh [SERVICES] [ENDPOINTS] [IDLE_SECONDS] (defaults 10000 10 20).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-10000}
M=${2:-10}
IDLE=${3:-20}
. bench/scale/prepare.sh split
HEAPPROFILE=${HEAPPROFILE:-}
TRELLIS=${TRELLIS_BIN:-$out/trellis}
PROXY_BIN=${PROXY_BIN:-$out/trellis}
PROXY_ARGS=${PROXY_ARGS:-}
export N M IDLE out HEAPPROFILE TRELLIS PROXY_BIN PROXY_ARGS
unshare -n bash -euo pipefail -c '
ip link set lo up
pids=()
trap "kill \${pids[*]} 2>/dev/null || true; wait 2>/dev/null || true" EXIT
"$out/scale" gen -services "$N" -endpoints "$M" -dir "$out/cfg"
"$out/trellis" echo --listen 0.0.0.0:9000 --log-level warn & pids+=($!)

# served HOST: whether the proxy on 127.0.0.1:8080 answers HOST with 200.
served() { [ "$(curl -s -o /dev/null -w "%{http_code}" -H "Host: $1" http://127.0.0.1:8080/ || true)" = 200 ]; }
last=r-$((N - 1)).example.com
# wait_served HOST SECONDS: poll until served; fail after SECONDS.
wait_served() {
  local end=$((SECONDS + $2))
  until served "$1"; do
    [ $SECONDS -lt $end ] || { echo "split: $1 not served within $2 s" >&2; exit 1; }
    sleep 0.1
  done
}
# mem PID: VmRSS, VmHWM (the peak), RssAnon and RssFile (the binary, the mapped store) in MiB.
mem() { awk "/^VmRSS|^VmHWM|^RssAnon|^RssFile/ {printf \"%s %.0f MiB, \", \$1, \$2/1024}" /proc/$1/status; }
# ticks PID: user+system clock ticks so far.
ticks() { awk "{print \$14 + \$15}" /proc/$1/stat; }

"$TRELLIS" up --config "$out/cfg" --data "$out/data" --log-level warn >"$out/up.log" 2>&1 & up=$!; pids+=($up)
wait_served "$last" 600
kill -TERM $up; wait $up || true
echo "store on disk: $(du -sh "$out/data" | cut -f1)"

"$TRELLIS" server --data "$out/data" --tokens "$(cat "$out/data/api-token")=local" --log-level warn & server=$!; pids+=($server)
start=$(date +%s.%N)
"$PROXY_BIN" proxy --token-file "$out/data/api-token" --cluster local --log-level warn $PROXY_ARGS & proxy=$!; pids+=($proxy)
wait_served "$last" 600
echo "proxy started → last route served: $(awk -v s=$start -v e=$(date +%s.%N) "BEGIN {printf \"%.1f s\", e - s}")"
sleep 5
hz=$(getconf CLK_TCK)
s0=$(ticks $server); p0=$(ticks $proxy)
sleep "$IDLE"
s1=$(ticks $server); p1=$(ticks $proxy)
echo "server, N=$N: $(mem $server)idle CPU $(awk -v a=$s0 -v b=$s1 -v h=$hz -v t=$IDLE "BEGIN {printf \"%.3f core\", (b - a) / h / t}")"
echo "proxy,  N=$N: $(mem $proxy)idle CPU $(awk -v a=$p0 -v b=$p1 -v h=$hz -v t=$IDLE "BEGIN {printf \"%.3f core\", (b - a) / h / t}")"
echo "store on disk after the idle window: $(du -sh "$out/data" | cut -f1)"
for i in 1 2 3; do
  curl -s -o /dev/null -w "proxy /metrics: %{size_download} bytes in %{time_total} s\n" http://127.0.0.1:9901/metrics
done
if [ -n "$HEAPPROFILE" ]; then
  curl -s -o "$HEAPPROFILE" "http://127.0.0.1:9901/debug/pprof/heap?gc=1"
  echo "proxy heap profile: $HEAPPROFILE"
fi
'
