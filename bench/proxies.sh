#!/usr/bin/env bash
# Side-by-side throughput and latency of the Trellis proxy, nginx, HAProxy
# and Caddy on this machine, with an equivalent route table:
#   host bench.example.com + path prefix /api + header x-env: prod
#   → two weighted target groups (50/50), one backend each.
# Trellis serves that route among 54 others (other hosts and paths, each
# with a header match: a realistic table); "trellis-1" is a second Trellis
# with that one route and one backend alone.
# The backends are nginx returning a small fixed body. Each proxy is driven
# by wrk in interleaved rounds (so drift on the machine hits all of them
# alike), and the medians of rps, p50, p99 and the CPU time per request of
# the proxy and of the backend (from /proc, user + system) go into docs/benchmarks.md
# between the BEGIN/END proxies markers.
#
# Usage: [TRELLIS_BIN=path] [BENCH_CEILING=1] [WRK_THREADS=n] bench/proxies.sh [ROUNDS] [SECONDS] [CONNECTIONS]
# (defaults 5 10 64; wrk runs 2 threads unless WRK_THREADS says otherwise). BENCH_CEILING=1 adds the two minimal forwarders of
# bench/ceiling (no routing at all: upper bounds for a Go proxy on this
# machine, one per architecture) to the rounds.
# BENCH_HOLD=1 starts everything, prints the processes and holds (no rounds),
# for profiling by hand or bench/perrequest.sh (syscalls and context switches
# per request).
# Everything listens on 127.0.0.1 only; the script stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
DURATION=${2:-10}
CONNS=${3:-64}
THREADS=${WRK_THREADS:-2}

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v caddy >/dev/null || need+=(caddy)
if ((${#need[@]})); then
  echo "== installing ${need[*]} from Debian"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian's packages start services on install; stop any so they do not compete.
(service nginx stop; service haproxy stop; service caddy stop) >/dev/null 2>&1 || true

work=$(mktemp -d /tmp/trellis-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx-proxy.pid" ] && kill "$(cat "$work/nginx-proxy.pid")" 2>/dev/null || true
  [ -f "$work/nginx-backend.pid" ] && kill "$(cat "$work/nginx-backend.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

B1=18101 B2=18102 P_TRELLIS=18110 P_NGINX=18111 P_HAPROXY=18112 P_GO=18113 P_EPOLL=18114 P_CADDY=18115 P_TRELLIS1=18116

# Backends: one nginx, two ports, each naming itself.
cat >"$work/backend.conf" <<CONF
worker_processes 1;
pid $work/nginx-backend.pid;
error_log $work/backend-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$B1 backlog=4096; keepalive_requests 1000000; location / { return 200 "backend-1\n"; } }
  server { listen 127.0.0.1:$B2 backlog=4096; keepalive_requests 1000000; location / { return 200 "backend-2\n"; } }
}
CONF
nginx -c "$work/backend.conf" -p "$work"

# nginx as the proxy.
cat >"$work/nginx-proxy.conf" <<CONF
worker_processes 2;
pid $work/nginx-proxy.pid;
error_log $work/proxy-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream split { server 127.0.0.1:$B1 weight=50; server 127.0.0.1:$B2 weight=50; keepalive 256; }
  server {
    listen 127.0.0.1:$P_NGINX backlog=4096 default_server;
    return 404;
  }
  server {
    listen 127.0.0.1:$P_NGINX;
    server_name bench.example.com;
    keepalive_requests 1000000;
    location /api/ {
      if (\$http_x_env != "prod") { return 404; }
      proxy_pass http://split;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
    location = /api { return 404; }
  }
}
CONF
nginx -c "$work/nginx-proxy.conf" -p "$work"

# HAProxy.
cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$P_HAPROXY
  acl host hdr(host) -i bench.example.com
  acl api path /api
  acl api path_beg /api/
  acl env req.hdr(x-env) -m str prod
  option forwardfor
  use_backend split if host api env
  default_backend none
backend split
  balance roundrobin
  server b1 127.0.0.1:$B1 weight 50
  server b2 127.0.0.1:$B2 weight 50
backend none
  http-request return status 404
CONF
haproxy -f "$work/haproxy.cfg" -D -p "$work/haproxy.pid"
pids+=("$(cat "$work/haproxy.pid")")
declare -A procs # contender → the processes whose CPU time is its
procs[haproxy]=$(cat "$work/haproxy.pid")

# Caddy: the same route (check below makes sure it proxies: a site address
# like http://127.0.0.1:PORT does not match Host: bench.example.com, and
# Caddy then answers an empty 200 itself, many times faster than proxying); round robin over two equal backends is the 50/50
# split (Caddy 2.6 has no weights).
cat >"$work/Caddyfile" <<CONF
{
  admin off
  auto_https off
}
http://:$P_CADDY {
  bind 127.0.0.1
  @api {
    host bench.example.com
    path /api /api/*
    header x-env prod
  }
  handle @api {
    reverse_proxy 127.0.0.1:$B1 127.0.0.1:$B2 {
      lb_policy round_robin
    }
  }
  handle {
    respond 404
  }
}
CONF
XDG_DATA_HOME=$work XDG_CONFIG_HOME=$work caddy run --adapter caddyfile --config "$work/Caddyfile" >"$work/caddy.log" 2>&1 &
pids+=($!)
procs[caddy]=$!

# Trellis: the same table as Gateway API YAML, served by `trellis up`.
mkdir -p "$work/trellis"
cat >"$work/trellis/bench.yaml" <<CONF
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis-edge}
spec: {controllerName: trellis.dev/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench}
spec:
  gatewayClassName: trellis-edge
  listeners: [{name: http, protocol: HTTP, port: $P_TRELLIS}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench}
spec:
  parentRefs: [{name: bench}]
  hostnames: [bench.example.com]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{name: x-env, value: prod}]
    backendRefs:
    - {name: b1, port: 80, weight: 50}
    - {name: b2, port: 80, weight: 50}
CONF
# 54 more routes, as a service network has them: 27 on other hosts and 27
# on other paths of bench.example.com, each with a header match.
for i in $(seq 27); do
  cat >>"$work/trellis/bench.yaml" <<CONF
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: svc-$i}
spec:
  parentRefs: [{name: bench}]
  hostnames: [svc-$i.example.com]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{name: x-env, value: prod}]
    backendRefs: [{name: b1, port: 80, weight: 50}, {name: b2, port: 80, weight: 50}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: path-$i}
spec:
  parentRefs: [{name: bench}]
  hostnames: [bench.example.com]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /svc-$i}
      headers: [{name: x-tenant, value: t$i}]
    backendRefs: [{name: b2, port: 80}]
CONF
done
mkdir -p "$work/trellis-1"
sed -e "s/port: $P_TRELLIS}/port: $P_TRELLIS1}/" \
    -e '/- {name: b2, port: 80, weight: 50}/d' -e 's/- {name: b1, port: 80, weight: 50}/- {name: b1, port: 80}/' \
  "$work/trellis/bench.yaml" | awk 'BEGIN {RS="---\n"; ORS=""} !/name: (svc|path)-/ {print sep $0; sep="---\n"}' >"$work/trellis-1/bench.yaml"
for i in 1 2; do
  port=$B1; [ "$i" = 2 ] && port=$B2
  tee -a "$work/trellis-1/bench.yaml" >>"$work/trellis/bench.yaml" <<CONF
---
apiVersion: v1
kind: Service
metadata: {name: b$i}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: b$i, labels: {kubernetes.io/service-name: b$i}}
addressType: IPv4
ports: [{name: http, port: $port}]
endpoints: [{addresses: [127.0.0.1]}]
CONF
done
# TRELLIS_BIN benchmarks a prebuilt binary instead of building this tree.
bin=${TRELLIS_BIN:-$work/trellis-bin}
[ -n "${TRELLIS_BIN:-}" ] || go build -o "$bin" ./cmd/trellis
"$bin" up --config "$work/trellis" --api-listen 127.0.0.1:0 --admin-listen 127.0.0.1:18120 --log-level warn >"$work/trellis.log" 2>&1 &
pids+=($!)
procs[trellis]=$!
"$bin" up --config "$work/trellis-1" --api-listen 127.0.0.1:0 --admin-listen 127.0.0.1:18121 --log-level warn >"$work/trellis-1.log" 2>&1 &
pids+=($!)
procs[trellis-1]=$!

contenders="trellis trellis-1 nginx haproxy caddy"
if [ -n "${BENCH_CEILING:-}" ]; then
  go build -o "$work/go-minimal" ./bench/ceiling/goroutine
  go build -o "$work/epoll-minimal" ./bench/ceiling/epoll
  "$work/go-minimal" 127.0.0.1:$P_GO 127.0.0.1:$B1 127.0.0.1:$B2 >"$work/go-minimal.log" 2>&1 &
  pids+=($!)
  procs[go-minimal]=$!
  "$work/epoll-minimal" $P_EPOLL 2 $B1 $B2 >"$work/epoll-minimal.log" 2>&1 &
  pids+=($!)
  procs[epoll-minimal]=$!
  contenders="$contenders go-minimal epoll-minimal"
fi

url() { echo "http://127.0.0.1:$1/api/items"; }
check() { # name port
  for _ in $(seq 100); do
    if curl -fsS -H 'Host: bench.example.com' -H 'x-env: prod' "$(url "$2")" 2>/dev/null | grep -q backend-; then return 0; fi
    sleep 0.1
  done
  echo "$1 does not serve the route"; cat "$work"/*.log; exit 1
}
check trellis $P_TRELLIS; check trellis-1 $P_TRELLIS1; check nginx $P_NGINX; check haproxy $P_HAPROXY; check caddy $P_CADDY
if [ -n "${BENCH_CEILING:-}" ]; then check go-minimal $P_GO; check epoll-minimal $P_EPOLL; fi
# The header match must hold everywhere: without it, 404.
for p in $P_TRELLIS $P_TRELLIS1 $P_NGINX $P_HAPROXY $P_CADDY; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.example.com' "$(url $p)")
  [ "$code" = 404 ] || { echo "port $p answered $code without the header, want 404"; exit 1; }
done

# wrk's latency in ms, whatever unit it prints.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f\n", v}'; }
# nginx's workers are the master's children.
procs[nginx]=$(pgrep -d ' ' -P "$(cat "$work/nginx-proxy.pid")")
backend=$(pgrep -d ' ' -P "$(cat "$work/nginx-backend.pid")")
# cpu PID... prints the processes' CPU time so far (user + system, all
# threads) in clock ticks.
tick=$(getconf CLK_TCK)
cpu() { local t=0 p f; for p in "$@"; do read -ra f <"/proc/$p/stat"; t=$((t + f[13] + f[14])); done; echo $t; }
run() { # name port → "rps p50 p99 proxy-cpu-µs/req backend-cpu-µs/req"
  local p0 b0
  p0=$(cpu ${procs[$1]}) b0=$(cpu $backend)
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -H 'Host: bench.example.com' -H 'x-env: prod' "$(url "$2")")
  if echo "$out" | grep -q 'Non-2xx'; then echo "$1: non-2xx answers under load"; echo "$out"; exit 1; fi
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)
  p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
  per() { awk -v d="$(($2 - $1))" -v hz="$tick" -v r="$rps" -v s="$DURATION" 'BEGIN {printf "%.1f", d*1e6/hz/(r*s)}'; }
  echo "$rps $p50 $p99 $(per "$p0" "$(cpu ${procs[$1]})") $(per "$b0" "$(cpu $backend)")"
}
if [ -n "${BENCH_HOLD:-}" ]; then
  # For profiling by hand: everything stays up until this script is stopped.
  for name in $contenders; do echo "$name: pids ${procs[$name]}"; done
  echo "backend: pids $backend; ports trellis $P_TRELLIS trellis-1 $P_TRELLIS1 nginx $P_NGINX haproxy $P_HAPROXY caddy $P_CADDY; admin 18120 18121"
  echo "holding; stop with kill $$"
  while :; do sleep 1; done
fi
declare -A results
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  for name in $contenders; do
    case $name in trellis) port=$P_TRELLIS;; trellis-1) port=$P_TRELLIS1;; caddy) port=$P_CADDY;; nginx) port=$P_NGINX;; haproxy) port=$P_HAPROXY;; go-minimal) port=$P_GO;; epoll-minimal) port=$P_EPOLL;; esac
    res=$(run $name $port)
    echo "round $r $name: rps p50ms p99ms cpu-µs/req backend-cpu-µs/req = $res"
    results[$name]+="$res"$'\n'
  done
done

load1=$(cut -d' ' -f1-3 /proc/loadavg)
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
col() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF {print $c}' | median; }
table=$(mktemp)
{
  echo "<!-- BEGIN proxies (generated by bench/proxies.sh) -->"
  echo "Run $(date -u +%Y-%m-%d): \`${BENCH_CEILING:+BENCH_CEILING=1 }${WRK_THREADS:+WRK_THREADS=$WRK_THREADS }bench/proxies.sh $ROUNDS $DURATION $CONNS\` — $ROUNDS interleaved rounds of"
  echo "\`wrk -t$THREADS -c$CONNS -d${DURATION}s\` per proxy; medians. nginx $(nginx -v 2>&1 | sed 's/.*\///'), HAProxy $(haproxy -v | head -1 | awk '{print $3}'), Caddy $(caddy version | awk '{print $1}'), $(go version | awk '{print $3}')."
  echo "Load average (1, 5, 15 min) before the rounds: $load0; after: $load1."
  echo
  echo "| proxy | rps | p50 (ms) | p99 (ms) | proxy CPU per request (µs) | backend CPU per request (µs) |"
  echo "|---|---|---|---|---|---|"
  for name in $contenders; do
    echo "| $name | $(col $name 1) | $(col $name 2) | $(col $name 3) | $(col $name 4) | $(col $name 5) |"
  done
  echo
  echo "Trellis / nginx rps ratio: $(awk -v t="$(col trellis 1)" -v n="$(col nginx 1)" 'BEGIN {printf "%.2f", t/n}')×;" \
       "p99 Trellis $(col trellis 3) ms vs nginx $(col nginx 3) ms;" \
       "Trellis / Caddy rps ratio: $(awk -v t="$(col trellis 1)" -v n="$(col caddy 1)" 'BEGIN {printf "%.2f", t/n}')×."
  echo "<!-- END proxies -->"
} >"$table"
cat "$table"
doc=docs/benchmarks.md
if grep -q 'BEGIN proxies' "$doc"; then
  python3 - "$doc" "$table" <<'PY'
import re, sys
doc, table = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
s = open(doc).read()
s = re.sub(r"<!-- BEGIN proxies.*?<!-- END proxies -->", lambda m: table, s, flags=re.S)
open(doc, "w").write(s)
PY
else
  printf '\n## Proxy throughput: Trellis, nginx, HAProxy, Caddy\n\n%s\n' "$(cat "$table")" >>"$doc"
fi
rm -f "$table"
