# Shared setup of the proxy benchmarks (sourced by bench/proxies.sh,
# bench/openloop.sh, bench/protocols.sh; bench/instructions.sh takes only
# its YAML and cleanup helpers): the nginx backend and the
# contenders (Trellis with 55 routes, "trellis-1" with one, nginx, HAProxy,
# Caddy and, with BENCH_CEILING=1, the two minimal forwarders of
# bench/ceiling), all in front of it with the same route:
#   host bench.example.com + path prefix /api + header x-env: prod
#   → two weighted target groups (50/50), one backend each.
# Everything listens on 127.0.0.1 only; an EXIT trap stops what was started
# (scripts add their own processes to the pids array, or their own steps to
# the bench_cleanup_hooks array).
#
# Hooks, set before bench_start:
#   NGINX_EXTRA     text put inside nginx's http { } (more servers)
#   HAPROXY_EXTRA   text appended to haproxy.cfg (more frontends)
#   TRELLIS_EXTRA   YAML documents appended to the 55-route Trellis's config
#   TRELLIS_EXTRA_DIR  a directory whose *.yaml files join that config
#   HAPROXY_FE_EXTRA   lines put in HAProxy's frontend before its default
#   HAPROXY_MASTER_WORKER=1  HAProxy in master-worker mode (reload: kill -USR2 $haproxy_master)
#   CADDY_ADMIN     Caddy's admin address (default: admin off)
#   BENCH_CHECK_TRIES  how many times (0.1 s apart) to try each contender at start (100)
#   BENCH_NEED      more commands to install (command:debian-package ...)
#   BENCH_TRELLIS_PROCS=N  one more contender, "trellis-pN": trellis-1's table
#                   served by `trellis up --procs N` (Go code on N threads at once)
#   BENCH_TRELLIS_BASE=path  two more contenders, "trellis-1-base": trellis-1's
#                   table, and "trellis-base": trellis's (55 routes),
#                   table served by that trellis binary (a before/after in one run)
# BENCH_NO_DOC=1 runs without writing docs/benchmarks.md (smoke runs).
# After bench_start: $work, $bin (the trellis binary), procs[NAME] (the
# processes whose CPU time is the contender's), $backend (the backend's
# workers), $contenders, and the functions below.

# Ports: BENCH_PORT_BASE (default 18100) plus 1..39, so that two runs on
# one machine can use different ranges (keep them below the ephemeral range,
# /proc/sys/net/ipv4/ip_local_port_range, where outgoing connections take
# their ports).
pb=${BENCH_PORT_BASE:-18100}
B1=$((pb + 1)) B2=$((pb + 2)) P_TRELLIS=$((pb + 10)) P_NGINX=$((pb + 11)) P_HAPROXY=$((pb + 12)) P_GO=$((pb + 13)) P_EPOLL=$((pb + 14)) P_CADDY=$((pb + 15)) P_TRELLIS1=$((pb + 16))
A_TRELLIS=$((pb + 20)) A_TRELLIS1=$((pb + 21))
P_TRELLISP=$((pb + 17)) A_TRELLISP=$((pb + 23)) P_TRELLISB=$((pb + 18)) A_TRELLISB=$((pb + 24))
P_TRELLISBT=$((pb + 19)) A_TRELLISBT=$((pb + 25))

# bench_need CMD[:PACKAGE]... installs the missing ones from Debian.
bench_need() {
  local need=() c
  for c in "$@"; do
    command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
  done
  if ((${#need[@]})); then
    echo "== installing ${need[*]} from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

pids=()
bench_cleanup_hooks=()
bench_cleanup() {
  local h p
  for h in "${bench_cleanup_hooks[@]}"; do $h || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${work:-}" ]; then
    for p in "$work"/nginx-*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
    [ -f "$work/haproxy.pid" ] && kill "$(cat "$work/haproxy.pid")" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  [ -n "${work:-}" ] && rm -rf "$work"
}

declare -A procs # contender → the processes whose CPU time is its

# bench_route NAME PARENTREF [BACKENDREFS] prints the HTTPRoute of the
# benchmarked table: /api with x-env: prod on bench.example.com, split
# evenly between the two backends unless BACKENDREFS says otherwise.
bench_route() {
  local refs=${3-}
  [[ -n $refs ]] || refs='[{name: b1, port: 80, weight: 50}, {name: b2, port: 80, weight: 50}]'
  cat <<CONF
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: $1}
spec:
  parentRefs: [$2]
  hostnames: [bench.example.com]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{name: x-env, value: prod}]
    backendRefs: $refs
CONF
}

# bench_tls_secret DIR prints the Secret bench-cert of DIR's cert.pem and
# key.pem.
bench_tls_secret() {
  cat <<CONF
apiVersion: v1
kind: Secret
metadata: {name: bench-cert}
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 "$1/cert.pem")
  tls.key: $(base64 -w0 "$1/key.pem")
CONF
}

# bench_gateway NAME PORT prints the GatewayClass trellis-edge and Gateway
# NAME of it with one HTTP listener on PORT.
bench_gateway() {
  cat <<CONF
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis-edge}
spec: {controllerName: trellis.dev/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: $1}
spec:
  gatewayClassName: trellis-edge
  listeners: [{name: http, protocol: HTTP, port: $2}]
CONF
}

# bench_backend NAME PORT [PORTNAME] prints Service NAME (port 80, named
# PORTNAME, default http) and its EndpointSlice: one endpoint,
# 127.0.0.1:PORT.
bench_backend() {
  cat <<CONF
apiVersion: v1
kind: Service
metadata: {name: $1}
spec: {ports: [{name: ${3:-http}, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: ${3:-http}, port: $2}]
endpoints: [{addresses: [127.0.0.1]}]
CONF
}

# bench_table PORT prints Trellis's benchmarked table (without the
# Services b1 and b2): Gateway bench on PORT, the route of bench_route and
# 54 more, as a service network has them: 27 on other hosts and 27 on other
# paths of bench.example.com, each with a header match.
bench_table() {
  bench_gateway bench "$1"
  echo ---
  bench_route bench '{name: bench}'
  local i
  for i in $(seq 27); do
    cat <<CONF
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
}

# bench_nginx NAME WORKERS starts nginx with WORKERS worker processes on
# $work/NAME.conf, which it writes: its pid in $work/NAME.pid, its errors
# in $work/NAME-error.log, and an http block (no access log) of what it
# reads from stdin.
bench_nginx() {
  {
    cat <<CONF
worker_processes $2;
pid $work/$1.pid;
error_log $work/$1-error.log;
events { worker_connections 4096; }
http {
  access_log off;
CONF
    cat
    echo "}"
  } >"$work/$1.conf"
  nginx -c "$work/$1.conf" -p "$work"
}

bench_start() {
  bench_need nginx haproxy wrk caddy ${BENCH_NEED:-}
  # Debian's packages start services on install; stop any so they do not compete.
  (service nginx stop; service haproxy stop; service caddy stop) >/dev/null 2>&1 || true
  work=$(mktemp -d /tmp/trellis-bench.XXXXXX)
  trap bench_cleanup EXIT
  # Say which command failed before set -e ends the script.
  set -E
  trap 'echo "bench: line $LINENO failed: $BASH_COMMAND" >&2' ERR
  trap 'exit 1' INT TERM

  # Backends: one nginx, two ports, each naming itself.
  bench_nginx nginx-backend 1 <<CONF
  server { listen 127.0.0.1:$B1 backlog=4096; keepalive_requests 1000000; location / { return 200 "backend-1\n"; } }
  server { listen 127.0.0.1:$B2 backlog=4096; keepalive_requests 1000000; location / { return 200 "backend-2\n"; } }
CONF

  # nginx as the proxy.
  bench_nginx nginx-proxy 2 <<CONF
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
${NGINX_EXTRA:-}
CONF

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
${HAPROXY_FE_EXTRA:-}
  default_backend none
backend split
  balance roundrobin
  server b1 127.0.0.1:$B1 weight 50
  server b2 127.0.0.1:$B2 weight 50
backend none
  http-request return status 404
${HAPROXY_EXTRA:-}
CONF
  if [ -n "${HAPROXY_MASTER_WORKER:-}" ]; then
    haproxy -W -f "$work/haproxy.cfg" -D -p "$work/haproxy.pid" 2>>"$work/haproxy.log" || { cat "$work/haproxy.log"; exit 1; }
    haproxy_master=$(cat "$work/haproxy.pid")
    procs[haproxy]=$(pgrep -d ' ' -P "$haproxy_master")
  else
    haproxy -f "$work/haproxy.cfg" -D -p "$work/haproxy.pid"
    procs[haproxy]=$(cat "$work/haproxy.pid")
  fi

  # Caddy: the same route (check below makes sure it proxies: a site address
  # like http://127.0.0.1:PORT does not match Host: bench.example.com, and
  # Caddy then answers an empty 200 itself, many times faster than
  # proxying); round robin over two equal backends is the 50/50 split
  # (Caddy 2.6 has no weights).
  cat >"$work/Caddyfile" <<CONF
{
  admin ${CADDY_ADMIN:-off}
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
  bench_table $P_TRELLIS >"$work/trellis/bench.yaml"
  local i port
  mkdir -p "$work/trellis-1"
  sed -e "s/port: $P_TRELLIS}/port: $P_TRELLIS1}/" \
      -e '/- {name: b2, port: 80, weight: 50}/d' -e 's/- {name: b1, port: 80, weight: 50}/- {name: b1, port: 80}/' \
    "$work/trellis/bench.yaml" | awk 'BEGIN {RS="---\n"; ORS=""} !/name: (svc|path)-/ {print sep $0; sep="---\n"}' >"$work/trellis-1/bench.yaml"
  for i in 1 2; do
    port=$B1; [ "$i" = 2 ] && port=$B2
    tee -a "$work/trellis-1/bench.yaml" >>"$work/trellis/bench.yaml" <<CONF
---
$(bench_backend b$i $port)
CONF
  done
  [ -z "${TRELLIS_EXTRA:-}" ] || printf -- '---\n%s\n' "$TRELLIS_EXTRA" >>"$work/trellis/bench.yaml"
  [ -z "${TRELLIS_EXTRA_DIR:-}" ] || cp "$TRELLIS_EXTRA_DIR"/*.yaml "$work/trellis/"
  # TRELLIS_BIN benchmarks a prebuilt binary instead of building this tree.
  bin=${TRELLIS_BIN:-$work/trellis-bin}
  [ -n "${TRELLIS_BIN:-}" ] || go build -o "$bin" ./cmd/trellis
  "$bin" up --config "$work/trellis" --api-listen 127.0.0.1:0 --admin-listen 127.0.0.1:$A_TRELLIS --log-level warn >"$work/trellis.log" 2>&1 &
  pids+=($!)
  procs[trellis]=$!
  "$bin" up --config "$work/trellis-1" --api-listen 127.0.0.1:0 --admin-listen 127.0.0.1:$A_TRELLIS1 --log-level warn >"$work/trellis-1.log" 2>&1 &
  pids+=($!)
  procs[trellis-1]=$!

  contenders="trellis trellis-1 nginx haproxy caddy"
  if [ -n "${BENCH_TRELLIS_PROCS:-}" ]; then
    mkdir -p "$work/trellis-p"
    sed -e "s/port: $P_TRELLIS1}/port: $P_TRELLISP}/" "$work/trellis-1/bench.yaml" >"$work/trellis-p/bench.yaml"
    "$bin" up --procs "$BENCH_TRELLIS_PROCS" --config "$work/trellis-p" --api-listen 127.0.0.1:0 --admin-listen 127.0.0.1:$A_TRELLISP --log-level warn >"$work/trellis-p.log" 2>&1 &
    pids+=($!)
    procs[trellis-p$BENCH_TRELLIS_PROCS]=$!
    contenders="trellis trellis-1 trellis-p$BENCH_TRELLIS_PROCS nginx haproxy caddy"
  fi
  if [ -n "${BENCH_TRELLIS_BASE:-}" ]; then
    mkdir -p "$work/trellis-b"
    sed -e "s/port: $P_TRELLIS1}/port: $P_TRELLISB}/" "$work/trellis-1/bench.yaml" >"$work/trellis-b/bench.yaml"
    "$BENCH_TRELLIS_BASE" up --config "$work/trellis-b" --api-listen 127.0.0.1:0 --admin-listen 127.0.0.1:$A_TRELLISB --log-level warn >"$work/trellis-b.log" 2>&1 &
    pids+=($!)
    procs[trellis-1-base]=$!
    mkdir -p "$work/trellis-bt"
    sed -e "s/port: $P_TRELLIS}/port: $P_TRELLISBT}/" "$work/trellis/bench.yaml" >"$work/trellis-bt/bench.yaml"
    "$BENCH_TRELLIS_BASE" up --config "$work/trellis-bt" --api-listen 127.0.0.1:0 --admin-listen 127.0.0.1:$A_TRELLISBT --log-level warn >"$work/trellis-bt.log" 2>&1 &
    pids+=($!)
    procs[trellis-base]=$!
    contenders="${contenders/trellis-1 /trellis-1 trellis-1-base }"
    contenders="${contenders/trellis /trellis trellis-base }"
  fi
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

  check trellis $P_TRELLIS; check trellis-1 $P_TRELLIS1; check nginx $P_NGINX
  if [ -n "${BENCH_TRELLIS_PROCS:-}" ]; then check "trellis-p$BENCH_TRELLIS_PROCS" $P_TRELLISP; fi
  if [ -n "${BENCH_TRELLIS_BASE:-}" ]; then check trellis-1-base $P_TRELLISB; check trellis-base $P_TRELLISBT; fi
  check haproxy $P_HAPROXY; check caddy $P_CADDY
  if [ -n "${BENCH_CEILING:-}" ]; then check go-minimal $P_GO; check epoll-minimal $P_EPOLL; fi
  # The header match must hold everywhere: without it, 404.
  local p code
  for p in $P_TRELLIS $P_TRELLIS1 $P_NGINX $P_HAPROXY $P_CADDY; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.example.com' "$(url $p)")
    [ "$code" = 404 ] || { echo "port $p answered $code without the header, want 404"; exit 1; }
  done
  # nginx's workers are the master's children.
  procs[nginx]=$(pgrep -d ' ' -P "$(cat "$work/nginx-proxy.pid")")
  backend=$(pgrep -d ' ' -P "$(cat "$work/nginx-backend.pid")")
}

# port NAME prints the contender's port.
port() {
  case $1 in trellis) echo $P_TRELLIS;; trellis-1) echo $P_TRELLIS1;; trellis-p*) echo $P_TRELLISP;; trellis-1-base) echo $P_TRELLISB;; trellis-base) echo $P_TRELLISBT;; caddy) echo $P_CADDY;; nginx) echo $P_NGINX;; haproxy) echo $P_HAPROXY;; go-minimal) echo $P_GO;; epoll-minimal) echo $P_EPOLL;; *) echo "no port for $1" >&2; exit 1;; esac
}
url() { echo "http://127.0.0.1:$1/api/items"; }
check() { # name port
  for _ in $(seq "${BENCH_CHECK_TRIES:-100}"); do
    if curl -fsS -H 'Host: bench.example.com' -H 'x-env: prod' "$(url "$2")" 2>/dev/null | grep -q backend-; then return 0; fi
    sleep 0.1
  done
  echo "$1 does not serve the route"; cat "$work"/*.log; exit 1
}

# wrk's latency in ms, whatever unit it prints.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f\n", v}'; }
# cpu PID... prints the processes' CPU time so far (user + system, all
# threads) in clock ticks.
tick=$(getconf CLK_TCK)
cpu() { local t=0 p f; for p in "$@"; do read -ra f <"/proc/$p/stat"; t=$((t + f[13] + f[14])); done; echo $t; }
# per_req TICKS0 TICKS1 RPS SECONDS prints CPU µs per request.
per_req() { awk -v d="$(($2 - $1))" -v hz="$tick" -v r="$3" -v s="$4" 'BEGIN {if (r*s > 0) printf "%.1f", d*1e6/hz/(r*s); else print "-"}'; }

# bench_rounds COLUMNS runs ROUNDS interleaved rounds of the caller's
# `run NAME` over $contenders, printing each result (named COLUMNS) and
# adding it to the caller's results[NAME], one line a round.
bench_rounds() {
  local r name res
  for r in $(seq "$ROUNDS"); do
    for name in $contenders; do
      res=$(run "$name")
      echo "round $r $name: $1 = $res"
      results[$name]+="$res"$'\n'
    done
  done
}

# median of the numbers on stdin; col NAME N the median of column N of
# the caller's results[NAME] (one line a round).
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
col() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF {print $c}' | median; }
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }
versions() {
  echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'), HAProxy $(haproxy -v | awk 'NR == 1 {print $3}'), Caddy $(caddy version | awk '{print $1}'), $(go version | awk '{print $3}')"
}

# write_block NAME FILE HEADING puts FILE (which starts with
# "<!-- BEGIN NAME" and ends with "<!-- END NAME -->") into
# docs/benchmarks.md in place of the block of that name, or appends it under
# HEADING. BENCH_NO_DOC=1 leaves the file alone (smoke runs).
write_block() {
  local doc=docs/benchmarks.md
  [ -z "${BENCH_NO_DOC:-}" ] || return 0
  if grep -q "BEGIN $1 " "$doc"; then
    python3 - "$doc" "$2" "$1" <<'PY'
import re, sys
doc, table, name = sys.argv[1], open(sys.argv[2]).read().rstrip("\n"), sys.argv[3]
s = open(doc).read()
s = re.sub(r"<!-- BEGIN " + re.escape(name) + r" .*?<!-- END " + re.escape(name) + r" -->", lambda m: table, s, flags=re.S)
open(doc, "w").write(s)
PY
  else
    printf '\n%s\n\n%s\n' "$3" "$(cat "$2")" >>"$doc"
  fi
}

# bench_report NAME HEADING prints the block on stdin and puts it into
# docs/benchmarks.md with write_block.
bench_report() {
  local table
  table=$(mktemp)
  cat >"$table"
  cat "$table"
  write_block "$1" "$table" "$2"
  rm -f "$table"
}
