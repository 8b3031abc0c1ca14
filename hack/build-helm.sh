#!/usr/bin/env bash
# Builds the helm CLI the chart tests run (internal/provider/kubernetes
# TestHelm*): helm.sh/helm/v4 at a pinned version, from the Go module proxy
# with `go install`, so helm stays out of the project's go.mod.
#
# The binary goes to ${XDG_CACHE_HOME:-$HOME/.cache}/trellis/helm-<version>/
# and the build is skipped when it is there and the stamp beside it matches
# the version, the flags and the Go version. The last line on stdout is the directory:
#
#   export TRELLIS_HELM_BIN=$(hack/build-helm.sh | tail -n1)
#
# A cold build (module downloads included) took 13 minutes on a busy 2-core
# machine (load 10); a cached one returns at once.
set -euo pipefail
version=v4.3.2
dir=${XDG_CACHE_HOME:-$HOME/.cache}/trellis/helm-$version
# The version `helm version` reports, as helm's own release build sets it.
ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$version"
stamp=$({ echo "$version $ldflags"; go version; } | sha256sum | cut -d' ' -f1)

if [ -x "$dir/helm" ] && [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$dir"
  exit 0
fi

echo "== building helm $version into $dir" >&2
mkdir -p "$dir"
rm -f "$dir/.stamp"
start=$SECONDS
# Outside the project's module (pkg@version), so go.mod and go.sum are
# neither read nor changed; a static binary without debug info.
(cd "$dir" && GOBIN="$dir" CGO_ENABLED=0 go install -trimpath -ldflags="$ldflags" "helm.sh/helm/v4/cmd/helm@$version")
echo "$stamp" >"$dir/.stamp"
echo "== built in $((SECONDS - start)) s" >&2
echo "$dir"
