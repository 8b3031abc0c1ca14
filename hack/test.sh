#!/usr/bin/env bash
# The project's test command (the README's second command; CI runs it).
# Checks formatting, vet and staticcheck, then runs every test with the race
# detector. The end-to-end tests create network namespaces, so this runs as
# root (CI does); they fail, never skip, without it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ip >/dev/null; then
  echo "== installing iproute2 (for the network-namespace tests)"
  apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
fi

if ! command -v aws >/dev/null; then
  echo "== installing the AWS CLI (test/e2e drives the VPC Lattice API with it)"
  apt-get update -qq && apt-get install -y -qq awscli >/dev/null
fi
# This machine kind has the AWS CLI from pip (awscli 1.45, botocore 1.43). Debian's
# awscli 2.9.19 (botocore 1.29) predates VPC Lattice: say so here rather than let
# TestLatticeAPIWithAWSCLI fail on "invalid choice".
if ! aws vpc-lattice help >/dev/null 2>&1; then
  echo "warning: $(aws --version 2>&1) has no vpc-lattice commands; TestLatticeAPIWithAWSCLI will fail (it needs awscli >= 1.27.100 or 2.11)"
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== generated code is current (hack/gen-crds.sh)"
generated() { cat api/*/zz_generated.deepcopy.go config/crd/*.yaml config/helm/trellis/crds/*.yaml | sha256sum; }
before=$(generated)
./hack/gen-crds.sh 2>/dev/null
if [ "$(generated)" != "$before" ]; then
  echo "hack/gen-crds.sh changed the generated files: run it and commit the result"; git status --short api config/crd config/helm/trellis/crds; exit 1
fi

echo "== staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

echo "== Kubernetes control plane for the integration tests (cached after the first build)"
TRELLIS_KUBE_BIN=$(./hack/build-kube.sh | tail -n1)
export TRELLIS_KUBE_BIN

echo "== helm for the chart tests (cached after the first build)"
TRELLIS_HELM_BIN=$(./hack/build-helm.sh | tail -n1)
export TRELLIS_HELM_BIN

echo "== go test"
go test -race -count=1 -timeout 20m ./...
