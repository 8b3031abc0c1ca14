#!/usr/bin/env python3
"""Where each request measured by `openloop http -dump DUMP` spent its time,
from the dump and the proxy's access log (`trellis up --access-log LOG`):
the requests of a connection are found by its local port (sourceIpPort) in
order, the warm-up's first. Prints, for all requests, the fastest half and
the slowest 1 % and 0.1 %: how late the generator wrote them, the time to
the proxy's parse of the head (startTime is cut to the ms: +-0.5 ms), the
time the proxy held them (duration, the target included) and the rest,
back to the generator. docs/benchmarks.md, "Where a slow request spends
its time".

Usage: bench/latency-join.py DUMP LOG
"""
import collections
import datetime
import json
import sys

dump, alog = sys.argv[1], sys.argv[2]
gen = [l.split() for l in open(dump) if not l.startswith('#')]
byport = collections.defaultdict(list)
for r in gen:
    byport[int(r[4])].append((float(r[0]), int(r[1]), float(r[2]), float(r[5])))
entries = collections.defaultdict(list)
for l in open(alog):
    e = json.loads(l)
    port = int(e['sourceIpPort'].rsplit(':', 1)[1])
    entries[port].append(e)
def ms(ts):
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()*1e3
rows = []
for port, reqs in byport.items():
    es = entries.get(port, [])
    if len(es) < len(reqs): continue
    es = es[len(es) - len(reqs):]  # the warm-up's requests come first
    for (due, dueus, lat, late), e in zip(reqs, es):
        sent = dueus/1e3 + late
        recv = ms(e['startTime']) + 0.5 - sent   # startTime is cut to the ms
        rows.append((lat, late, recv, e['duration'], lat - late - recv - e['duration']))
rows.sort()
n = len(rows)
print(f"joined {n} of {len(gen)} requests")
if n == 0:
    sys.exit(f"{alog}: no connection of {dump} found with as many entries as requests")
def summ(sel, name):
    k = len(sel); a = [sum(r[i] for r in sel)/k for i in range(5)]
    print(f"{name:>13}: n={k:5d} latency {a[0]:7.3f} ms = generator late {a[1]:6.3f} + to trellis's read (±0.5) {a[2]:6.3f} + in trellis (target included) {a[3]:6.3f} + back to the generator {a[4]:6.3f}")
summ(rows, "all")
summ(rows[:n//2], "fastest half")
summ(rows[int(n*.99):], "slowest 1%")
summ(rows[int(n*.999):], "slowest 0.1%")
