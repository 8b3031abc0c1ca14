package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/pflag"

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

// tokenFlags are the flags of an API client's own bearer token, the same
// on every command that is one: --token, --token-file, or $TRELLIS_TOKEN.
type tokenFlags struct{ token, file string }

func (t *tokenFlags) register(f *pflag.FlagSet) {
	f.StringVar(&t.token, "token", "", "bearer token (default $TRELLIS_TOKEN)")
	f.StringVar(&t.file, "token-file", "", "file holding the bearer token (trellis up writes one next to its store and prints where)")
}

// get returns the token: --token, else the contents of --token-file, else
// $TRELLIS_TOKEN.
func (t *tokenFlags) get() (string, error) {
	if t.token != "" {
		return t.token, nil
	}
	if t.file != "" {
		b, err := os.ReadFile(t.file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		if tok := strings.TrimSpace(string(b)); tok != "" {
			return tok, nil
		}
		return "", fmt.Errorf("--token-file %s is empty", t.file)
	}
	if tok := os.Getenv("TRELLIS_TOKEN"); tok != "" {
		return tok, nil
	}
	return "", errors.New("no token: give --token, --token-file or set TRELLIS_TOKEN")
}
