# Sourced by the scale scripts (run.sh, idle.sh, split.sh): a temporary
# directory $out, removed on exit, holding the trellis and scale binaries of
# this tree, and the open-file limit raised for the health checks.
# Usage: . bench/scale/prepare.sh NAME (the directory is /tmp/trellis-NAME.*).
out=$(mktemp -d "/tmp/trellis-$1.XXXXXX")
trap 'rm -rf "$out"' EXIT
# Health checks keep a connection per target (at most half of trellis's
# open-file limit, internal/proxy/health): room for 100,000 of them, and for
# the echo listener's side of each.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n) (checks keep at most half as many connections)" >&2
go build -o "$out/trellis" ./cmd/trellis
go build -o "$out/scale" ./bench/scale
