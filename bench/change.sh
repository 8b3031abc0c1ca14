#!/usr/bin/env bash
# Change under load: each proxy holds SERVICES services besides the
# benchmark's route (bench/change-gen.py: service i answers host
# chg-i.example.com from 127.0.0.1:B1), and while wrk drives the benchmark's
# route for SECONDS (-t2 -c CONNECTIONS), one service a second is moved to
# the other backend, the way each proxy takes a change:
#   trellis  its file provider's directory: the service's file rewritten
#            (a new file renamed over it); Trellis swaps its route table
#   nginx    the included file edited, then `nginx -s reload`
#   haproxy  haproxy.cfg edited, then USR2 to the master (master-worker reload)
#   caddy    a PATCH of the upstream through its admin API
# The proxies run one after another (each its own window). After a window
# the last service changed must answer from the new backend (the table says
# how long after the window it did, up to 30 s) and the next one from the
# old. wrk's rps, p99 and
# failed requests (socket errors and non-2xx answers) during the window go
# into docs/benchmarks.md between the BEGIN/END change markers.
#
# Usage: [TRELLIS_BIN=path] [BENCH_PORT_BASE=n] [BENCH_NO_DOC=1] bench/change.sh [SERVICES] [SECONDS] [CONNECTIONS]
# (defaults 10000 60 64; `bench/change.sh 10000 20` is the quick run).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
WINDOW=${2:-60}
CONNS=${3:-64}
[ "$WINDOW" -ge 3 ] && [ "$WINDOW" -le 600 ] && [ "$WINDOW" -le "$N" ] || { echo "SECONDS must be 3..600 and at most SERVICES"; exit 2; }

. bench/contenders.sh
A_CADDY=$((pb + 22))
gen=$(mktemp -d /tmp/trellis-bench-change.XXXXXX)
rm_gen() { rm -rf "$gen"; }
bench_cleanup_hooks+=(rm_gen)
echo "== generating $N services"
python3 bench/change-gen.py "$gen" "$N" "$B1" "$B2" "$P_NGINX" "127.0.0.1:$P_CADDY" "127.0.0.1:$A_CADDY"

NGINX_EXTRA="include $gen/nginx-services.conf;"
HAPROXY_FE_EXTRA="  use_backend %[req.hdr(host),lower,map($gen/haproxy-hosts.map,none)]"
HAPROXY_EXTRA=$(cat "$gen/haproxy-backends.cfg")
HAPROXY_MASTER_WORKER=1
CADDY_ADMIN=127.0.0.1:$A_CADDY
TRELLIS_EXTRA_DIR=$gen/trellis
BENCH_CHECK_TRIES=1200
bench_start
echo "== loading Caddy's $N services through its admin API"
curl -fsS -X POST -H 'Content-Type: application/json' --data-binary @"$gen/caddy.json" "http://127.0.0.1:$A_CADDY/load"
check caddy $P_CADDY

# answers NAME K prints which backend serves service K.
answers() { curl -fsS -H "Host: chg-$2.example.com" "http://127.0.0.1:$(port $1)/" 2>/dev/null || echo none; }
for name in trellis nginx haproxy caddy; do
  for _ in $(seq 1200); do [ "$(answers $name 0)" = backend-1 ] && break; sleep 0.1; done
  [ "$(answers $name 0)" = backend-1 ] || { echo "$name does not serve the generated services"; exit 1; }
done

# change NAME K moves service K from B1 to B2.
change() {
  local k=$2 f
  case $1 in
  trellis)
    f=$work/trellis/chg-$((k / 100)).yaml
    sed "s/port: $B1}] # chg-$k\$/port: $B2}] # chg-$k/" "$f" >"$work/chg.tmp"
    mv "$work/chg.tmp" "$f" ;;
  nginx)
    sed -i "s|proxy_pass http://127.0.0.1:$B1; # chg-$k\$|proxy_pass http://127.0.0.1:$B2; # chg-$k|" "$gen/nginx-services.conf"
    nginx -c "$work/nginx-proxy.conf" -p "$work" -s reload 2>>"$work/reload.log" ;;
  haproxy)
    sed -i "s|server s$k 127.0.0.1:$B1 # chg-$k\$|server s$k 127.0.0.1:$B2 # chg-$k|" "$work/haproxy.cfg"
    kill -USR2 "$haproxy_master" ;;
  caddy)
    curl -fsS -X PATCH -H 'Content-Type: application/json' -d "\"127.0.0.1:$B2\"" \
      "http://127.0.0.1:$A_CADDY/config/apps/http/servers/bench/routes/$((k + 1))/handle/0/upstreams/0/dial" ;;
  esac
}

declare -A results
load0=$(load_avg)
for name in trellis nginx haproxy caddy; do
  wrk -t2 -c"$CONNS" -d"${WINDOW}s" --latency -H 'Host: bench.example.com' -H 'x-env: prod' "$(url "$(port $name)")" >"$work/wrk.out" &
  wrk_pid=$!
  t0=$(date +%s.%N)
  changes=$((WINDOW - 1))
  for k in $(seq 0 $((changes - 1))); do
    sleep "$(awk -v t0="$t0" -v k="$k" -v now="$(date +%s.%N)" 'BEGIN {d = t0 + k + 0.5 - now; print (d > 0 ? d : 0)}')"
    change $name "$k"
  done
  wait $wrk_pid
  out=$(cat "$work/wrk.out")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
  socket=$(echo "$out" | awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  failed=$(( ${socket:-0} + ${non2xx:-0} ))
  # The last change took effect (how long after the window), and it alone.
  last=$((changes - 1)) ok=no t1=$(date +%s.%N)
  for _ in $(seq 300); do [ "$(answers $name $last)" = backend-2 ] && ok=yes && break; sleep 0.1; done
  [ $ok = yes ] && ok="after $(awk -v t1="$t1" -v now="$(date +%s.%N)" 'BEGIN {printf "%.1f s", now - t1}')"
  [ "$(answers $name $changes)" = backend-1 ] || ok="no: service $changes changed too"
  [ "$ok" != no ] || { ok="not within 30 s"; tail -5 "$work"/haproxy.log "$work"/reload.log 2>/dev/null || true; }
  echo "$name: rps $rps p99 ${p99}ms failed $failed (socket errors ${socket:-0}, non-2xx ${non2xx:-0}); $changes changes, the last served: $ok"
  results[$name]="$rps|$p99|$failed|$changes|$ok"
done
load1=$(load_avg)

table=$(mktemp)
{
  echo "<!-- BEGIN change (generated by bench/change.sh) -->"
  echo "Run $(date -u +%Y-%m-%d): \`bench/change.sh $N $WINDOW $CONNS\` — $N services besides the benchmark's route, one moved to another backend every second"
  echo "while \`wrk -t2 -c$CONNS -d${WINDOW}s\` drives the route; one window per proxy. $(versions)."
  echo "Load average (1, 5, 15 min) before: $load0; after: $load1."
  echo
  echo "| proxy | how a change is taken | rps | p99 (ms) | failed requests | changes | the last change served (after the window) |"
  echo "|---|---|---|---|---|---|---|"
  for name in trellis nginx haproxy caddy; do
    case $name in
    trellis) how="file rewritten, table swapped";; nginx) how="\`nginx -s reload\`";;
    haproxy) how="master-worker reload (USR2)";; caddy) how="admin API PATCH";;
    esac
    IFS='|' read -r rps p99 failed changes ok <<<"${results[$name]}"
    echo "| $name | $how | $rps | $p99 | $failed | $changes | $ok |"
  done
  echo "<!-- END change -->"
} >"$table"
cat "$table"
write_block change "$table" '## Change under load: 10,000 services, one change a second'
rm -f "$table"
