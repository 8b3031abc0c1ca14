#!/usr/bin/env python3
"""Generates the N-service configurations of bench/change.sh.

Service i answers host chg-i.example.com (any path) from one backend,
127.0.0.1:B1. Each service's backend line ends with the marker "# chg-i" (in
nginx, HAProxy and Trellis's files), so that a change is one line edited.

Usage: change-gen.py DIR N B1 B2 NGINX_PORT CADDY_LISTEN CADDY_ADMIN
Writes DIR/nginx-services.conf (server blocks), DIR/haproxy-backends.cfg,
DIR/haproxy-hosts.map, DIR/trellis/chg-*.yaml (100 services a file) and
DIR/caddy.json (the whole of Caddy's configuration: the benchmark's route,
then the N services).
"""
import json
import os
import sys

out, n, b1, b2, nginx_port, caddy_listen, caddy_admin = sys.argv[1], int(sys.argv[2]), *sys.argv[3:8]
if not 1 <= n <= 100_000:
    sys.exit("N must be 1..100000")
os.makedirs(os.path.join(out, "trellis"), exist_ok=True)

with open(os.path.join(out, "nginx-services.conf"), "w") as f:
    f.write("server_names_hash_max_size 262144;\nserver_names_hash_bucket_size 128;\n")
    for i in range(n):
        f.write(f"server {{ listen 127.0.0.1:{nginx_port}; server_name chg-{i}.example.com; location / {{ proxy_pass http://127.0.0.1:{b1}; # chg-{i}\n}} }}\n")

with open(os.path.join(out, "haproxy-hosts.map"), "w") as f:
    for i in range(n):
        f.write(f"chg-{i}.example.com s{i}\n")
with open(os.path.join(out, "haproxy-backends.cfg"), "w") as f:
    for i in range(n):
        f.write(f"backend s{i}\n  server s{i} 127.0.0.1:{b1} # chg-{i}\n")

per_file = 100
for start in range(0, n, per_file):
    docs = []
    for i in range(start, min(n, start + per_file)):
        docs.append(f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: chg-{i}}}
spec:
  parentRefs: [{{name: bench}}]
  hostnames: [chg-{i}.example.com]
  rules: [{{backendRefs: [{{name: chg-{i}, port: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: chg-{i}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: chg-{i}, labels: {{kubernetes.io/service-name: chg-{i}}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{name: http, port: {b1}}}] # chg-{i}
""")
    with open(os.path.join(out, "trellis", f"chg-{start // per_file}.yaml"), "w") as f:
        f.write("---\n".join(docs))


def proxy(*dials):
    return {"handler": "reverse_proxy", "upstreams": [{"dial": d} for d in dials],
            "load_balancing": {"selection_policy": {"policy": "round_robin"}}}


routes = [{
    "match": [{"host": ["bench.example.com"], "path": ["/api", "/api/*"], "header": {"X-Env": ["prod"]}}],
    "handle": [proxy(f"127.0.0.1:{b1}", f"127.0.0.1:{b2}")],
    "terminal": True,
}]
for i in range(n):
    routes.append({"match": [{"host": [f"chg-{i}.example.com"]}], "handle": [proxy(f"127.0.0.1:{b1}")], "terminal": True})
routes.append({"handle": [{"handler": "static_response", "status_code": 404}]})
config = {
    "admin": {"listen": caddy_admin},
    "apps": {"http": {"servers": {"bench": {
        "listen": [caddy_listen],
        "automatic_https": {"disable": True},
        "routes": routes,
    }}}},
}
with open(os.path.join(out, "caddy.json"), "w") as f:
    json.dump(config, f)
