package main

import (
	"log/slog"
	"net/http"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/tlsfiles"
)

const (
	dnsListenUsage = "serve the service networks' DNS names here (UDP and TCP), e.g. 127.0.0.1:5353; empty: no DNS"
	dnsAnswerUsage = "comma-separated addresses the names resolve to (default: --bind)"
)

const caFileUsage = "CA certificate (PEM) the control plane's TLS certificate must chain to; default: the system's roots"

// newAPIClient returns a control-plane client for serverURL, trusting the
// CA in caFile for an https URL.
func newAPIClient(serverURL, token, caFile string, log *slog.Logger) (*client.Client, error) {
	tlsCfg, err := tlsfiles.Client(caFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	return client.New(serverURL, token, client.Options{Logger: log, HTTPClient: &http.Client{Transport: tr}})
}

// serverUsage is the usage of --server, which every API client shares.
const serverUsage = "control-plane API address; several servers of one control plane (one etcd store) as a comma-separated list, used in turn when one cannot be reached"
