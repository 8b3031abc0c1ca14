package proxy

import (
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/test/testsync"
)

// bigBody is size bytes of a repeating pattern, made as they are read.
type bigBody struct{ left, pos int64 }

// bigPattern repeats every 64 KiB; a read starts where the last ended.

var bigPattern = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}()

func (b *bigBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	off := b.pos % int64(len(bigPattern))
	n := copy(p, bigPattern[off:min(int64(len(bigPattern)), off+b.left)])
	b.left -= int64(n)
	b.pos += int64(n)
	return n, nil
}

func bigSum(size int64) string {
	h := crc32.NewIEEE()
	io.Copy(h, &bigBody{left: size})
	return fmt.Sprintf("%d %08x", size, h.Sum32())
}

// 64 MiB cross the hop each way streamed, not held: the heap of the whole
// test process (client, both proxies, target) never grows by more than a
// fraction of the body.
func TestLargeBodiesAcrossThePeerHop(t *testing.T) {
	const size = 64 << 20
	w := newHopWorld(t)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Length", strconv.Itoa(size))
			io.Copy(w, &bigBody{left: size})
			return
		}
		h := crc32.NewIEEE()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %08x", n, h.Sum32())
	}))
	t.Cleanup(be.Close)
	tg := westGroup(t, "blob", be)
	w.update(t, oneRoute(1, []model.TargetGroup{tg}, to("blob", 1)))
	want := bigSum(size)
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{}}
	url := "http://" + addrOf(w.east, webPort) + "/blob"

	stop, start := testsync.HeapPeak(), time.Now()
	resp, err := c.Post(url, "application/octet-stream", &bigBody{left: size})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if up := stop(); string(got) != want || up > 24<<20 {
		t.Errorf("upload: target got %q, want %q; heap grew by %d MiB at most", got, want, up>>20)
	} else {
		t.Logf("upload of 64 MiB in %v: heap grew by %d MiB at most", time.Since(start).Round(time.Millisecond), up>>20)
	}

	stop, start = testsync.HeapPeak(), time.Now()
	resp, err = c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	h := crc32.NewIEEE()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if down := stop(); err != nil || fmt.Sprintf("%d %08x", n, h.Sum32()) != want || down > 24<<20 {
		t.Errorf("download: %d bytes %08x, %v, want %q; heap grew by %d MiB at most", n, h.Sum32(), err, want, down>>20)
	} else {
		t.Logf("download of 64 MiB in %v: heap grew by %d MiB at most", time.Since(start).Round(time.Millisecond), down>>20)
	}
}

// A body the client cuts short on its way across the hop is the client's
// fault, as it is locally: 499 ClientClosedRequest in the access log, and
// the hop to west stays in use (the request after it crosses).
func TestCutBodyAcrossThePeerHop(t *testing.T) {
	var logs testsync.Buffer
	w := newHopWorld(t, func(c *Config) {
		if c.Cluster == "east" {
			c.AccessLog = &logs
			c.test.accessLog = accesslog.Options{FlushInterval: 5 * time.Millisecond}
		}
	})
	echo := bodyEcho(t)
	tg := westGroup(t, "up", echo)
	w.update(t, oneRoute(1, []model.TargetGroup{tg}, to("up", 1)))
	addr := addrOf(w.east, webPort)
	const rounds = 6
	for range rounds {
		sendClientFault(t, addr, "POST /up HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 1000000\r\n\r\n"+string(bigPattern), true)
	}
	var lines []map[string]any
	testsync.WaitFor(t, 5*time.Second, fmt.Sprintf("%d access log lines", rounds), func() bool { lines = logLines(t, &logs); return len(lines) >= rounds })
	for _, l := range lines {
		if l["responseCode"] != float64(statusClientClosed) || l["failureReason"] != string(accesslog.ClientClosedRequest) {
			t.Errorf("access log: %v %v, want 499 ClientClosedRequest", l["responseCode"], l["failureReason"])
		}
	}
	if !w.east.peer.Up(w.westPeer) {
		t.Error("west's proxy was taken out of use after clients cut their bodies short")
	}
	resp, body := exchangeRaw(t, addr, "POST /after HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 2\r\n\r\nok")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("after the cut bodies: %d %s", resp.StatusCode, body)
	}
}
