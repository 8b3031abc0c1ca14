#!/usr/bin/env bash
# Builds the Kubernetes control plane the tests run (package test/kube):
# kube-apiserver and kube-controller-manager from k8s.io/kubernetes, and etcd
# from hack/tools/etcd, all pinned by the hack/tools module.
#
# The binaries go to $TRELLIS_KUBE_BIN, by default
# ${XDG_CACHE_HOME:-$HOME/.cache}/trellis/kube-<version>/bin. The build is
# skipped when all three exist and the stamp there matches the tools module
# (go.mod, go.sum, etcd/main.go) and the Go version. The last line on stdout
# is the bin directory:
#
#   export TRELLIS_KUBE_BIN=$(hack/build-kube.sh | tail -n1)
#
# Only the Go module proxy is used. A cold build takes several minutes.
set -euo pipefail
tools=$(cd "$(dirname "$0")/tools" && pwd)
cd "$tools"

version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
bin=${TRELLIS_KUBE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/trellis/kube-$version/bin}
binaries=(kube-apiserver kube-controller-manager etcd)
stamp=$({ cat go.mod go.sum etcd/main.go; go version; } | sha256sum | cut -d' ' -f1)

fresh=true
for b in "${binaries[@]}"; do
  [ -x "$bin/$b" ] || fresh=false
done
if $fresh && [ "$(cat "$bin/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$bin"
  exit 0
fi

echo "== building kube-apiserver, kube-controller-manager ($version) and etcd into $bin" >&2
mkdir -p "$bin"
rm -f "$bin/.stamp"
start=$SECONDS
# One invocation, so the three share one build graph; static binaries, no
# debug info. The version variables are what `kube-apiserver --version` and
# the /version endpoint report (a release build sets them the same way).
pkg=k8s.io/component-base/version
minor=${version#v1.}
minor=${minor%%.*}
CGO_ENABLED=0 go build -trimpath \
  -ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
  -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  ./etcd
echo "$stamp" >"$bin/.stamp"
echo "== built in $((SECONDS - start)) s" >&2
echo "$bin"
