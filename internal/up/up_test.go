package up

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/model"
)

// Edge Gateways without an address are published at the proxy's bind
// address only when it is one IP address.
func TestProxyAddress(t *testing.T) {
	for bind, want := range map[string]netip.Addr{
		"127.0.0.1":   netip.MustParseAddr("127.0.0.1"),
		"198.18.70.1": netip.MustParseAddr("198.18.70.1"),
		"::1":         netip.MustParseAddr("::1"),
		"0.0.0.0":     {},
		"::":          {},
		"localhost":   {},
		"":            {},
	} {
		if got := proxyAddress(bind); got != want {
			t.Errorf("proxyAddress(%q) = %v, want %v", bind, got, want)
		}
	}
}

// The reporter lists a small configuration's services line by line, and a
// large one's in one line of counts, its services at debug level only.
func TestReporter(t *testing.T) {
	snap := func(rev int64, n int) *model.Snapshot {
		s := &model.Snapshot{Revision: rev}
		for i := range n {
			s.Services = append(s.Services, model.Service{Meta: model.Meta{Name: fmt.Sprintf("svc-%d", i)}})
		}
		return s
	}
	var out, logs bytes.Buffer
	r := newReporter(&out, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	r.proxyUpdated(snap(1, 2), nil)
	r.proxyUpdated(snap(2, 2), nil) // unchanged: not printed again
	if got, want := out.String(), "proxy: serving revision 1\nservice svc-0: (any host) (port )\nservice svc-1: (any host) (port )\n"; got != want {
		t.Errorf("small configuration printed %q, want %q", got, want)
	}
	out.Reset()
	r.proxyUpdated(snap(3, 1000), nil)
	if got, want := out.String(), "proxy: serving revision 3: 1000 services, 0 target groups\n"; got != want {
		t.Errorf("large configuration printed %q, want %q", got, want)
	}
	if logs.Len() != 0 {
		t.Errorf("services logged at info level: %q", logs.String())
	}
	debug := newReporter(io.Discard, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	debug.proxyUpdated(snap(4, 1000), nil)
	if n := strings.Count(logs.String(), `msg="service served"`); n != 1000 {
		t.Errorf("%d services logged at debug level, want 1000", n)
	}
}
