// Package crd embeds trellis's own CustomResourceDefinitions (this
// directory's trellis.dev_*.yaml, which hack/gen-crds.sh generates), so that
// the binary can install them: `trellis up --kubeconfig` does when they are
// missing. `kubectl apply -k config/crd` installs the same files.
package crd

import "embed"

// Files holds the CRD manifests, one CRD per file.
//
//go:embed trellis.dev_*.yaml
var Files embed.FS
