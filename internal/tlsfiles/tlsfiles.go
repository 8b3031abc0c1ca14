// Package tlsfiles turns certificate files into TLS configurations for the
// control plane: the API server's certificate and key, reloaded when the
// files change (a rotation needs no restart), the CA its clients trust, and
// client certificates (the API server's to etcd), reloaded the same way.
// It owns no connections; the callers serve and dial.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// checkEvery bounds how often a handshake looks at the files' modification
// times: a rotated certificate is served at most this long after it is
// written. Tests shorten it.
var checkEvery = 5 * time.Second

// Server returns a server configuration presenting the certificate in
// certFile with the key in keyFile (PEM). Both are read now, so that a bad
// file fails at start, and again whenever either file's modification time
// changes; a file that fails to load later keeps the previous certificate
// serving, and the error goes to onReloadError (which may be nil).
func Server(certFile, keyFile string, onReloadError func(error)) (*tls.Config, error) {
	r := &reloader{certFile: certFile, keyFile: keyFile, onError: onReloadError}
	if err := r.load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.get(), nil
		},
	}, nil
}

// ClientCert makes cfg present the certificate in certFile with the key in
// keyFile (PEM) to servers that ask for one, read now and reloaded as
// Server's is.
func ClientCert(cfg *tls.Config, certFile, keyFile string, onReloadError func(error)) error {
	r := &reloader{certFile: certFile, keyFile: keyFile, onError: onReloadError}
	if err := r.load(); err != nil {
		return err
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return r.get(), nil
	}
	return nil
}

type reloader struct {
	certFile, keyFile string
	onError           func(error)

	mu       sync.Mutex
	cert     *tls.Certificate
	modified [2]time.Time
	checked  time.Time
}

func (r *reloader) load() error {
	mods, err := modTimes(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate %s, key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.modified = &cert, mods
	return nil
}

// get returns the certificate to present, reloading it first when the
// files changed since the last look (at most every checkEvery).
func (r *reloader) get() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= checkEvery {
		r.checked = now
		if mods, err := modTimes(r.certFile, r.keyFile); err == nil && mods != r.modified {
			if err := r.load(); err != nil && r.onError != nil {
				r.onError(err)
			}
		}
	}
	return r.cert
}

func modTimes(files ...string) (mods [2]time.Time, _ error) {
	for i, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return mods, err
		}
		mods[i] = fi.ModTime()
	}
	return mods, nil
}

// Client returns a client configuration that trusts the CA certificates in
// caFile (PEM) and nothing else, or the system's roots when caFile is "".
func Client(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New(caFile + ": no PEM certificate in it")
	}
	cfg.RootCAs = pool
	return cfg, nil
}
