#!/usr/bin/env bash
# Generates the CRDs of trellis's own API types (package api/..., group
# trellis.dev) into config/crd, and their DeepCopy methods
# (zz_generated.deepcopy.go), with controller-tools, run through `go run` so
# it never becomes a dependency of the main module. Run it after changing
# anything under api/; a test checks that the committed output is current.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v0.20.1
if ! compgen -G "api/*/*.go" >/dev/null; then
  echo "no API types under api/: no CRDs to generate" >&2
  exit 0
fi
go run "sigs.k8s.io/controller-tools/cmd/controller-gen@$version" \
  object paths=./api/... \
  crd paths=./api/... output:crd:artifacts:config=config/crd
# The Helm chart carries the same files (Helm reads only its own directory).
rm -f config/helm/trellis/crds/trellis.dev_*.yaml
cp config/crd/trellis.dev_*.yaml config/helm/trellis/crds/
echo "CRDs written to config/crd and config/helm/trellis/crds; list new files in config/crd/kustomization.yaml" >&2
