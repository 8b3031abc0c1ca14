package framing

import (
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// netHTTPDiffers is what Go's net/http server, alone, does with the rows
// where it departs from the table: the reason the proxy reads every
// connection net/http serves through an h1.Guard.
var netHTTPDiffers = map[string]string{
	"CL.TE":                                "serves it chunked (drops Content-Length), keeps the connection",
	"TE.CL":                                "serves it chunked (drops Content-Length), keeps the connection",
	"TE with Content-Length: 0":            "serves it chunked, keeps the connection",
	"obs-fold Transfer-Encoding":           "unfolds it to \"chunked\", serves it, keeps the connection",
	"obs-fold continues Transfer-Encoding": "unfolds it to \"gzip chunked\": 501, closes",
	"obs-fold Content-Length":              "unfolds it, serves 5 bytes, keeps the connection",
	"obs-fold other field":                 "unfolds it, serves it, keeps the connection",
	"HTTP/1.0 chunked":                     "ignores Transfer-Encoding in HTTP/1.0: body 0 bytes, the chunks read as the next request",
	"HTTP/1.0 chunked with Content-Length": "ignores Transfer-Encoding, reads 3 bytes by Content-Length, keeps the connection",
	"gzip alone":                           "501 Not Implemented (RFC 9112 6.3 requires 400), closes",
	"chunked, gzip":                        "501, closes",
	"identity":                             "501, closes",
	"chunked, chunked":                     "501, closes",
	"two fields chunked and chunked":       "501, closes",
	"xchunked":                             "501, closes",
	"HTTP/0.9 request line":                "waits for 14 bytes (the h2c preface check) until the head timeout",
	"HTTP/0.9 request line, LF":            "waits for 14 bytes (the h2c preface check) until the head timeout",
}

// TestNetHTTPAlone runs the table against a bare net/http server set up
// as the proxy's (HTTP/1 and h2c), to record where it departs from RFC
// 9112 as the table reads it: exactly the rows of netHTTPDiffers. When a
// Go release changes one, this says so.
func TestNetHTTPAlone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(Echo), ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	// The rows run at once: the two that hang take 5 s each.
	errs := make([]error, len(Table))
	var wg sync.WaitGroup
	for i, c := range Table {
		wg.Go(func() { errs[i] = Run(ln.Addr().String(), "", c) })
	}
	wg.Wait()
	differs := 0
	for i, c := range Table {
		err := errs[i]
		if err != nil {
			differs++
		}
		_, listed := netHTTPDiffers[c.Name]
		switch {
		case err != nil && !listed:
			t.Errorf("net/http departs from the table on %q, not recorded: %v", c.Name, err)
		case err == nil && listed:
			t.Errorf("net/http now follows the table on %q (recorded: %s)", c.Name, netHTTPDiffers[c.Name])
		case err != nil:
			t.Logf("%s: %s (%v)", c.Name, netHTTPDiffers[c.Name], err)
		}
	}
	t.Logf("net/http alone departs from the table on %d of %d rows", differs, len(Table))
}
