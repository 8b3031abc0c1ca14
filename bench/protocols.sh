#!/usr/bin/env bash
# HTTPS, HTTP/2 and gRPC through Trellis, nginx and HAProxy, on the setup of
# bench/proxies.sh (bench/contenders.sh) plus, for each of the three:
#   - a TLS 1.3 listener (one ECDSA P-256 certificate made here) with the
#     same route as the plain benchmark (host bench.example.com, prefix
#     /api, header x-env: prod, 50/50 over the two nginx backends), ALPN h2
#     and http/1.1;
#   - an h2c listener with a gRPC route (authority grpc.example.com) to one
#     Go gRPC backend (`openloop grpc-server`, grpc.testing.BenchmarkService).
# Each round runs, per proxy in turn:
#   tls-new      new TLS connections, one request each (`openloop tls -c 8`),
#                the client offering Go's default key exchange groups
#                (X25519MLKEM768 first, then X25519): each proxy picks the
#                group it prefers, reported in the table
#   tls-resumed  the same, resuming the previous session (TLS 1.3 tickets)
#   tls-new-x25519, tls-resumed-x25519  the same with a client that offers
#                X25519 alone, so that every proxy does the same key exchange
#   https        requests on keep-alive TLS connections (wrk -t2 -c64)
#   h2           HTTP/2 over TLS (h2load -c16 -m10; p50/p99 from its log)
#   grpc-unary   unary calls, 64 in flight on 4 connections (`openloop grpc`)
#   grpc-stream  ping-pong messages on 64 streams over 4 connections
# and the medians of ROUNDS rounds (rate, p50, p99, proxy CPU per request) go
# into docs/benchmarks.md between the BEGIN/END protocols markers.
#
# BENCH_HOLD=1 starts everything, prints the processes and ports and holds
# (no rounds), for profiling by hand.
#
# Usage: [TRELLIS_BIN=path] [BENCH_PORT_BASE=n] [BENCH_NO_DOC=1] [BENCH_TESTS="tls-new https ..."]
#        [BENCH_PROTOS="trellis ..."] bench/protocols.sh [ROUNDS] [SECONDS]
# (defaults 5 5; BENCH_TESTS runs only those tests and BENCH_PROTOS only those
# proxies, and then no table is written into docs/benchmarks.md). Installs
# Debian's nghttp2-client (h2load) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
DURATION=${2:-5}

. bench/contenders.sh
B3=$((pb + 3))
P_TRELLIS_TLS=$((pb + 30)) P_NGINX_TLS=$((pb + 31)) P_HAPROXY_TLS=$((pb + 32))
P_TRELLIS_GRPC=$((pb + 33)) P_NGINX_GRPC=$((pb + 34)) P_HAPROXY_GRPC=$((pb + 35))
BENCH_NEED="h2load:nghttp2-client openssl"

certs=$(mktemp -d /tmp/trellis-bench-certs.XXXXXX)
rm_certs() { rm -rf "$certs"; }
bench_cleanup_hooks+=(rm_certs)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.example.com -addext 'subjectAltName=DNS:bench.example.com,DNS:grpc.example.com' \
  -keyout "$certs/key.pem" -out "$certs/cert.pem" 2>/dev/null
cat "$certs/cert.pem" "$certs/key.pem" >"$certs/both.pem"

NGINX_EXTRA="
  upstream grpcback { server 127.0.0.1:$B3; keepalive 64; }
  ssl_certificate $certs/cert.pem;
  ssl_certificate_key $certs/key.pem;
  ssl_protocols TLSv1.3;
  ssl_session_cache shared:SSL:10m;
  server {
    listen 127.0.0.1:$P_NGINX_TLS ssl http2 backlog=4096;
    server_name bench.example.com;
    keepalive_requests 1000000;
    location /api/ {
      if (\$http_x_env != \"prod\") { return 404; }
      proxy_pass http://split;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
  server {
    listen 127.0.0.1:$P_NGINX_GRPC http2 backlog=4096;
    server_name grpc.example.com;
    keepalive_requests 1000000;
    location / { grpc_pass grpc://grpcback; }
  }"

HAPROXY_EXTRA="
frontend fe_tls
  bind 127.0.0.1:$P_HAPROXY_TLS ssl crt $certs/both.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3
  # An HTTP/2 authority may carry the port, which nginx and Trellis ignore.
  acl host hdr_reg(host) -i ^bench\\.example\\.com(:[0-9]+)?\$
  acl api path /api
  acl api path_beg /api/
  acl env req.hdr(x-env) -m str prod
  option forwardfor
  use_backend split if host api env
  default_backend none
frontend fe_grpc
  bind 127.0.0.1:$P_HAPROXY_GRPC proto h2
  default_backend grpcback
backend grpcback
  server g1 127.0.0.1:$B3 proto h2"

TRELLIS_EXTRA="apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: trellis-edge
  listeners:
  - {name: https, protocol: HTTPS, port: $P_TRELLIS_TLS, tls: {certificateRefs: [{name: bench-cert}]}}
  - {name: grpc, protocol: HTTP, port: $P_TRELLIS_GRPC}
---
$(bench_tls_secret "$certs")
---
$(bench_route bench-tls '{name: edge, sectionName: https}')
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc}
spec:
  parentRefs: [{name: edge, sectionName: grpc}]
  hostnames: [grpc.example.com]
  rules:
  - backendRefs: [{name: grpc, port: 80}]
---
$(bench_backend grpc $B3 grpc)"

bench_start
go build -o "$work/openloop" ./bench/openloop
"$work/openloop" grpc-server -listen 127.0.0.1:$B3 >"$work/grpc-server.log" 2>&1 &
pids+=($!)
grpc_backend=$!

tls_port() { case $1 in trellis) echo $P_TRELLIS_TLS;; nginx) echo $P_NGINX_TLS;; haproxy) echo $P_HAPROXY_TLS;; esac; }
grpc_port() { case $1 in trellis) echo $P_TRELLIS_GRPC;; nginx) echo $P_NGINX_GRPC;; haproxy) echo $P_HAPROXY_GRPC;; esac; }
protos=${BENCH_PROTOS:-trellis nginx haproxy}
tests=${BENCH_TESTS:-tls-new tls-resumed tls-new-x25519 tls-resumed-x25519 https h2 grpc-unary grpc-stream}
[ -z "${BENCH_TESTS:-}${BENCH_PROTOS:-}" ] || BENCH_NO_DOC=1

# Each contender must serve every protocol before the rounds.
for name in $protos; do
  ok=""
  for _ in $(seq 100); do
    if curl -fsSk --http2 --resolve "bench.example.com:$(tls_port $name):127.0.0.1" -H 'x-env: prod' \
         -o "$work/check.out" -w '%{http_version}' "https://bench.example.com:$(tls_port $name)/api/items" 2>/dev/null | grep -q '^2' &&
       grep -q backend- "$work/check.out" &&
       "$work/openloop" grpc -addr 127.0.0.1:$(grpc_port $name) -d 100ms -w 1 -c 1 >/dev/null 2>&1; then
      ok=1; break
    fi
    sleep 0.1
  done
  if [ -z "$ok" ]; then
    echo "$name does not serve HTTP/2 over TLS and gRPC:"
    curl -isSk --http2 --resolve "bench.example.com:$(tls_port $name):127.0.0.1" -H 'x-env: prod' "https://bench.example.com:$(tls_port $name)/api/items" || true
    "$work/openloop" grpc -addr 127.0.0.1:$(grpc_port $name) -d 100ms -w 1 -c 1 || true
    exit 1
  fi
done

if [ -n "${BENCH_HOLD:-}" ]; then
  # For profiling by hand: everything stays up until this script is stopped.
  for name in $protos; do echo "$name: pids ${procs[$name]} tls $(tls_port $name) grpc $(grpc_port $name)"; done
  echo "grpc backend: pid $grpc_backend; trellis admin (pprof) $A_TRELLIS; openloop $work/openloop"
  echo "holding; stop with kill $$"
  while :; do sleep 1; done
fi

kv() { tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }
# run TEST NAME → "rate p50 p99 extra"
run() {
  local port out f
  case $1 in
  tls-*)
    out=$("$work/openloop" tls -addr 127.0.0.1:$(tls_port $2) -H 'x-env: prod' -c 8 -d "${DURATION}s" \
      $(case $1 in tls-resumed*) echo -resume;; esac) $(case $1 in *-x25519) echo -groups X25519;; esac))
    [ "$(echo "$out" | kv errors)" = 0 ] || { echo "$2 $1: errors: $out" >&2; exit 1; }
    echo "$(echo "$out" | kv rate) $(echo "$out" | kv p50) $(echo "$out" | kv p99) $(echo "$out" | kv resumed),$(echo "$out" | kv group)" ;;
  https)
    out=$(wrk -t2 -c64 -d"${DURATION}s" --latency -H 'Host: bench.example.com' -H 'x-env: prod' "https://127.0.0.1:$(tls_port $2)/api/items")
    if echo "$out" | grep -q -E 'Non-2xx|Socket errors'; then echo "$2 https: errors under load: $out" >&2; exit 1; fi
    echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="50%" {print $2}' | to_ms) $(echo "$out" | awk '$1=="99%" {print $2}' | to_ms) -" ;;
  h2)
    f=$work/h2load.log
    out=$(h2load -t1 -c16 -m10 -D "$DURATION" --warm-up-time=1 --connect-to=127.0.0.1:$(tls_port $2) -H 'x-env: prod' --log-file="$f" https://bench.example.com/api/items)
    echo "$out" | grep -q ' 0 failed, 0 errored' || { echo "$2 h2: failures: $out" >&2; exit 1; }
    echo "$(echo "$out" | awk '/^finished in/ {print $4}') $(awk '{print $3}' "$f" | sort -n | awk '{a[NR]=$1} END {printf "%.3f %.3f", a[int(NR*0.5)+1]/1000, a[int(NR*0.99)+1]/1000}') -"
    rm -f "$f" ;;
  grpc-unary | grpc-stream)
    out=$("$work/openloop" grpc -addr 127.0.0.1:$(grpc_port $2) -c 4 -w 64 -d "${DURATION}s" $([ "$1" = grpc-stream ] && echo -stream))
    [ "$(echo "$out" | kv errors)" = 0 ] || { echo "$2 $1: errors: $out" >&2; exit 1; }
    echo "$(echo "$out" | kv rate) $(echo "$out" | kv p50) $(echo "$out" | kv p99) -" ;;
  esac
}

declare -A results
load0=$(load_avg)
for r in $(seq "$ROUNDS"); do
  for t in $tests; do
    for name in $protos; do
      c0=$(cpu ${procs[$name]})
      res=$(run $t $name)
      c1=$(cpu ${procs[$name]})
      set -- $res
      # h2load's warm-up second is in the CPU time, not in its rate.
      secs=$DURATION
      [ "$t" = h2 ] && secs=$((DURATION + 1))
      res="$1 $2 $3 $(per_req "$c0" "$c1" "$1" "$secs") $4"
      echo "round $r $t $name: rate p50ms p99ms cpu-µs/op extra = $res"
      results[$t/$name]+="$res"$'\n'
    done
  done
done
load1=$(load_avg)

ratio() { awk -v t="$(col "$1/trellis" 1)" -v n="$(col "$1/nginx" 1)" 'BEGIN {if (n > 0) printf "%.2f×", t/n; else print "-"}'; }
{
  echo "<!-- BEGIN protocols (generated by bench/protocols.sh) -->"
  echo "Run $(date -u +%Y-%m-%d): \`bench/protocols.sh $ROUNDS $DURATION\` — $ROUNDS interleaved rounds of ${DURATION} s per test and proxy; medians."
  echo "$(versions), $(h2load --version | awk '{print $2}'). Load average (1, 5, 15 min) before: $load0; after: $load1."
  echo
  echo "| test | proxy | per second | p50 (ms) | p99 (ms) | proxy CPU per operation (µs) | Trellis / nginx |"
  echo "|---|---|---|---|---|---|---|"
  for t in $tests; do
    for name in $protos; do
      extra="" last=$(printf '%s' "${results[$t/$name]}" | awk 'NF {print $5}' | tail -1)
      case $t in
      tls-resumed*) extra=" (resumed: ${last%,*}; ${last#*,})" ;;
      tls-*) extra=" (${last#*,})" ;;
      esac
      echo "| $t | $name | $(col "$t/$name" 1)$extra | $(col "$t/$name" 2) | $(col "$t/$name" 3) | $(col "$t/$name" 4) | $([ $name = trellis ] && ratio $t) |"
    done
  done
  echo "<!-- END protocols -->"
} | bench_report protocols '## HTTPS, HTTP/2 and gRPC: Trellis, nginx, HAProxy'
