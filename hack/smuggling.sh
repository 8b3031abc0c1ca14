#!/usr/bin/env bash
# Runs the HTTP/1 framing ("smuggling") table of test/framing, written from
# RFC 9112, against a `trellis up` built from this checkout and serving on
# loopback, on fresh connections (the fast path) and on connections already
# handed to net/http, and prints the table. Exits non-zero when a row fails.
# About 10 s, most of it building trellis.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -v -run '^TestSmuggling$' ./test/framing/ | grep -v '^=== RUN'
