package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/model"
)

// headerEcho answers every request with the headers it received, as JSON.
func headerEcho(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// rawRequest sends head (request line and header lines, without the blank
// line, lines ending in "\n") on a connection of its own and returns the
// response.
func rawRequest(t *testing.T, addr, head string) (*http.Response, []byte) {
	t.Helper()
	return exchangeRaw(t, addr, strings.ReplaceAll(head, "\n", "\r\n")+"\r\n")
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestForwardedAndIdentityHeaders(t *testing.T) {
	echo := headerEcho(t)
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("echo", target(t, echo, model.TargetActive))}, to("echo", 1)))
	addr := addrOf(p, webPort)

	// A client forging every header the proxy owns, in every spelling,
	// plus hop-by-hop headers that must not reach the target.
	forged := `GET /path HTTP/1.1
Host: shop.example.com
X-Trellis-Identity: Type=AWS_IAM; Principal=arn:aws:iam::1:root
x-trellis-network: SourceCluster=prod; Network=mesh
X-TRELLIS-TARGET: Service=payments; Network=mesh; TargetGroup=payments
X-Trellis-Request-Id: forged
X-Trellis-Anything-Else: x
X_Trellis_Identity: Type=Admin
x_trellis-network: SourceCluster=prod
X-Forwarded-For: 6.6.6.6
X-Forwarded-For: 7.7.7.7
X-Forwarded-For-Port: 1
X-Forwarded-For-Proto: https
X-Forwarded-Proto: https
X-Forwarded-Port: 443
X-Forwarded-Host: evil.example.com
Forwarded: for=6.6.6.6;proto=https
Connection: X-Hop-Secret, keep-alive
X-Hop-Secret: 1
Keep-Alive: timeout=5
Proxy-Connection: keep-alive
X-Kept: yes
`
	var ids []string
	for range 2 {
		resp, body := rawRequest(t, addr, forged)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var seen http.Header
		if err := json.Unmarshal(body, &seen); err != nil {
			t.Fatalf("backend reply %s: %v", body, err)
		}
		want := map[string]string{
			"X-Trellis-Identity":    "Type=Anonymous",
			"X-Trellis-Network":     "SourceCluster=local; Network=edge",
			"X-Trellis-Target":      "Service=svc; Network=edge; TargetGroup=echo",
			"X-Forwarded-For":       "6.6.6.6, 7.7.7.7, 127.0.0.1",
			"X-Forwarded-For-Port":  fmt.Sprint(webPort),
			"X-Forwarded-Port":      fmt.Sprint(webPort),
			"X-Forwarded-For-Proto": "http",
			"X-Forwarded-Proto":     "http",
			"X-Forwarded-Host":      "shop.example.com",
			"X-Kept":                "yes",
		}
		for k, v := range want {
			if got := seen[k]; len(got) != 1 || got[0] != v {
				t.Errorf("%s = %q, want exactly %q", k, got, v)
			}
		}
		for _, k := range []string{"X-Trellis-Anything-Else", "X_trellis_identity", "X_trellis-Network", "Forwarded", "X-Hop-Secret", "Keep-Alive", "Proxy-Connection"} {
			if v, ok := seen[k]; ok {
				t.Errorf("target received %s: %q", k, v)
			}
		}
		for k := range seen {
			if isTrellisHeader(k) && want[k] == "" && k != headerRequestID {
				t.Errorf("target received unexpected %s: %q", k, seen[k])
			}
		}
		id := seen.Get(headerRequestID)
		if len(seen[headerRequestID]) != 1 || !uuidRE.MatchString(id) {
			t.Errorf("%s = %q, want one random UUID", headerRequestID, seen[headerRequestID])
		}
		ids = append(ids, id)
	}
	if ids[0] == ids[1] {
		t.Errorf("two requests got the same request ID %s", ids[0])
	}
}

func TestIsTrellisHeader(t *testing.T) {
	for name, want := range map[string]bool{
		"X-Trellis-Identity": true, "x-trellis-identity": true, "X_TRELLIS_ID": true, "x_trellis-": true,
		"X-Trellis": false, "X-Trellisx-Id": false, "X-Forwarded-For": false, "": false, "Y-Trellis-Id": false,
		"X\rTrellis-Id": false, "X-Tre\x4clis-Id": true,
	} {
		if got := isTrellisHeader(name); got != want {
			t.Errorf("isTrellisHeader(%q) = %v, want %v", name, got, want)
		}
	}
}

// FuzzForwardHeader checks that no field a client can name survives the
// forwarding rules if a CGI-style server would read it as an x-trellis- or
// x-amzn-lattice- field, and that no other field is lost for it.
func FuzzForwardHeader(f *testing.F) {
	for _, s := range []string{"X-Trellis-Identity", "x_trellis_network", "X-Trellis", "X-Forwarded-For", "x-TRELLIS-", "X-Trellis\x00", "x_amzn_lattice_identity"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		h := http.Header{name: {"v"}, "Other": {"v"}}
		forwardHeader(h, h)
		norm := strings.ReplaceAll(strings.ToLower(name), "_", "-")
		_, kept := h[name]
		if identity := strings.HasPrefix(norm, "x-trellis-") || strings.HasPrefix(norm, "x-amzn-lattice-"); identity && kept {
			t.Errorf("header %q kept", name)
		}
		if name != "Other" && h.Get("Other") != "v" {
			t.Errorf("forwarding %q removed another header", name)
		}
	})
}

// A network's X-Forwarded-For mode decides what the target gets, on both
// request paths and with the rule's header edits or without: append adds
// the client's address, preserve forwards the client's list as sent (and
// none when there is none), remove drops it. The identity headers are the
// proxy's in every mode.
func TestForwardedForModes(t *testing.T) {
	echo := headerEcho(t)
	tests := []struct {
		mode        model.ForwardedForMode
		sent        []string
		want        []string // nil: no X-Forwarded-For
		wantNoPrior []string
	}{
		{"", []string{"6.6.6.6", "7.7.7.7"}, []string{"6.6.6.6, 7.7.7.7, 127.0.0.1"}, []string{"127.0.0.1"}},
		{model.ForwardedForAppend, []string{"6.6.6.6"}, []string{"6.6.6.6, 127.0.0.1"}, []string{"127.0.0.1"}},
		{model.ForwardedForPreserve, []string{"6.6.6.6", "7.7.7.7"}, []string{"6.6.6.6, 7.7.7.7"}, nil},
		{model.ForwardedForRemove, []string{"6.6.6.6"}, nil, nil},
	}
	for _, tt := range tests {
		for _, disable := range []bool{false, true} {
			for _, path := range []string{"/plain", "/edit"} {
				t.Run(fmt.Sprintf("%q/netHTTPOnly=%v%s", tt.mode, disable, path), func(t *testing.T) {
					snap := oneRoute(1, []model.TargetGroup{group("echo", target(t, echo, model.TargetActive))}, to("echo", 1))
					snap.Networks = slices.Clone(snap.Networks)
					for i := range snap.Networks {
						snap.Networks[i].ForwardedFor = tt.mode
					}
					snap.Services[0].Rules = append([]model.Rule{{
						Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/edit"}}},
						Filters: []model.Filter{{RequestHeaders: &model.HeaderFilter{Set: []model.Header{{Name: "X-Edited", Value: "1"}}}}},
						Action:  forward(to("echo", 1)),
					}}, snap.Services[0].Rules...)
					p := newProxyWith(t, Config{DisableFastPath: disable})
					update(t, p, snap)
					for _, sent := range [][]string{tt.sent, nil} {
						head := "GET " + path + " HTTP/1.1\nHost: shop.example.com\nX-Trellis-Identity: Type=Admin\n"
						for _, v := range sent {
							head += "X-Forwarded-For: " + v + "\n"
						}
						resp, body := rawRequest(t, addrOf(p, webPort), head)
						var seen http.Header
						if err := json.Unmarshal(body, &seen); err != nil || resp.StatusCode != http.StatusOK {
							t.Fatalf("%d %s: %v", resp.StatusCode, body, err)
						}
						want := tt.want
						if sent == nil {
							want = tt.wantNoPrior
						}
						if got := seen["X-Forwarded-For"]; !slices.Equal(got, want) {
							t.Errorf("sent %q: target received X-Forwarded-For %q, want %q", sent, got, want)
						}
						if got := seen.Get(headerIdentity); got != "Type=Anonymous" {
							t.Errorf("target received %s %q", headerIdentity, got)
						}
					}
				})
			}
		}
	}
}

// equalFoldASCII agrees with strings.EqualFold for strings of one length
// of which one is ASCII, and takes no Unicode folding.
func TestEqualFoldASCII(t *testing.T) {
	for c := range 256 {
		for d := range 128 {
			a, b := string([]byte{'x', byte(c)}), string([]byte{'X', byte(d)})
			if got, want := equalFoldASCII(a, b), strings.EqualFold(a, b); got != want {
				t.Errorf("equalFoldASCII(%q, %q) = %v, want %v", a, b, got, want)
			}
			if got, want := equalFoldASCII([]byte(b), a), strings.EqualFold(b, a); got != want {
				t.Errorf("equalFoldASCII(%q, %q) = %v, want %v", b, a, got, want)
			}
		}
	}
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"Content-Length", "content-length", true}, {"X-Env", "x-env", true}, {"X-Env", "x-en", false},
		{"\u212Aeep-Alive", "Keep-Alive", false}, {"Tran\u017Ffer-Encoding", "Transfer-Encoding", false},
	} {
		if got := equalFoldASCII(tc.a, tc.b); got != tc.want {
			t.Errorf("equalFoldASCII(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// An upgrade to HTTP/2 (h2c, in any spelling) is not passed to the target,
// on either request path: a target that switched would take every later
// stream on the connection as a request straight from the client, routed
// and judged by no one. A WebSocket upgrade still is. On the old code the
// target got Upgrade: h2c with Connection: Upgrade.
func TestH2CUpgradeNotForwarded(t *testing.T) {
	echo := headerEcho(t)
	for _, disable := range []bool{false, true} {
		p := newProxyWith(t, Config{DisableFastPath: disable})
		update(t, p, oneRoute(1, []model.TargetGroup{group("echo", target(t, echo, model.TargetActive))}, to("echo", 1)))
		addr := addrOf(p, webPort)
		for _, tc := range []struct {
			upgrade, connection string
			forwarded           bool
		}{
			{"h2c", "Upgrade, HTTP2-Settings", false},
			{"h2c", "Upgrade", false},
			{"H2C", "upgrade", false},
			{"websocket, h2c", "Upgrade", false},
			{"HTTP/2.0", "Upgrade", false},
			{"websocket", "Upgrade", true},
		} {
			resp, body := rawRequest(t, addr, "GET /path HTTP/1.1\nHost: shop.example.com\nUpgrade: "+tc.upgrade+
				"\nConnection: "+tc.connection+"\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\nConnection: close\n")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("DisableFastPath=%v Upgrade %q: %d %s", disable, tc.upgrade, resp.StatusCode, body)
			}
			var seen http.Header
			if err := json.Unmarshal(body, &seen); err != nil {
				t.Fatalf("Upgrade %q: %v in %q", tc.upgrade, err, body)
			}
			if tc.forwarded && (seen.Get("Upgrade") != tc.upgrade || seen.Get("Connection") != "Upgrade") {
				t.Errorf("DisableFastPath=%v: Upgrade %q reached the target as Upgrade %q, Connection %q", disable, tc.upgrade, seen["Upgrade"], seen["Connection"])
			}
			if !tc.forwarded && (seen["Upgrade"] != nil || seen["Connection"] != nil) {
				t.Errorf("DisableFastPath=%v: Upgrade %q reached the target: Upgrade %q, Connection %q", disable, tc.upgrade, seen["Upgrade"], seen["Connection"])
			}
		}
	}
}
