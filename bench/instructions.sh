#!/usr/bin/env bash
# User-space instructions per request of a forwarder, counted by callgrind:
# a measure that other processes on the machine do not inflate, unlike CPU
# time (this machine kind has no hardware counters for perf). Each
# contender forwards GET /api/items (Host bench.example.com, x-env: prod)
# to an nginx backend; after a warm-up the counts are zeroed, wrk drives
# REQUESTS-ish requests (a fixed time, counted by wrk), and the
# instructions executed in that window are divided by wrk's request count.
# The kernel's share (syscalls, loopback TCP) is not counted.
#
# Contenders: trellis (one route, one backend: trellis-1 of
# bench/proxies.sh), trellis-table (bench/proxies.sh's 55-route table,
# header matches, two weighted target groups: its trellis), go-minimal (bench/ceiling/goroutine), and the backend
# itself, behind Trellis's head and behind a plain one (what the
# forwarding and identity headers cost a target); trellis-https and
# trellis-h2, the same route on a TLS listener (a certificate made here,
# ALPN h2 and http/1.1), driven by wrk (HTTP/1.1 over TLS, keep-alive) and
# by h2load (-c16 -m10, bench/protocols.sh's shape; 1000 requests a second
# asked for SECONDS: h2load runs by count, since a timed run closes its
# connections with responses in flight and the SIGPIPEs of the proxy's
# writes to them crash callgrind).
#
# Usage: [TRELLIS_BIN=path] [INSTR_KEEP=dir] [INSTR_PORT_BASE=n] bench/instructions.sh [SECONDS] [CONTENDERS...]
# (INSTR_KEEP: the callgrind profile of each contender is copied there, as
# cg.NAME, for callgrind_annotate)
# (defaults: 5 s, "trellis go-minimal backend"). Needs valgrind, nginx, wrk
# (and openssl, h2load for trellis-https and trellis-h2).
# Everything listens on 127.0.0.1; the script stops what it started.
# The Go programs run with GODEBUG=cpu.rdtscp=off: valgrind 3.19 does not
# know RDTSCP, which the runtime's lock spinning reads the clock with.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-5}
shift || true
contenders=("$@")
((${#contenders[@]})) || contenders=(trellis go-minimal backend)
for c in valgrind nginx wrk; do command -v $c >/dev/null || { echo "needs $c"; exit 1; }; done

# The YAML of the table and the cleanup of bench/contenders.sh (not its
# contenders: only the ones below run, under callgrind).
. bench/contenders.sh
work=$(mktemp -d /tmp/trellis-instr.XXXXXX)
trap bench_cleanup EXIT
# Ports: INSTR_PORT_BASE (default 18200) plus 1..19.
ib=${INSTR_PORT_BASE:-18200}
B=$((ib + 1)) B2=$((ib + 2)) P=$((ib + 10)) BV=$((ib + 11)) PT=$((ib + 12)) PTT=$((ib + 13))

backend_conf() { # port file [second-port]
  local second=
  [ -z "${3:-}" ] || second="server { listen 127.0.0.1:$3 backlog=4096; keepalive_requests 1000000; location / { return 200 \"backend-2\\n\"; } }"
  cat >"$2" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $2.pid;
error_log $work/backend-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:$1 backlog=4096; keepalive_requests 1000000; location / { return 200 "backend-1\n"; } }
  $second
}
CONF
}
backend_conf $B "$work/backend.conf" $B2
nginx -c "$work/backend.conf" -p "$work" &
pids+=($!)

mkdir -p "$work/trellis"
cat >"$work/trellis/bench.yaml" <<CONF
$(bench_gateway bench $P)
---
$(bench_route bench '{name: bench}' '[{name: b1, port: 80}]')
---
$(bench_backend b1 $B)
CONF
if [[ " ${contenders[*]} " == *" trellis-h"* ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench.example.com \
    -addext subjectAltName=DNS:bench.example.com -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  cat >>"$work/trellis/bench.yaml" <<CONF
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: trellis-edge
  listeners: [{name: https, protocol: HTTPS, port: $PT, tls: {certificateRefs: [{name: bench-cert}]}}]
---
$(bench_route bench-tls '{name: edge}' '[{name: b1, port: 80}]')
---
$(bench_tls_secret "$work")
CONF
fi
mkdir -p "$work/trellis-table"
{
  bench_table $PTT
  echo ---; bench_backend b1 $B
  echo ---; bench_backend b2 $B2
} >"$work/trellis-table/bench.yaml"
bin=${TRELLIS_BIN:-$work/trellis-bin}
[ -n "${TRELLIS_BIN:-}" ] || go build -o "$bin" ./cmd/trellis
go build -o "$work/go-minimal" ./bench/ceiling/goroutine

# The head Trellis sends a target (see docs/reference/headers.md), for the
# backend's own count.
trellis_head=(-H 'User-Agent: wrk' -H 'Accept: */*' -H 'X-Forwarded-For: 127.0.0.1'
  -H 'X-Forwarded-Host: bench.example.com' -H 'X-Trellis-Request-Id: cdf737d8-6377-47e3-9cb2-87d3eaa252d5'
  -H 'X-Trellis-Network: SourceCluster=local; Network=bench-default'
  -H 'X-Trellis-Target: Service=bench-default.bench-default; Network=bench-default; TargetGroup=b1-default-80'
  -H 'X-Forwarded-Proto: http' -H 'X-Forwarded-For-Proto: http' -H 'X-Forwarded-Port: 18116'
  -H 'X-Forwarded-For-Port: 18116' -H 'X-Trellis-Identity: Type=Anonymous')

# drive KIND PORT SECONDS WRK-HEADERS...: requests KIND (http, https, h2)
# to PORT for about SECONDS; prints how many were answered, or fails.
drive() {
  local kind=$1 port=$2 secs=$3 out; shift 3
  case $kind in
  h2)
    out=$(h2load -t1 -c16 -m10 -n $((secs * 1000)) --connect-to=127.0.0.1:$port -H 'x-env: prod' https://bench.example.com/api/items)
    echo "$out" | grep -q ' 0 failed, 0 errored' || { echo "h2load: failures: $out" >&2; return 1; }
    echo "$out" | awk '/^requests:/ {print $8}' ;;
  *)
    out=$(wrk -t1 -c4 -d"${secs}s" -H 'Host: bench.example.com' -H 'x-env: prod' "$@" "$kind://127.0.0.1:$port/api/items")
    if echo "$out" | grep -q 'Non-2xx'; then echo "wrk: non-2xx answers" >&2; return 1; fi
    echo "$out" | awk '/requests in/ {print $1}' ;;
  esac
}

# measure NAME [KIND] PORT WRK-HEADERS... -- CMD...: Ir per request of CMD
# under callgrind, driven by KIND (drive; http when not given).
measure() {
  local name=$1 kind=http; shift
  case $1 in http | https | h2) kind=$1; shift ;; esac
  local port=$1; shift
  local hdrs=()
  while [ "$1" != -- ]; do hdrs+=("$1"); shift; done
  shift
  GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off valgrind --tool=callgrind --callgrind-out-file="$work/cg.$name" --dump-instr=no "$@" >"$work/$name.log" 2>&1 &
  local vp=$!
  pids+=($vp)
  local check=(-H 'Host: bench.example.com' "http://127.0.0.1:$port/api/items")
  [ "$kind" = http ] || check=(-k --resolve "bench.example.com:$port:127.0.0.1" "https://bench.example.com:$port/api/items")
  for _ in $(seq 300); do
    curl -fs -H 'x-env: prod' "${check[@]}" 2>/dev/null | grep -q backend- && break
    sleep 0.2
  done
  drive "$kind" "$port" 2 "${hdrs[@]}" >/dev/null
  callgrind_control -z $vp >/dev/null 2>&1
  local reqs ir
  reqs=$(drive "$kind" "$port" "$DURATION" "${hdrs[@]}") || exit 1
  callgrind_control -d $vp >/dev/null 2>&1
  kill $vp; wait $vp 2>/dev/null || true
  [ -z "${INSTR_KEEP:-}" ] || { mkdir -p "$INSTR_KEEP"; cp "$work/cg.$name.1" "$INSTR_KEEP/cg.$name"; }
  ir=$(callgrind_annotate "$work/cg.$name.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  awk -v n="$name" -v i="$ir" -v q="$reqs" 'BEGIN {printf "%s: %.0f instructions per request (%d requests)\n", n, i/q, q}'
}

for c in "${contenders[@]}"; do
  case $c in
  trellis) measure trellis $P -- "$bin" up --config "$work/trellis" --api-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-level warn ;;
  trellis-table) measure trellis-table $PTT -- "$bin" up --config "$work/trellis-table" --api-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-level warn ;;
  trellis-https | trellis-h2)
    measure $c "${c#trellis-}" $PT -- "$bin" up --config "$work/trellis" --api-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-level warn ;;
  go-minimal) measure go-minimal $P -- "$work/go-minimal" 127.0.0.1:$P 127.0.0.1:$B ;;
  backend)
    backend_conf $BV "$work/backend-v.conf"
    measure backend-plain-head $BV -- nginx -c "$work/backend-v.conf" -p "$work"
    measure backend-trellis-head $BV "${trellis_head[@]}" -- nginx -c "$work/backend-v.conf" -p "$work" ;;
  *) echo "unknown contender $c"; exit 2 ;;
  esac
done
