package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/pki"
)

// recordConn keeps the first bytes a target read from the proxy.
type recordConn struct {
	net.Conn
	tls   bool // a TLS connection (ALPN h2), this its plaintext
	mu    sync.Mutex
	first []byte
}

func (c *recordConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if room := 512 - len(c.first); room > 0 {
		c.first = append(c.first, p[:min(n, room)]...)
	}
	c.mu.Unlock()
	return n, err
}

// clientSettings parses the client preface's SETTINGS from what c read.
func (c *recordConn) clientSettings(t *testing.T) *http2.SettingsFrame {
	t.Helper()
	c.mu.Lock()
	b := bytes.Clone(c.first)
	c.mu.Unlock()
	if !bytes.HasPrefix(b, []byte(http2.ClientPreface)) {
		t.Fatalf("target read %q, not the client preface", b)
	}
	f, err := http2.NewFramer(nil, bytes.NewReader(b[len(http2.ClientPreface):])).ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %v, not SETTINGS", f)
	}
	return sf
}

// connsOf are the connections a test target accepted, closed by closeAll.
var connsOf sync.Map // net.Listener → *[]net.Conn (under connsMu)
var connsMu sync.Mutex

// accept accepts a connection on ln, kept for closeAll, and counts its
// goroutine in wg.
func accept(ln net.Listener, wg *sync.WaitGroup) (net.Conn, error) {
	nc, err := ln.Accept()
	if err != nil {
		return nil, err
	}
	connsMu.Lock()
	v, _ := connsOf.LoadOrStore(ln, new([]net.Conn))
	l := v.(*[]net.Conn)
	*l = append(*l, nc)
	wg.Add(1)
	connsMu.Unlock()
	return nc, nil
}

// closeAll closes ln and the connections it accepted, and waits for their
// goroutines.
func closeAll(ln net.Listener, wg *sync.WaitGroup) func() {
	return func() {
		ln.Close()
		connsMu.Lock()
		if v, ok := connsOf.LoadAndDelete(ln); ok {
			for _, c := range *v.(*[]net.Conn) {
				c.Close()
			}
		}
		connsMu.Unlock()
		wg.Wait()
	}
}

// recordListener hands net/http's server the connections it accepted,
// after their TLS handshake (ALPN h2) when it has a config, as
// recordConns: the server speaks HTTP/2 with prior knowledge on them.
type recordListener struct {
	net.Listener
	cfg      *tls.Config
	accepted func(*recordConn)
}

func (l *recordListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var c net.Conn = nc
		if l.cfg != nil {
			tc := tls.Server(nc, l.cfg)
			if tc.Handshake() != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
				nc.Close()
				continue
			}
			c = tc
		}
		rc := &recordConn{Conn: c, tls: l.cfg != nil}
		if l.accepted != nil {
			l.accepted(rc)
		}
		return rc, nil
	}
}

// h2Target serves h on loopback with net/http's HTTP/2 server, h2c or over
// TLS (ALPN h2), allowing maxStreams streams per connection (0: the
// server's default), and reports each connection it accepted.
func h2Target(t *testing.T, useTLS bool, maxStreams int, h http.Handler, accepted func(*recordConn)) model.Target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordListener{Listener: ln, accepted: accepted}
	if useTLS {
		rl.cfg = &tls.Config{Certificates: []tls.Certificate{pki.NewCA(t).Issue(t, "target.example.com").TLS(t)}, NextProtos: []string{"h2"}}
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols), HTTP2: &http.HTTP2Config{MaxConcurrentStreams: maxStreams}}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(rl)
	t.Cleanup(func() { srv.Close() })
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(port)
	return model.Target{Address: host, Port: int32(n), Cluster: cluster, State: model.TargetActive}
}

// HTTP2 targets, h2c and over TLS, are spoken to by the proxy's own
// HTTP/2 client (peer.TargetTransport), not by net/http's transport: the
// SETTINGS of its preface are its own (a 1 MiB stream window and header
// list bound, where net/http's are 4 MiB and 10 MiB).
func TestH2TargetTransportIsOurs(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%t", useTLS), func(t *testing.T) {
			var mu sync.Mutex
			var conns []*recordConn
			tg := h2Target(t, useTLS, 0, http.HandlerFunc(protoBackend), func(c *recordConn) {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			})
			proto := model.ProtocolHTTP
			if useTLS {
				proto = model.ProtocolHTTPS
			}
			g := versioned(group("h2", tg), proto, model.HTTP2)
			p := newTestProxy(t, nil)
			update(t, p, &model.Snapshot{Objects: model.Objects{Networks: testNetworks, TargetGroups: []model.TargetGroup{g},
				Services: []model.Service{edgeService("h2", []string{"h2.example.com"}, model.Rule{Action: forward(to("h2", 1))})}}, Revision: 1})
			_, got := body(t, h2cClient(), "http://"+addrOf(p, webPort)+"/", "h2.example.com")
			// (The handler sees no TLS: the server reads recordConn.)
			if want := "HTTP/2.0 tls=false"; got != want {
				t.Fatalf("target saw %q, want %q", got, want)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(conns) != 1 || conns[0].tls != useTLS {
				t.Fatalf("%d connections to the target, want 1 (TLS %t)", len(conns), useTLS)
			}
			sf := conns[0].clientSettings(t)
			win, _ := sf.Value(http2.SettingInitialWindowSize)
			list, _ := sf.Value(http2.SettingMaxHeaderListSize)
			if win != 1<<20 || list != 1<<20 {
				t.Errorf("client preface SETTINGS window %d, header list %d: not peer.TargetTransport's (1 MiB each)", win, list)
			}
		})
	}
}

// A target that allows one stream per connection serves 20 concurrent
// requests: the proxy opens more connections while every one is full and
// never opens a second stream on one (net/http's server would refuse it).
func TestH2TargetMaxConcurrentStreamsOne(t *testing.T) {
	var conns, cur, most atomic.Int32
	tg := h2Target(t, false, 1, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		defer cur.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}), func(*recordConn) { conns.Add(1) })
	postEchoes(t, versioned(group("one", tg), model.ProtocolHTTP, model.GRPC), 20, 1)
	if n := conns.Load(); n < 2 || n > 20 {
		t.Errorf("%d connections to the target, want between 2 and 20", n)
	}
	if most.Load() < 2 {
		t.Errorf("at most %d requests at the target at once: the connections were not used concurrently", most.Load())
	}
}

// goAwayTarget is an h2c target written with the framer: on each
// connection it answers `answer` requests (echoing their bodies), then
// sends GOAWAY naming the last of them and ignores every later stream,
// as a target shutting down does. It counts the streams it ignored.
type goAwayTarget struct {
	answer  int
	ignored atomic.Int32
	goAways atomic.Int32
}

func (g *goAwayTarget) serve(t *testing.T) model.Target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(closeAll(ln, &wg))
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := accept(ln, &wg)
			if err != nil {
				return
			}
			go func() {
				defer wg.Done()
				defer nc.Close()
				g.conn(nc)
			}()
		}
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(port)
	return model.Target{Address: host, Port: int32(n), Cluster: cluster, State: model.TargetActive}
}

func (g *goAwayTarget) conn(nc net.Conn) {
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(nc)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(br, preface); err != nil {
		return
	}
	bw := bufio.NewWriter(nc)
	fr := http2.NewFramer(bw, br)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	fr.WriteSettings()
	bw.Flush()
	bodies := map[uint32]*bytes.Buffer{}
	answered := 0
	var lastID uint32
	goneAway := false
	respond := func(id uint32) {
		hbuf.Reset()
		enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true})
		fr.WriteData(id, true, bodies[id].Bytes())
		delete(bodies, id)
		answered++
		if answered == g.answer {
			lastID = id
			goneAway = true
			g.goAways.Add(1)
			fr.WriteGoAway(id, http2.ErrCodeNo, nil)
		}
		bw.Flush()
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
				bw.Flush()
			}
		case *http2.MetaHeadersFrame:
			if goneAway && f.StreamID > lastID {
				g.ignored.Add(1)
				continue
			}
			bodies[f.StreamID] = new(bytes.Buffer)
			if f.StreamEnded() {
				respond(f.StreamID)
			}
		case *http2.DataFrame:
			b := bodies[f.StreamID]
			if b == nil {
				continue
			}
			b.Write(f.Data())
			if n := uint32(len(f.Data())); n > 0 {
				fr.WriteWindowUpdate(0, n)
				fr.WriteWindowUpdate(f.StreamID, n)
				bw.Flush()
			}
			if f.StreamEnded() {
				respond(f.StreamID)
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
				bw.Flush()
			}
		}
	}
}

// A target that sends GOAWAY under load, ignoring the streams above it,
// costs the clients nothing: the proxy sends what the target did not
// process again, on a new connection, request bodies included.
func TestH2TargetGoAwayMidLoad(t *testing.T) {
	gt := &goAwayTarget{answer: 20}
	postEchoes(t, versioned(group("ga", gt.serve(t)), model.ProtocolHTTP, model.GRPC), 20, 20)
	t.Logf("%d GOAWAYs, %d streams ignored", gt.goAways.Load(), gt.ignored.Load())
	if gt.goAways.Load() < 5 || gt.ignored.Load() == 0 {
		t.Errorf("%d GOAWAYs, %d streams ignored: the test did not exercise unprocessed streams", gt.goAways.Load(), gt.ignored.Load())
	}
}

// postEchoes serves target group g at <g>.example.com on a new proxy and
// sends it workers concurrent streams of calls POSTs each, over HTTP/2,
// failing t for every one not echoed with a 200.
func postEchoes(t *testing.T, g model.TargetGroup, workers, calls int) {
	t.Helper()
	host := g.Name + ".example.com"
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{Networks: testNetworks, TargetGroups: []model.TargetGroup{g},
		Services: []model.Service{edgeService(g.Name, []string{host}, model.Rule{Action: forward(to(g.Name, 1))})}}, Revision: 1})
	c := h2cClient()
	c.Timeout = 20 * time.Second
	url := "http://" + addrOf(p, webPort) + "/"
	var wg sync.WaitGroup
	errs := make(chan error, workers*calls)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				if err := postEcho(c, url, host, fmt.Sprintf("worker-%d-call-%d", w, i)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// postEcho POSTs body to url with Host host through c and checks that the
// target echoed it with a 200.
func postEcho(c *http.Client, url, host, body string) error {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != body {
		return fmt.Errorf("%s: %d %q", body, resp.StatusCode, b)
	}
	return nil
}
