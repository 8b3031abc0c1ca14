// Package peer is the hop between the proxies of two clusters: a proxy that
// picked a target in another cluster sends the request to a proxy of that
// cluster, which delivers it to the target on its own network. This is what
// lets clusters reach each other's services without routable pod addresses
// between them, and with overlapping ones.
//
// The hop is HTTP/2 over mutual TLS with the clusters' certificates
// (package pki): connections are pooled and multiplexed, and TLS sessions
// are resumed. Each side checks the other's certificate names the cluster
// it expects. The sending side is the package's own HTTP/2 client
// (h2client.go, on x/net/http2's Framer and hpack): the caller's goroutine
// writes its request, one read loop per connection hands responses over,
// and everything the peer sends is bounded; the receiving side is an
// http.Server (Server, TLSConfig, NewHTTPServer). The request carries which target group and target it is for
// and, when the caller is a known workload, the caller's identity; the
// receiver believes an identity only if it belongs to the cluster the
// sending proxy's certificate names, so a proxy of one cluster can never
// speak for another cluster's workloads.
//
// The receiving side serves the peer listener with HTTPServer, an HTTP/2
// server of its own on x/net's framer and HPACK (h2server.go) rather than
// net/http's: the goroutine that reads a stream's HEADERS runs its handler
// (another takes over reading), and handlers write their frames to the
// connection themselves, so a small response leaves in one write. It bounds
// what a compromised peer can make it do (streams, header lists, resets,
// control frames, windows, idle and header time). The proxy serves its own
// clients' HTTP/2 with it too (HTTPServerConfig: their limits, a connection
// context hook).
//
// The package owns the wire protocol and its checks. Choosing targets,
// checking that a target is the receiver's to deliver to, and delivering
// are the proxy's (see Server.Deliver).
package peer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/pki"
)

// The headers of the peer protocol. A proxy removes every header with the
// Trellis-Peer- prefix from client requests, so only a peer sets them.
const (
	HeaderPrefix      = "Trellis-Peer-"
	HeaderTargetGroup = "Trellis-Peer-Target-Group"
	HeaderTarget      = "Trellis-Peer-Target"
	// HeaderIdentity is the caller's workload identity,
	// spiffe://<cluster>/ns/<namespace>/sa/<service account>, absent for an
	// anonymous caller.
	HeaderIdentity = "Trellis-Peer-Identity"
	// HeaderVersion is the HTTP version to speak to the target (HTTP1,
	// HTTP2 or GRPC), for targets whose group the receiver does not hold
	// itself (an export's endpoints).
	HeaderVersion = "Trellis-Peer-Version"
	// HeaderProbe marks a probe (Client.Probe): the receiver answers 204
	// once the sender passed its checks, and delivers nothing.
	HeaderProbe = "Trellis-Peer-Probe"
	// HeaderService, HeaderNetwork and HeaderPort name the service (and
	// its network) whose route sent the request, and the listener port it
	// arrived on: the receiver checks the service routes to the target
	// group and judges the request by that service's auth policies.
	HeaderService = "Trellis-Peer-Service"
	HeaderNetwork = "Trellis-Peer-Network"
	HeaderPort    = "Trellis-Peer-Port"
)

// Request says where one forwarded request goes.
type Request struct {
	// Cluster is the cluster the peer belongs to; its certificate must
	// name it.
	Cluster string
	// Addr is the peer proxy's host:port.
	Addr string
	// TargetGroup and Target (host:port) are what the peer delivers to.
	TargetGroup, Target string
	// Identity is the caller's workload identity, or "".
	Identity string
	// Version is the HTTP version to speak to the target, or "".
	Version string
	// Service, Network and Port are the service whose route chose the
	// target, its network, and the listener port the request came in on.
	Service, Network string
	Port             int32
}

// Client sends requests to peers. It keeps up to connsPerPeer multiplexed
// connections per peer address, a second one only while requests run
// concurrently, and resumes TLS sessions. It is safe for concurrent use.
type Client struct {
	id       *pki.Identity
	verifier *verifier
	// pool keeps the connections to peers (h2client.go).
	pool     *h2Pool
	sessions tls.ClientSessionCache
	// closed ends the probes (Close).
	closed    chan struct{}
	closeOnce sync.Once

	mu    sync.RWMutex
	peers map[string]string // peer address → the cluster it must be
	// down holds the peers whose connection failed; a prober dials each
	// until it answers, and no request is sent to it meanwhile.
	down map[string]bool
}

// probeEvery is how often a peer that could not be reached is dialed
// again, in the background. A whole cluster lost leaves the pick on its
// first failed connection, not after health checks, and no request is
// spent finding out whether it is back.
const probeEvery = time.Second

// NewClient returns a client presenting id and trusting peers whose
// certificates chain to roots.
func NewClient(id *pki.Identity, roots *x509.CertPool) *Client {
	c := &Client{id: id, verifier: newVerifier(roots, x509.ExtKeyUsageServerAuth), peers: map[string]string{}, down: map[string]bool{}, closed: make(chan struct{})}
	c.sessions = tls.NewLRUClientSessionCache(1024)
	c.pool = newH2Pool(c)
	return c
}

// connsPerPeer is how many connections the client keeps to each peer at
// most. A request goes on the least busy connection presenting the
// current certificate, and a new one is dialed only while every one is
// busy: sequential requests keep to one connection (and pay for one new
// connection), concurrent ones spread over as many connections and
// goroutines at both ends (one connection serializes its streams' frames):
// with 16 concurrent clients the hop's p50 cost fell by about a third
// (docs/benchmarks.md).
const connsPerPeer = 4

// dialTimeout bounds a new connection to a peer, TLS handshake included.
const dialTimeout = 3 * time.Second

// dial dials addr presenting cert, and takes the peer out of use when
// that fails.
func (c *Client) dial(ctx context.Context, network, addr string, cert *tls.Certificate) (net.Conn, error) {
	conn, err := c.dialWith(ctx, network, addr, cert)
	if err != nil && ctx.Err() == nil {
		c.markDown(addr)
	}
	return conn, err
}

// dialOnce dials addr for a probe.
func (c *Client) dialOnce(ctx context.Context, addr string) (net.Conn, error) {
	return c.dialWith(ctx, "tcp", addr, c.id.Certificate())
}

// dialWith dials addr presenting cert. The sessions it resumes are those of
// the same certificate: a resumed session keeps the client certificate of
// the handshake that made it, so after a renewal a new connection must
// not resume one made with the old certificate.
func (c *Client) dialWith(ctx context.Context, network, addr string, cert *tls.Certificate) (net.Conn, error) {
	c.mu.RLock()
	cluster, ok := c.peers[addr]
	c.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("peer %s: not a known peer", addr)
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{"h2"},
		ClientSessionCache: peerSessions{c.sessions, cluster + "@" + addr + "@" + cert.Leaf.SerialNumber.String()},
		// The peer is checked by the cluster its certificate names, not by
		// a host name: verification is VerifyConnection's.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return c.verifier.verify(cs, cluster)
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert, nil
		},
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}, Config: cfg}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("peer %s of cluster %s: %w", addr, cluster, err)
	}
	if p := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "h2" {
		conn.Close()
		return nil, fmt.Errorf("peer %s of cluster %s: negotiated %q, not h2", addr, cluster, p)
	}
	return conn, nil
}

// peerSessions is the session cache of the connections to one peer: it
// keys the sessions by the peer's address, the cluster it must be and the
// client certificate rather than by host name (the tls package's default), so that a session
// is offered only to the peer it was made with, and peers sharing an IP
// address keep a session each. A resumed session's certificates are
// checked again all the same (VerifyConnection runs on resumption).
type peerSessions struct {
	cache tls.ClientSessionCache
	key   string
}

func (s peerSessions) Get(string) (*tls.ClientSessionState, bool) { return s.cache.Get(s.key) }
func (s peerSessions) Put(_ string, cs *tls.ClientSessionState)   { s.cache.Put(s.key, cs) }

// verifier checks peers' certificate chains against roots for one key
// usage, and remembers the chains it accepted, so that a peer's next
// connection (a resumed session carries the same certificates) does not
// verify them again. The result cannot differ while the certificates, the
// roots and the usage are the same and the time is within the validity of
// every certificate of the chain, which bounds what is remembered.
type verifier struct {
	roots *x509.CertPool
	usage x509.ExtKeyUsage
	mu    sync.Mutex
	// known maps the certificates a peer presented (lengths and DER,
	// concatenated) to what their verification found.
	known map[string]verifiedChain
}

// verifiedChain is an accepted chain: the cluster its leaf names, and when
// all of its certificates are valid.
type verifiedChain struct {
	cluster             string
	notBefore, notAfter time.Time
}

// maxVerified bounds a verifier's memory; it starts over when full.
const maxVerified = 1024

func newVerifier(roots *x509.CertPool, usage x509.ExtKeyUsage) *verifier {
	return &verifier{roots: roots, usage: usage, known: map[string]verifiedChain{}}
}

// verify checks that a peer's certificate chains to the roots, for the
// verifier's usage, and names cluster ("" for any).
func (v *verifier) verify(cs tls.ConnectionState, cluster string) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return errors.New("peer presented no certificate")
	}
	var key strings.Builder
	for _, c := range certs {
		key.WriteString(strconv.Itoa(len(c.Raw)))
		key.WriteByte(':')
		key.Write(c.Raw)
	}
	now := time.Now()
	v.mu.Lock()
	k, ok := v.known[key.String()]
	v.mu.Unlock()
	if !ok || now.Before(k.notBefore) || now.After(k.notAfter) {
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		chains, err := certs[0].Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{v.usage}, CurrentTime: now})
		if err != nil {
			return err
		}
		got, err := pki.ClusterOf(certs[0])
		if err != nil {
			return err
		}
		k = verifiedChain{cluster: got, notBefore: chains[0][0].NotBefore, notAfter: chains[0][0].NotAfter}
		for _, c := range chains[0][1:] {
			if c.NotBefore.After(k.notBefore) {
				k.notBefore = c.NotBefore
			}
			if c.NotAfter.Before(k.notAfter) {
				k.notAfter = c.NotAfter
			}
		}
		v.mu.Lock()
		if len(v.known) >= maxVerified {
			clear(v.known)
		}
		v.known[key.String()] = k
		v.mu.Unlock()
	}
	if cluster != "" && k.cluster != cluster {
		return fmt.Errorf("peer's certificate names cluster %q, not %q", k.cluster, cluster)
	}
	return nil
}

// markDown takes the peer at addr out of use and starts probing it.
func (c *Client) markDown(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down[addr] {
		return
	}
	c.down[addr] = true
	go c.probe(addr)
}

// probe dials the peer at addr every probeEvery until a connection (TLS
// handshake included) succeeds, then puts it back in use; it gives up when
// the peer is no longer known.
func (c *Client) probe(addr string) {
	for {
		select {
		case <-c.closed:
			return
		case <-time.After(probeEvery):
		}
		c.mu.RLock()
		_, known := c.peers[addr]
		c.mu.RUnlock()
		if !known {
			c.mu.Lock()
			delete(c.down, addr)
			c.mu.Unlock()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		conn, err := c.dialOnce(ctx, addr)
		cancel()
		if err == nil {
			conn.Close()
			c.mu.Lock()
			delete(c.down, addr)
			c.mu.Unlock()
			return
		}
	}
}

// Up reports whether the peer at addr may be tried: it is known and not
// being probed after a failure.
func (c *Client) Up(addr string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, known := c.peers[addr]
	return known && !c.down[addr]
}

// SetPeers replaces the known peers: address → the cluster it belongs to.
// A request to an address not listed fails before any byte is sent.
func (c *Client) SetPeers(peers map[string]string) {
	m := make(map[string]string, len(peers))
	for a, cl := range peers {
		m[a] = cl
	}
	c.mu.Lock()
	c.peers = m
	c.mu.Unlock()
}

// Peers returns the known peers: address → the cluster it belongs to.
func (c *Client) Peers() map[string]string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m := make(map[string]string, len(c.peers))
	for a, cl := range c.peers {
		m[a] = cl
	}
	return m
}

// Probe sends one probe to the known peer at addr over the pooled
// connection (dialing one if there is none) and returns its round trip.
// The peer answers it after checking this proxy's certificate and
// admission, so a probe that succeeds means requests would be taken.
func (c *Client) Probe(ctx context.Context, addr string) (time.Duration, error) {
	c.mu.RLock()
	cluster, ok := c.peers[addr]
	c.mu.RUnlock()
	if !ok {
		return 0, fmt.Errorf("peer %s: not a known peer", addr)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodOptions, "https://"+addr+"/", nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	resp, err := c.pool.roundTrip(req, addr, []hpack.HeaderField{{Name: lowerProbe, Value: "1"}})
	if err != nil {
		if ctx.Err() == nil && brokenConn(err) {
			c.markDown(addr)
		}
		return 0, err
	}
	rtt := time.Since(start)
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return 0, fmt.Errorf("peer %s of cluster %s answered the probe %d", addr, cluster, resp.StatusCode)
	}
	return rtt, nil
}

// RoundTrip sends r to the peer p names, for delivery to p's target. r is
// not modified; the request sent carries r's method, host, path, query,
// headers, body and trailers, and the peer protocol's headers.
func (c *Client) RoundTrip(r *http.Request, p Request) (*http.Response, error) {
	c.mu.RLock()
	cluster, ok := c.peers[p.Addr]
	c.mu.RUnlock()
	if !ok || cluster != p.Cluster {
		return nil, fmt.Errorf("peer %s is not a proxy of cluster %s", p.Addr, p.Cluster)
	}
	// r goes as it is: its Trellis-Peer- fields (in any case, for a key
	// set in the map directly is not canonical) are left out as it is
	// encoded, and the peer protocol's go instead.
	var fields [8]hpack.HeaderField
	resp, err := c.pool.roundTrip(r, p.Addr, p.fields(fields[:0], ""))
	if err != nil && r.Context().Err() == nil && brokenConn(err) {
		// The connection broke under the request (the peer died): leave
		// the peer out until it answers again.
		c.markDown(p.Addr)
	}
	return resp, err
}

// The peer protocol's field names, as HTTP/2 sends them.
var (
	lowerTargetGroup = strings.ToLower(HeaderTargetGroup)
	lowerTarget      = strings.ToLower(HeaderTarget)
	lowerIdentity    = strings.ToLower(HeaderIdentity)
	lowerVersion     = strings.ToLower(HeaderVersion)
	lowerService     = strings.ToLower(HeaderService)
	lowerNetwork     = strings.ToLower(HeaderNetwork)
	lowerPort        = strings.ToLower(HeaderPort)
	lowerProbe       = strings.ToLower(HeaderProbe)
	lowerTunnel      = strings.ToLower(HeaderTunnel)
)

// fields appends the peer protocol's fields of p to dst, and the tunnel's
// kind when not "".
func (p *Request) fields(dst []hpack.HeaderField, tunnel string) []hpack.HeaderField {
	dst = append(dst,
		hpack.HeaderField{Name: lowerTargetGroup, Value: p.TargetGroup},
		hpack.HeaderField{Name: lowerTarget, Value: p.Target},
		hpack.HeaderField{Name: lowerService, Value: p.Service},
		hpack.HeaderField{Name: lowerNetwork, Value: p.Network},
		hpack.HeaderField{Name: lowerPort, Value: strconv.Itoa(int(p.Port))})
	if p.Identity != "" {
		dst = append(dst, hpack.HeaderField{Name: lowerIdentity, Value: p.Identity})
	}
	if p.Version != "" {
		dst = append(dst, hpack.HeaderField{Name: lowerVersion, Value: p.Version})
	}
	if tunnel != "" {
		dst = append(dst, hpack.HeaderField{Name: lowerTunnel, Value: tunnel})
	}
	return dst
}

// brokenConn reports whether err says the connection to a peer failed
// (rather than the request's own context, or a refusal by the peer).
func brokenConn(err error) bool {
	var ne net.Error
	var ce *connError
	return errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "connection refused")
}

// CloseIdleConnections closes pooled connections not in use.
func (c *Client) CloseIdleConnections() { c.pool.closeIdle(0) }

// Close stops probing unreachable peers and closes idle connections.
func (c *Client) Close() {
	c.closeOnce.Do(func() { close(c.closed) })
	c.CloseIdleConnections()
}

// Delivery is one request a peer handed over, after the checks every
// request passes.
type Delivery struct {
	// PeerCluster is the cluster of the proxy that sent the request, as its
	// certificate names it.
	PeerCluster string
	// TargetGroup and Target are where the peer asks the request to go. The
	// receiver must check that the target is its own cluster's target of
	// that group: a peer must not reach anything else on this network.
	TargetGroup, Target string
	// Identity is the caller's workload identity, already checked to
	// belong to PeerCluster; "" for an anonymous caller.
	Identity string
	// Version is the HTTP version the sender asks for, unchecked.
	Version string
	// Service, Network and Port are what the sender says the request was
	// routed for, unchecked: the receiver must check them against its own
	// configuration before it trusts them.
	Service, Network, Port string
	// Tunnel is the kind of tunnel the sender asks for (TunnelTCP,
	// TunnelUpgrade; see AcceptTunnel), unchecked; "" for one request.
	Tunnel string
}

// Server receives requests from peers.
type Server struct {
	// Deliver serves one request a peer handed over. The peer protocol's
	// headers are already removed from r.
	Deliver func(w http.ResponseWriter, r *http.Request, d Delivery)
	// Refused is told of every refused request, with the peer's cluster and
	// why (for logs and metrics); it may be nil.
	Refused func(peerCluster, reason string)
	// Admitted says whether a cluster is admitted to the control plane
	// now; a peer of a cluster that is not (removed, its certificate still
	// valid) is refused. Nil admits every cluster the CA vouches for.
	Admitted func(cluster string) bool

	// clusters remembers the cluster each peer certificate names, for the
	// requests after a connection's first (cleared when it holds
	// maxClusterCache).
	mu       sync.Mutex
	clusters map[*x509.Certificate]string
}

// maxClusterCache bounds Server.clusters: about as many certificates as
// peer connections.
const maxClusterCache = 1024

// clusterOf is pki.ClusterOf, remembered per certificate (a connection's
// requests share its parsed certificate).
func (s *Server) clusterOf(cert *x509.Certificate) (string, error) {
	s.mu.Lock()
	cluster, ok := s.clusters[cert]
	s.mu.Unlock()
	if ok {
		return cluster, nil
	}
	cluster, err := pki.ClusterOf(cert)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	if s.clusters == nil || len(s.clusters) >= maxClusterCache {
		s.clusters = make(map[*x509.Certificate]string)
	}
	s.clusters[cert] = cluster
	s.mu.Unlock()
	return cluster, nil
}

// Refusal reasons.
const (
	RefusedNoTarget        = "NoTarget"
	RefusedForeignIdentity = "ForeignIdentity"
	RefusedNotAdmitted     = "NotAdmitted"
)

// ServeHTTP checks a peer's request and hands it to Deliver. The TLS layer
// (TLSConfig) has already checked the peer's certificate.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		http.Error(w, "peer hop needs mutual TLS", http.StatusUnauthorized)
		return
	}
	cluster, err := s.clusterOf(r.TLS.PeerCertificates[0])
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if s.Admitted != nil && !s.Admitted(cluster) {
		s.refuse(w, cluster, RefusedNotAdmitted, http.StatusForbidden, fmt.Sprintf("cluster %q is not admitted to the control plane", cluster))
		return
	}
	if r.Header.Get(HeaderProbe) != "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	d := Delivery{
		PeerCluster: cluster,
		TargetGroup: r.Header.Get(HeaderTargetGroup),
		Target:      r.Header.Get(HeaderTarget),
		Identity:    r.Header.Get(HeaderIdentity),
		Version:     r.Header.Get(HeaderVersion),
		Service:     r.Header.Get(HeaderService),
		Network:     r.Header.Get(HeaderNetwork),
		Port:        r.Header.Get(HeaderPort),
		Tunnel:      r.Header.Get(HeaderTunnel),
	}
	if d.TargetGroup == "" || d.Target == "" {
		s.refuse(w, cluster, RefusedNoTarget, http.StatusBadRequest, "peer request names no target group and target")
		return
	}
	if d.Identity != "" {
		if idCluster, ok := identityCluster(d.Identity); !ok || idCluster != cluster {
			s.refuse(w, cluster, RefusedForeignIdentity, http.StatusForbidden,
				fmt.Sprintf("a proxy of cluster %q may not assert identity %q", cluster, d.Identity))
			return
		}
	}
	for k := range r.Header {
		if strings.HasPrefix(k, HeaderPrefix) {
			delete(r.Header, k)
		}
	}
	s.Deliver(w, r, d)
}

func (s *Server) refuse(w http.ResponseWriter, cluster, reason string, status int, msg string) {
	if s.Refused != nil {
		s.Refused(cluster, reason)
	}
	w.Header().Set(HeaderRefused, reason)
	http.Error(w, msg, status)
}

// identityCluster is the cluster of a workload identity: the trust domain
// of spiffe://<cluster>/ns/<namespace>/sa/<service account>. Only that
// canonical form is accepted, each part a valid name, so that an identity
// passed on to a target cannot carry anything else.
func identityCluster(id string) (string, bool) {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return "", false
	}
	cluster, rest, ok := strings.Cut(rest, "/ns/")
	if !ok {
		return "", false
	}
	ns, sa, ok := strings.Cut(rest, "/sa/")
	if !ok || !model.ValidClusterName(cluster) || !model.ValidName(ns) || !model.ValidName(sa) {
		return "", false
	}
	return cluster, true
}

// TLSConfig is the configuration a peer listener serves with: the proxy's
// cluster certificate, TLS 1.3, HTTP/2, and a client certificate of
// another proxy required and checked against roots.
func TLSConfig(id *pki.Identity, roots *x509.CertPool) *tls.Config {
	v := newVerifier(roots, x509.ExtKeyUsageClientAuth)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return id.Certificate(), nil
		},
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return v.verify(cs, "")
		},
	}
}
