package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"trellis.dev/trellis/internal/pki"
	testpki "trellis.dev/trellis/test/pki"
)

// fakePeer is a frame-level peer a test scripts, on one connection of a
// client's pool: it reads the client's preface and frames (noting each),
// and the script writes whatever it wants, valid or not.
type fakePeer struct {
	c    *Client
	conn net.Conn
	fr   *http2.Framer
	// fieldEncoder's block encodes the header blocks the script sends.
	fieldEncoder
	// heads receives the stream id of each request head the client sends;
	// done is closed when the test ends.
	heads chan uint32
	done  chan struct{}
	mu    sync.Mutex
	seen  []string // frames the client sent, as "TYPE detail"
}

// fakeAddr is where the fake peer is listed; a client dialing it again
// (after the fake connection ends) is refused there.
const fakeAddr = "127.0.0.1:1"

func newFakePeer(t testing.TB, id *pki.Identity, ca *pki.CA, tune func(*h2Pool)) *fakePeer {
	t.Helper()
	c := NewClient(id, ca.Pool())
	t.Cleanup(c.Close)
	c.SetPeers(map[string]string{fakeAddr: "west"})
	if tune != nil {
		tune(c.pool)
	}
	cl, sv := net.Pipe()
	t.Cleanup(func() { sv.Close() })
	fp := &fakePeer{c: c, conn: sv, fr: http2.NewFramer(sv, sv), heads: make(chan uint32, 16), done: make(chan struct{})}
	t.Cleanup(func() { close(fp.done) })
	go fp.read()
	pinConn(t, c, cl, id)
	return fp
}

// pinConn makes conn, over which c speaks as id, c's one connection to
// fakeAddr.
func pinConn(t testing.TB, c *Client, conn net.Conn, id *pki.Identity) {
	t.Helper()
	cc, err := c.pool.newConn(conn, fakeAddr, id.Certificate())
	if err != nil {
		t.Fatal(err)
	}
	c.pool.mu.Lock()
	c.pool.peers[fakeAddr] = &h2Peer{conns: []*h2Conn{cc}}
	c.pool.mu.Unlock()
}

func (fp *fakePeer) read() {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(fp.conn, preface); err != nil {
		return
	}
	for {
		f, err := fp.fr.ReadFrame()
		if err != nil {
			return
		}
		var note string
		switch f := f.(type) {
		case *http2.HeadersFrame:
			select {
			case fp.heads <- f.StreamID:
			default:
			}
		case *http2.RSTStreamFrame:
			note = fmt.Sprintf("RST_STREAM %d %v", f.StreamID, f.ErrCode)
		case *http2.GoAwayFrame:
			note = fmt.Sprintf("GOAWAY %v", f.ErrCode)
		case *http2.PingFrame:
			if !f.IsAck() {
				note = "PING"
			}
		}
		if note != "" {
			fp.mu.Lock()
			fp.seen = append(fp.seen, note)
			fp.mu.Unlock()
		}
	}
}

func (fp *fakePeer) sent() string {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return strings.Join(fp.seen, "; ")
}

func (fp *fakePeer) head(id uint32, end bool, fields ...string) {
	fp.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: fp.block(fields...), EndHeaders: true, EndStream: end})
}

// The client holds against a peer that breaks the protocol: each abuse
// ends the stream or the connection with the right error code, the caller
// gets an error (unsent where the peer refused before processing), and
// nothing is buffered beyond a window.
func TestH2ClientAgainstAbusivePeer(t *testing.T) {
	ca, _ := pki.NewCA(time.Now())
	id := testpki.ClusterIdentity(t, ca, "east")
	big := strings.Repeat("v", 4000)
	for _, tc := range []struct {
		name   string
		tune   func(*h2Pool)
		script func(fp *fakePeer, id uint32)
		// readBody reads the response body when there is one.
		wantErr  func(error) bool
		wantSent string // in what the client sent back
	}{
		{name: "REFUSED_STREAM is unsent", script: func(fp *fakePeer, id uint32) {
			fp.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		}, wantErr: Unsent},
		{name: "GOAWAY below the stream is unsent", script: func(fp *fakePeer, id uint32) {
			fp.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}, wantErr: Unsent},
		{name: "DATA beyond the stream's window", script: func(fp *fakePeer, id uint32) {
			fp.head(id, false, ":status", "200")
			chunk := make([]byte, h2MaxFrame)
			for range h2StreamWindow/h2MaxFrame + 2 {
				fp.fr.WriteData(id, false, chunk)
			}
		}, wantErr: isStreamError(http2.ErrCodeFlowControl), wantSent: "RST_STREAM 1 FLOW_CONTROL_ERROR"},
		{name: "PUSH_PROMISE", script: func(fp *fakePeer, id uint32) {
			fp.fr.WritePushPromise(http2.PushPromiseParam{StreamID: id, PromiseID: 2, EndHeaders: true,
				BlockFragment: fp.block(":method", "GET", ":scheme", "https", ":authority", "x", ":path", "/")})
		}, wantErr: brokenConn, wantSent: "GOAWAY PROTOCOL_ERROR"},
		{name: "a stream never opened", script: func(fp *fakePeer, id uint32) {
			fp.fr.WriteData(id+2, false, []byte("x"))
		}, wantErr: brokenConn, wantSent: "GOAWAY PROTOCOL_ERROR"},
		{name: "CONTINUATION flood", script: func(fp *fakePeer, id uint32) {
			fields := []string{":status", "200"}
			for i := range 400 {
				fields = append(fields, fmt.Sprintf("x-%d", i), big)
			}
			b := fp.block(fields...)
			fp.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b[:h2MaxFrame]})
			for b = b[h2MaxFrame:]; len(b) > h2MaxFrame; b = b[h2MaxFrame:] {
				if fp.fr.WriteContinuation(id, false, b[:h2MaxFrame]) != nil {
					return
				}
			}
		}, wantErr: func(err error) bool { return err != nil }},
		{name: "connection window overflow", script: func(fp *fakePeer, id uint32) {
			fp.fr.WriteWindowUpdate(0, 1<<31-1)
		}, wantErr: brokenConn, wantSent: "GOAWAY FLOW_CONTROL_ERROR"},
		{name: "stream window overflow", script: func(fp *fakePeer, id uint32) {
			fp.fr.WriteWindowUpdate(id, 1<<31-1)
		}, wantErr: isStreamError(http2.ErrCodeFlowControl), wantSent: "RST_STREAM 1 FLOW_CONTROL_ERROR"},
		{name: "malformed status", script: func(fp *fakePeer, id uint32) {
			fp.head(id, true, ":status", "2x0")
		}, wantErr: isStreamError(http2.ErrCodeProtocol), wantSent: "RST_STREAM 1 PROTOCOL_ERROR"},
		{name: "endless informational heads", script: func(fp *fakePeer, id uint32) {
			for range h2MaxInformational + 2 {
				fp.head(id, false, ":status", "103")
			}
		}, wantErr: isStreamError(http2.ErrCodeProtocol), wantSent: "RST_STREAM 1 PROTOCOL_ERROR"},
		{name: "DATA before the head", script: func(fp *fakePeer, id uint32) {
			fp.fr.WriteData(id, false, []byte("x"))
		}, wantErr: isStreamError(http2.ErrCodeProtocol), wantSent: "RST_STREAM 1 PROTOCOL_ERROR"},
		{name: "a body longer than its Content-Length", script: func(fp *fakePeer, id uint32) {
			fp.head(id, false, ":status", "200", "content-length", "3")
			fp.fr.WriteData(id, true, []byte("abcdef"))
		}, wantErr: isStreamError(http2.ErrCodeProtocol), wantSent: "RST_STREAM 1 PROTOCOL_ERROR"},
		{name: "a body shorter than its Content-Length", script: func(fp *fakePeer, id uint32) {
			fp.head(id, false, ":status", "200", "content-length", "10")
			fp.fr.WriteData(id, true, []byte("abc"))
		}, wantErr: isStreamError(http2.ErrCodeProtocol), wantSent: "RST_STREAM 1 PROTOCOL_ERROR"},
		{name: "a body for a 204", script: func(fp *fakePeer, id uint32) {
			fp.head(id, false, ":status", "204")
			fp.fr.WriteData(id, true, []byte("x"))
		}, wantErr: isStreamError(http2.ErrCodeProtocol), wantSent: "RST_STREAM 1 PROTOCOL_ERROR"},
		{name: "invalid SETTINGS", script: func(fp *fakePeer, id uint32) {
			fp.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1})
		}, wantErr: brokenConn, wantSent: "GOAWAY PROTOCOL_ERROR"},
		{name: "a peer that answers nothing, PING included", tune: func(p *h2Pool) {
			p.readIdle, p.pingTimeout = 50*time.Millisecond, 100*time.Millisecond
		}, script: func(*fakePeer, uint32) {}, wantErr: brokenConn, wantSent: "PING"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := newFakePeer(t, id, ca, tc.tune)
			scripted := make(chan struct{})
			go func() {
				first := true
				for {
					select {
					case id := <-fp.heads:
						tc.script(fp, id)
					case <-fp.done:
						return
					}
					if first {
						close(scripted)
						first = false
					}
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r := httptestRequest("GET", "http://shop.example/", nil).WithContext(ctx)
			resp, err := fp.c.RoundTrip(r, Request{Cluster: "west", Addr: fakeAddr, TargetGroup: "g", Target: "t:1"})
			if err == nil {
				// The body is read once the script wrote everything: a
				// reader would give the peer more window meanwhile.
				select {
				case <-scripted:
				case <-time.After(5 * time.Second):
					t.Fatal("the script did not finish")
				}
				_, err = io.Copy(io.Discard, resp.Body)
				if s := resp.Body.(*h2Stream); s.buffered > h2StreamWindow {
					t.Errorf("buffered %d bytes", s.buffered)
				}
				resp.Body.Close()
			}
			if ctx.Err() != nil {
				t.Fatalf("the caller waited for its context: %v", err)
			}
			if err == nil || !tc.wantErr(err) {
				t.Errorf("error %v", err)
			}
			deadline := time.Now().Add(2 * time.Second)
			for !strings.Contains(fp.sent(), tc.wantSent) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if !strings.Contains(fp.sent(), tc.wantSent) {
				t.Errorf("the client sent %q, want %q in it", fp.sent(), tc.wantSent)
			}
		})
	}
}

func isStreamError(code http2.ErrCode) func(error) bool {
	return func(err error) bool {
		var se *streamError
		return errors.As(err, &se) && se.code == code && !Unsent(err) && !brokenConn(err)
	}
}

// FuzzH2ClientFrames feeds arbitrary bytes as the peer's side of a
// connection to a GET and a POST with a body: the client must neither
// panic nor keep its callers waiting once the peer is gone.
func FuzzH2ClientFrames(f *testing.F) {
	ca, _ := pki.NewCA(time.Now())
	id, err := ca.IssueIdentity("east", time.Now(), time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := NewClient(id, ca.Pool())
		defer c.Close()
		c.SetPeers(map[string]string{fakeAddr: "west"})
		cl, sv := net.Pipe()
		go io.Copy(io.Discard, sv)
		pinConn(t, c, cl, id)
		done := make(chan struct{})
		go func() {
			defer close(done)
			var wg sync.WaitGroup
			for _, method := range []string{"GET", "POST"} {
				wg.Go(func() {
					var body []byte
					if method == "POST" {
						body = bytes.Repeat([]byte("b"), 70_000)
					}
					r := httptestRequest(method, "http://shop.example/", body)
					resp, err := c.RoundTrip(r, Request{Cluster: "west", Addr: fakeAddr, TargetGroup: "g", Target: "t:1"})
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			}
			wg.Wait()
		}()
		// The requests go out before the peer answers, as it would.
		time.Sleep(time.Millisecond)
		sv.Write(data)
		sv.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the callers still wait after the peer closed the connection")
		}
	})
}

// fuzzSeeds are a peer's answers, valid and not, as a Framer writes them.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	write := func(script func(fr *http2.Framer, enc func(...string) []byte)) {
		seeds = append(seeds, headerStream(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 10})
			script(fr, block)
		}))
	}
	write(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "200", "content-length", "2"), EndHeaders: true})
		fr.WriteData(1, true, []byte("ok"))
		fr.WriteWindowUpdate(0, 100000)
		fr.WriteWindowUpdate(3, 100000)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":status", "201", "trailer", "x-t"), EndHeaders: true})
		fr.WriteData(3, false, []byte("body"))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc("x-t", "v"), EndHeaders: true, EndStream: true})
	})
	write(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WritePing(false, [8]byte{1})
		fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
		fr.WriteGoAway(1, http2.ErrCodeNo, []byte("bye"))
	})
	write(func(fr *http2.Framer, enc func(...string) []byte) {
		b := enc(":status", "200", "x-a", strings.Repeat("a", 100))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:10]})
		fr.WriteContinuation(1, true, b[10:])
		fr.WriteData(1, false, make([]byte, 100))
		fr.WriteRSTStream(1, http2.ErrCodeCancel)
	})
	write(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true, BlockFragment: enc(":method", "GET")})
	})
	write(func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":status", "103"), EndHeaders: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":status", "200"), EndHeaders: true, EndStream: true})
	})
	return seeds
}
