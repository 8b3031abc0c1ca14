package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// bodyReader is a scripted target's serve that reads each request and its
// whole body, answering 200 "got N"; released counts the connections it saw
// end while a body was still coming.
func bodyReader(released *atomic.Int32) func(net.Conn, *bufio.Reader) {
	return func(conn net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, err := io.ReadAll(req.Body)
			if err != nil {
				released.Add(1)
				return
			}
			fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\ngot %d", len(fmt.Sprintf("got %d", len(b))), len(b))
		}
	}
}

// slowBody sends head, then body one byte per interval, on conn, and
// returns the response and how long it took to come.
func slowBody(t *testing.T, conn net.Conn, head, body string, interval time.Duration) (*http.Response, string, time.Duration) {
	t.Helper()
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := range len(body) {
			if _, err := io.WriteString(conn, body[i:i+1]); err != nil {
				return
			}
			time.Sleep(interval)
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), time.Since(start)
}

// A client that sends its request body one byte per interval longer than
// the body idle timeout is answered 408, and the target connection its
// request held is closed rather than pinned for minutes; on both request
// paths, over HTTP and HTTPS (HTTP/1.1), with a length or chunked. A client
// as slow whose every byte comes within the timeout is served: the limit is
// per wait, not per body.
func TestRequestBodyIdleTimeout(t *testing.T) {
	// Wide margins both ways: the served client's gaps are a fortieth of
	// the timeout, so a loaded machine's scheduling delays do not make it
	// late (at 250 ms, a 25 ms gap once came late enough at load 19; at
	// 500 ms once more at load 15, over HTTPS with a chunked body).
	const idle = time.Second
	const served = idle / 40
	bodies := []struct {
		name, head string
		body       string
	}{
		{"length", "POST /up HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 6\r\n\r\n", "abcdef"},
		{"chunked", "POST /up HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\n\r\n", "1\r\na\r\n1\r\nb\r\n0\r\n\r\n"},
	}
	ca := pki.NewCA(t)
	leaf := ca.Issue(t, "shop.example.com")
	for _, disable := range []bool{false, true} {
		for _, https := range []bool{false, true} {
			for _, b := range bodies {
				t.Run(fmt.Sprintf("%s/https=%v/netHTTPOnly=%v", b.name, https, disable), func(t *testing.T) {
					var released atomic.Int32
					tgt, _ := scriptedTarget(t, bodyReader(&released))
					p := newProxyWith(t, Config{DisableFastPath: disable, RequestBodyIdleTimeout: idle})
					snap := oneRoute(1, []model.TargetGroup{group("g", tgt)}, to("g", 1))
					dial := func() net.Conn { return dialRaw(t, addrOf(p, webPort), "") }
					if https {
						snap.Certificates = []model.Certificate{{Meta: model.Meta{Name: "shop", Owner: cluster, Revision: 1}, CertPEM: string(leaf.CertPEM), KeyPEM: string(leaf.KeyPEM)}}
						snap.Services[0].Listeners = []model.Listener{{Name: "https", Port: 8443, Protocol: model.ProtocolHTTPS, Certificates: []string{"shop"}}}
						dial = func() net.Conn {
							conn, err := tls.Dial("tcp", addrOf(p, 8443), &tls.Config{ServerName: "shop.example.com", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}})
							if err != nil {
								t.Fatal(err)
							}
							return conn
						}
					}
					update(t, p, snap)

					resp, _, took := slowBody(t, dial(), b.head, b.body, 2*idle)
					if resp.StatusCode != http.StatusRequestTimeout {
						t.Errorf("a byte every %v: status %d, want 408", 2*idle, resp.StatusCode)
					}
					if took > 4*idle {
						t.Errorf("answered after %v", took)
					}
					testsync.WaitFor(t, 5*time.Second, "the target connection to be released", func() bool { return released.Load() == 1 })

					resp, got, _ := slowBody(t, dial(), b.head, b.body, served)
					if resp.StatusCode != http.StatusOK || !strings.HasPrefix(got, "got ") {
						t.Errorf("a byte every %v: %d %q, want 200", served, resp.StatusCode, got)
					}
				})
			}
		}
	}
}

// A target that stops sending its response body midway is cut off after
// the response idle timeout: the client's response ends early (the fast
// path has sent what came; net/http, which had not flushed it, closes the
// connection), and the target connection is closed. On both request
// paths.
func TestResponseIdleTimeout(t *testing.T) {
	const idle = 150 * time.Millisecond
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("netHTTPOnly=%v", disable), func(t *testing.T) {
			var closed atomic.Int32
			tgt, _ := scriptedTarget(t, func(conn net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
				// Stall until the proxy gives up on the rest.
				if _, err := br.ReadByte(); err != nil {
					closed.Add(1)
				}
			})
			p := newProxyWith(t, Config{DisableFastPath: disable, ResponseIdleTimeout: idle})
			update(t, p, oneRoute(1, []model.TargetGroup{group("g", tgt)}, to("g", 1)))
			start := time.Now()
			resp, err := http.Get("http://" + addrOf(p, webPort) + "/")
			if err == nil {
				var b []byte
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil || !strings.HasPrefix("ab", string(b)) {
					t.Errorf("body %q, %v; want \"ab\" at most, cut off", b, err)
				}
			}
			if d := time.Since(start); d < idle || d > 3*time.Second {
				t.Errorf("cut off after %v, want about %v", d, idle)
			}
			testsync.WaitFor(t, 5*time.Second, "the target connection to be closed", func() bool { return closed.Load() == 1 })
		})
	}
}

// Config.MaxRequestBodyBytes: a declared length over it is answered 413
// before anything reaches a target; a chunked body that grows past it is
// cut off with 413.
func TestMaxRequestBodyBytes(t *testing.T) {
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("netHTTPOnly=%v", disable), func(t *testing.T) {
			var released atomic.Int32
			tgt, conns := scriptedTarget(t, bodyReader(&released))
			p := newProxyWith(t, Config{DisableFastPath: disable, MaxRequestBodyBytes: 10})
			update(t, p, oneRoute(1, []model.TargetGroup{group("g", tgt)}, to("g", 1)))
			addr := addrOf(p, webPort)

			resp, body := exchangeRaw(t, addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
			if resp.StatusCode != http.StatusOK || string(body) != "got 10" {
				t.Errorf("10 bytes: %d %q, want 200", resp.StatusCode, body)
			}
			before := conns.Load()
			resp, _ = exchangeRaw(t, addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n0123456789X")
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("11 bytes declared: status %d, want 413", resp.StatusCode)
			}
			if conns.Load() != before {
				t.Error("a declared oversize body reached the target")
			}
			resp, _ = exchangeRaw(t, addr, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n")
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("16 bytes chunked: status %d, want 413", resp.StatusCode)
			}
		})
	}
}
