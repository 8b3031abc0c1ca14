#!/usr/bin/env bash
# Runs h2spec against the HTTPS listener of a `trellis up` built from this
# checkout, on loopback with a generated certificate, and reports how many
# cases pass and which fail. Exits non-zero when a case fails that is not in
# test/framing's list of known failures (each with its reason). Then against
# the peer listener's HTTP/2 server (internal/peer, TLS) and net/http's, side
# by side: it fails when a case passes on net/http's and not on the peer's.
#
# About 50 s (h2spec's waits on the failing cases are most of it).
#
# h2spec comes from the Go module proxy: its latest version there is
# v2.2.1+incompatible (v2.6.0 is not on the proxy).
set -euo pipefail
cd "$(dirname "$0")/.."
H2SPEC_VERSION=${H2SPEC_VERSION:-v2.2.1+incompatible}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin GOFLAGS=-mod=mod go install "github.com/summerwind/h2spec/cmd/h2spec@$H2SPEC_VERSION"
TRELLIS_H2SPEC=$bin/h2spec go test -count=1 -v -run '^TestH2Spec$' ./test/framing/ | grep -v '^=== RUN'
TRELLIS_H2SPEC=$bin/h2spec go test -count=1 -v -run '^TestH2SpecPeerServer$' ./internal/peer/ | grep -v '^=== RUN'
