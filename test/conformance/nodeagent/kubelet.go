package nodeagent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// kubeletServer is the part of the kubelet API the apiserver calls for
// pods/log: GET /containerLogs/{namespace}/{pod}/{container}. It serves
// HTTPS with a self-signed certificate; the apiserver does not verify it
// unless started with --kubelet-certificate-authority.
type kubeletServer struct {
	srv  *http.Server
	done sync.WaitGroup
}

func startKubelet(a *Agent, ln net.Listener) (*kubeletServer, error) {
	cert, err := selfSigned(a.opts.NodeName, net.IP(a.opts.NodeIP.AsSlice()))
	if err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", a.serveContainerLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	k := &kubeletServer{srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
	}}
	k.done.Go(func() { k.srv.ServeTLS(ln, "", "") })
	return k, nil
}

func (k *kubeletServer) stop() {
	k.srv.Close()
	k.done.Wait()
}

// serveContainerLogs answers with a container's log. It honours the
// query parameters the apiserver passes on: sinceTime, sinceSeconds,
// tailLines, timestamps, limitBytes and follow; previous is refused, as
// containers here never restart.
func (a *Agent) serveContainerLogs(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("namespace") + "/" + r.PathValue("pod")
	container := r.PathValue("container")
	q, follow, err := parseLogQuery(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	l := a.logs[key][container]
	a.mu.Unlock()
	if l == nil {
		http.Error(w, fmt.Sprintf("container %q in pod %q is not known to this node", container, key), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	lw := newLimitWriter(w, q.limitBytes)
	out, next, more := l.read(q, 0)
	lw.Write(out)
	if !follow {
		return
	}
	q.tail = -1
	flusher, _ := w.(http.Flusher)
	for !lw.full() {
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-more:
		}
		out, next, more = l.read(q, next)
		lw.Write(out)
	}
}

// parseLogQuery reads the kubelet's log options from a request.
func parseLogQuery(r *http.Request) (q logQuery, follow bool, err error) {
	v := r.URL.Query()
	q.tail = -1
	if s := v.Get("sinceTime"); s != "" {
		if q.since, err = time.Parse(time.RFC3339, s); err != nil {
			return q, false, fmt.Errorf("sinceTime: %w", err)
		}
	}
	if s := v.Get("sinceSeconds"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return q, false, fmt.Errorf("sinceSeconds %q: want a positive integer", s)
		}
		q.since = time.Now().Add(-time.Duration(n) * time.Second)
	}
	if s := v.Get("tailLines"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, false, fmt.Errorf("tailLines %q: want a non-negative integer", s)
		}
		q.tail = n
	}
	if s := v.Get("limitBytes"); s != "" {
		if q.limitBytes, err = strconv.ParseInt(s, 10, 64); err != nil || q.limitBytes < 1 {
			return q, false, fmt.Errorf("limitBytes %q: want a positive integer", s)
		}
	}
	q.timestamps = isTrue(v.Get("timestamps"))
	if isTrue(v.Get("previous")) {
		return q, false, fmt.Errorf("previous terminated container not found: containers never restart on this node")
	}
	return q, isTrue(v.Get("follow")), nil
}

func isTrue(s string) bool {
	b, _ := strconv.ParseBool(strings.TrimSpace(s))
	return b
}

// limitWriter stops writing after limitBytes, when that is set.
type limitWriter struct {
	w     http.ResponseWriter
	limit bool
	left  int64
}

func newLimitWriter(w http.ResponseWriter, limitBytes int64) *limitWriter {
	return &limitWriter{w: w, limit: limitBytes > 0, left: limitBytes}
}

func (l *limitWriter) Write(p []byte) {
	if l.limit {
		if int64(len(p)) > l.left {
			p = p[:l.left]
		}
		l.left -= int64(len(p))
	}
	if len(p) > 0 {
		l.w.Write(p)
	}
}

// full reports whether the limit has been reached.
func (l *limitWriter) full() bool { return l.limit && l.left <= 0 }

// selfSigned makes the kubelet API's serving certificate.
func selfSigned(name string, ip net.IP) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{ip},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("serving certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
