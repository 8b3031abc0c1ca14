package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/websocket"
)

// echoResponse is the JSON body of an HTTP echo: what the suite's
// roundtripper decodes into CapturedRequest.
type echoResponse struct {
	Path     string              `json:"path"`
	Host     string              `json:"host"`
	Method   string              `json:"method"`
	Proto    string              `json:"proto"`
	Headers  map[string][]string `json:"headers"`
	HTTPPort string              `json:"httpPort"`

	podContext

	TLS *tlsInfo `json:"tls,omitempty"`
}

// tlsInfo describes the TLS connection a request came in on.
type tlsInfo struct {
	Version            string   `json:"version"`
	PeerCertificates   []string `json:"peerCertificates,omitempty"`
	ServerName         string   `json:"serverName"`
	NegotiatedProtocol string   `json:"negotiatedProtocol,omitempty"`
	CipherSuite        string   `json:"cipherSuite"`
}

// echoServer is echo-basic's HTTP mode: one handler shared by the plain,
// h2c and HTTPS listeners.
type echoServer struct {
	c        Container
	ctx      podContext
	httpPort string // reported in every response, whichever listener served it

	mu       sync.Mutex
	attempts map[string]int // /retry attempts per uuid
}

// startHTTPEcho starts HTTP on HTTP_PORT (3000), h2c on H2C_PORT (3001) and,
// when TLS_SERVER_CERT and TLS_SERVER_PRIVKEY are set, HTTPS on HTTPS_PORT
// (8443) with client certificates verified against TLS_CLIENT_CACERTS if
// that is set.
func startHTTPEcho(in *Instance, c Container) error {
	ports, err := c.ports("HTTP_PORT", "3000", "H2C_PORT", "3001", "HTTPS_PORT", "8443")
	if err != nil {
		return err
	}
	httpPort, h2cPort, httpsPort := ports[0], ports[1], ports[2]
	s := &echoServer{c: c, ctx: c.podContext(), httpPort: httpPort, attempts: map[string]int{}}
	handler := s.handler()

	c.printf("Starting server, listening on port %s (http)\n", httpPort)
	if err := serveHTTP(in, c, httpPort, &http.Server{Handler: handler}, nil); err != nil {
		return fmt.Errorf("http: %w", err)
	}

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Server{Handler: http.HandlerFunc(s.serveH2C), ReadHeaderTimeout: time.Second, Protocols: protocols}
	c.printf("Starting server, listening on port %s (h2c)\n", h2cPort)
	if err := serveHTTP(in, c, h2cPort, h2c, nil); err != nil {
		return fmt.Errorf("h2c: %w", err)
	}

	cfg, err := serverTLS(c, "TLS_SERVER_CERT", "TLS_SERVER_PRIVKEY")
	if err != nil {
		return fmt.Errorf("https: %w", err)
	}
	if cfg == nil {
		return nil
	}
	if caFile := c.Env["TLS_CLIENT_CACERTS"]; caFile != "" {
		pem, err := c.readFile(caFile)
		if err != nil {
			return fmt.Errorf("https: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("https: unable to append certificate in %q to CA pool", caFile)
		}
		// Verify a certificate the client offers, but let clients in
		// without one.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.ClientCAs = pool
	}
	c.printf("Starting server, listening on port %s (https)\n", httpsPort)
	if err := serveHTTP(in, c, httpsPort, &http.Server{Handler: handler, TLSConfig: cfg}, cfg); err != nil {
		return fmt.Errorf("https: %w", err)
	}
	return nil
}

// serverTLS loads the key pair in the files that the container's
// environment variables certEnv and keyEnv name; nil when either is unset
// (the image then serves no TLS).
func serverTLS(c Container, certEnv, keyEnv string) (*tls.Config, error) {
	certFile, keyFile := c.Env[certEnv], c.Env[keyEnv]
	if certFile == "" || keyFile == "" {
		return nil, nil
	}
	certPEM, err := c.readFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := c.readFile(keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key pair %s, %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, nil
}

// serveHTTP binds the pod IP on port and serves srv there, with TLS when
// tlsConfig is set (ServeTLS adds the h2 and http/1.1 ALPN protocols, as
// ListenAndServeTLS does in the image).
func serveHTTP(in *Instance, c Container, port string, srv *http.Server, tlsConfig *tls.Config) error {
	ln, err := c.Network.Listen("tcp", c.addr(port))
	if err != nil {
		return err
	}
	// The server's own errors (a failed TLS handshake, say) go to the
	// container's log, where the image's would.
	srv.ErrorLog = log.New(c.Stdout, "", log.LstdFlags)
	in.serve(func() {
		if tlsConfig != nil {
			srv.ServeTLS(ln, "", "")
		} else {
			srv.Serve(ln)
		}
	}, func() { srv.Close() })
	return nil
}

// handler routes like the image's mux: /health, /status/NNN, /retry/...,
// /ws (WebSocket echo) and everything else to the echo, after collapsing
// doubled slashes in the path.
func (s *echoServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "OK")
	})
	mux.HandleFunc("/status/", serveStatus)
	mux.HandleFunc("/retry/", s.serveRetry)
	mux.HandleFunc("/", s.serveEcho)
	mux.Handle("/ws", websocket.Handler(s.serveWebSocket))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = strings.ReplaceAll(r.URL.Path, "//", "/")
		mux.ServeHTTP(w, r)
	})
}

// statusPath is matched against the raw request URI, query included.
var statusPath = regexp.MustCompile(`^/status/(\d\d\d)$`)

// serveStatus answers /status/NNN with status NNN, anything else with 400.
func serveStatus(w http.ResponseWriter, r *http.Request) {
	code := http.StatusBadRequest
	if m := statusPath.FindStringSubmatch(r.RequestURI); m != nil {
		code, _ = strconv.Atoi(m[1])
	}
	w.WriteHeader(code)
}

// serveH2C is the h2c listener's handler: every path echoes, but only over
// HTTP/2 or an h2c upgrade request.
func (s *echoServer) serveH2C(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 && r.Header.Get("Upgrade") != "h2c" {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "Expected h2c request")
		return
	}
	s.serveEcho(w, r)
}

// serveWebSocket echoes frames back until the client closes.
func (s *echoServer) serveWebSocket(ws *websocket.Conn) {
	s.c.printf("established websocket connection %s\n", ws.RemoteAddr())
	io.Copy(ws, ws)
}

// serveEcho answers with the request as JSON. ?delay=DURATION waits first;
// X-Echo-Set-Header: name:value,... sets response headers.
func (s *echoServer) serveEcho(w http.ResponseWriter, r *http.Request) {
	s.c.printf("Echoing back request made to %s to client (%s)\n", r.RequestURI, r.RemoteAddr)
	if err := delay(r, "delay"); err != nil {
		writeError(w, err, http.StatusInternalServerError)
		return
	}
	body, err := json.MarshalIndent(echoResponse{
		Path:       r.RequestURI,
		Host:       r.Host,
		Method:     r.Method,
		Proto:      r.Proto,
		Headers:    r.Header,
		HTTPPort:   s.httpPort,
		podContext: s.ctx,
		TLS:        describeTLS(r.TLS),
	}, "", " ")
	if err != nil {
		writeError(w, err, http.StatusInternalServerError)
		return
	}
	setEchoHeaders(w.Header(), r.Header)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(body)
}

// setEchoHeaders applies X-Echo-Set-Header values. Names keep the case the
// client wrote; a repeated name gets its values joined with commas.
func setEchoHeaders(dst, req http.Header) {
	for _, list := range req["X-Echo-Set-Header"] {
		for kv := range strings.SplitSeq(list, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(kv), ":")
			if len(dst[name]) == 0 {
				dst[name] = []string{value}
			} else {
				dst[name][0] += "," + strings.TrimSpace(value)
			}
		}
	}
}

// serveRetry fails the first succeedAfter requests carrying the same uuid,
// then echoes. A failure resets the connection (TCP RST), or answers
// ?responseCode=N when that is given; ?delayRetry=DURATION delays failures.
func (s *echoServer) serveRetry(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id := q.Get("uuid")
	if id == "" {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "uuid is required")
		return
	}
	succeedAfter, err := strconv.Atoi(q.Get("succeedAfter"))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "succeedAfter is required")
		return
	}
	fail := resetConnection
	if code, err := strconv.Atoi(q.Get("responseCode")); err == nil {
		fail = func(w http.ResponseWriter) error {
			w.WriteHeader(code)
			return nil
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.attempts[id] >= succeedAfter {
		s.serveEcho(w, r)
		return
	}
	s.attempts[id]++
	if err := delay(r, "delayRetry"); err != nil {
		writeError(w, err, http.StatusInternalServerError)
		return
	}
	if err := fail(w); err != nil {
		writeError(w, err, http.StatusInternalServerError)
	}
}

// resetConnection aborts the request's connection with a TCP RST.
func resetConnection(w http.ResponseWriter) error {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return errors.New("response writer does not support hijacking")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return err
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		if err := tcp.SetLinger(0); err != nil {
			return err
		}
	}
	return conn.Close()
}

// delay sleeps for the duration in form value key, if any; it gives up early
// when the client goes away.
func delay(r *http.Request, key string) error {
	v := r.FormValue(key)
	if v == "" {
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return context.Cause(r.Context())
	}
	return nil
}

// writeError answers with {"message": err} and code.
func writeError(w http.ResponseWriter, err error, code int) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	body, jerr := json.Marshal(struct {
		Message string `json:"message"`
	}{err.Error()})
	w.WriteHeader(code)
	if jerr != nil {
		fmt.Fprintln(w, jerr)
		return
	}
	w.Write(body)
}

// describeTLS reports a TLS connection state, or nil for plain text.
func describeTLS(cs *tls.ConnectionState) *tlsInfo {
	if cs == nil {
		return nil
	}
	info := &tlsInfo{
		Version:            tlsVersion(cs.Version),
		ServerName:         cs.ServerName,
		NegotiatedProtocol: cs.NegotiatedProtocol,
		CipherSuite:        tls.CipherSuiteName(cs.CipherSuite),
	}
	info.PeerCertificates = encodeCerts(cs.PeerCertificates)
	return info
}

// tlsVersion names a TLS version the way echo-basic does ("TLSv1.3"); an
// unknown version is the empty string.
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS10:
		return "TLSv1.0"
	}
	return ""
}

// encodeCerts returns certificates as PEM blocks.
func encodeCerts(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	return out
}
