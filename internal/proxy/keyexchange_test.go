package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/pki"
)

func TestParseKeyExchange(t *testing.T) {
	tests := []struct {
		in      string
		want    []tls.CurveID
		wantErr string
	}{
		{"", nil, ""},
		{"  ", nil, ""},
		{"X25519MLKEM768,X25519", []tls.CurveID{tls.X25519MLKEM768, tls.X25519}, ""},
		{"x25519, p256 ,P384,P521", []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}, ""},
		{"CurveP256", []tls.CurveID{tls.CurveP256}, ""},
		{"SecP256r1MLKEM768,SecP384r1MLKEM1024", []tls.CurveID{tls.SecP256r1MLKEM768, tls.SecP384r1MLKEM1024}, ""},
		{"X448", nil, `unknown key exchange group "X448" (known: X25519MLKEM768,`},
		{"X25519,,P256", nil, "empty key exchange group"},
		{"X25519,", nil, "empty key exchange group"},
		{"X25519,x25519", nil, `"x25519" named twice`},
		{"P256,CurveP256", nil, `"CurveP256" named twice`},
	}
	for _, tc := range tests {
		got, err := ParseKeyExchange(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, %v; want an error saying %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseKeyExchange: any text gives groups it knows, each once, or an
// error; never a panic.
func FuzzParseKeyExchange(f *testing.F) {
	for _, s := range []string{"", "X25519MLKEM768,X25519", "p256, P384", "X448", ",", "X25519,X25519", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids, err := ParseKeyExchange(s)
		if err != nil {
			return
		}
		for i, id := range ids {
			if !slices.ContainsFunc(keyExchangeGroups, func(g keyExchangeGroup) bool { return g.id == id }) || slices.Contains(ids[:i], id) {
				t.Fatalf("%q: %v", s, ids)
			}
		}
	})
}

// An HTTPS listener negotiates the hybrid post-quantum X25519MLKEM768 with
// a client that offers it, by default; with Config.TLSKeyExchange it
// negotiates only the groups named there, and refuses a client that
// offers none of them. On both request paths.
func TestHTTPSKeyExchange(t *testing.T) {
	ca := pki.NewCA(t)
	leaf := ca.Issue(t, "shop.example.com")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	const req = "GET / HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n"
	tests := []struct {
		name   string
		server []tls.CurveID
		client []tls.CurveID
		want   tls.CurveID // 0: the handshake fails
	}{
		{"default", nil, nil, tls.X25519MLKEM768},
		{"default, client X25519", nil, []tls.CurveID{tls.X25519}, tls.X25519},
		{"X25519 and P256", []tls.CurveID{tls.X25519, tls.CurveP256}, nil, tls.X25519},
		{"X25519 and P256, client P256", []tls.CurveID{tls.X25519, tls.CurveP256}, []tls.CurveID{tls.CurveP256}, tls.CurveP256},
		{"X25519 and P256, client X25519MLKEM768", []tls.CurveID{tls.X25519, tls.CurveP256}, []tls.CurveID{tls.X25519MLKEM768}, 0},
		{"X25519MLKEM768", []tls.CurveID{tls.X25519MLKEM768}, []tls.CurveID{tls.X25519}, 0},
	}
	for _, disable := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(tc.name+map[bool]string{true: "/netHTTPOnly"}[disable], func(t *testing.T) {
				p := newProxyWith(t, Config{DisableFastPath: disable, TLSKeyExchange: tc.server})
				update(t, p, httpsSnapshot(leaf, target(t, srv, model.TargetActive)))
				cfg := &tls.Config{ServerName: "shop.example.com", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}, CurvePreferences: tc.client}
				if tc.want == 0 {
					c, err := tls.Dial("tcp", addrOf(p, 8443), cfg)
					if err == nil {
						c.Close()
						t.Fatalf("negotiated %v, want no handshake", c.ConnectionState().CurveID)
					}
					return
				}
				if st := tlsRequest(t, addrOf(p, 8443), cfg, req); st.CurveID != tc.want {
					t.Errorf("negotiated %v, want %v", st.CurveID, tc.want)
				}
			})
		}
	}
}
