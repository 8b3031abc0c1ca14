package proxy

import (
	"testing"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/framing"
)

// framingPaths are the request paths the framing table runs on.
var framingPaths = []struct {
	name    string
	disable bool // Config.DisableFastPath
	prefix  string
}{
	{"fast", false, ""},
	// A connection the fast path handed to net/http before the row's
	// request, which net/http then parses.
	{"handed-off", false, framing.Warmup},
	{"net/http", true, ""},
	{"after a declined upgrade", false, framing.DeclinedUpgrade},
}

// TestFramingTable runs the HTTP/1 framing table (test/framing, written
// from RFC 9112) on both request paths: the fast path (which hands every
// framing it does not take to net/http), a connection it handed off
// before the row's request, and net/http alone.
func TestFramingTable(t *testing.T) {
	echo := bodyEcho(t)
	for _, path := range framingPaths {
		p := newProxyWith(t, Config{DisableFastPath: path.disable})
		update(t, p, oneRoute(1, []model.TargetGroup{group("a", target(t, echo, model.TargetActive))}, to("a", 1)))
		addr := addrOf(p, webPort)
		for _, c := range framing.Table {
			t.Run(path.name+"/"+c.Name, func(t *testing.T) {
				t.Parallel()
				if err := framing.Run(addr, path.prefix, c); err != nil {
					t.Errorf("%s (RFC 9112 %s): %v", c.Name, c.RFC, err)
				}
			})
		}
	}
}
