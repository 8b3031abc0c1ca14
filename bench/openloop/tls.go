package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// tlsCmd opens connections as fast as -c workers can, each a TLS handshake
// and one request (Connection: close), which is also when a TLS 1.3 client
// receives the session ticket it resumes with next time.
func tlsCmd(args []string) error {
	fs := flag.NewFlagSet("tls", flag.ExitOnError)
	addr := fs.String("addr", "", "host:port to connect to")
	host := fs.String("host", "bench.example.com", "SNI and Host")
	path := fs.String("path", "/api/items", "request path")
	var headers headerFlags
	fs.Var(&headers, "H", "request header \"Name: value\" (repeatable)")
	resume := fs.Bool("resume", false, "resume the previous session (each worker keeps its own)")
	groups := fs.String("groups", "", "key exchange groups the client offers, comma-separated (X25519MLKEM768, X25519, P256, ...); Go's default when empty")
	workers := fs.Int("c", 8, "connections opened at once")
	duration := fs.Duration("d", 5*time.Second, "how long")
	_ = fs.Parse(args)
	if *addr == "" || *workers < 1 || *workers > 10_000 || *duration <= 0 {
		return errors.New("-addr is required, -c between 1 and 10000, -d positive")
	}
	curves, err := parseGroups(*groups)
	if err != nil {
		return err
	}
	req := "GET " + *path + " HTTP/1.1\r\nHost: " + *host + "\r\nConnection: close\r\n"
	for _, h := range headers {
		req += h + "\r\n"
	}
	req += "\r\n"
	var resumed, total atomic.Int64
	// group is the key exchange group of the last handshake.
	var group atomic.Value
	group.Store("-")
	res := closedLoop(*workers, *duration, func(_ int, deadline time.Time, r *recorder) {
		cfg := &tls.Config{InsecureSkipVerify: true, ServerName: *host, NextProtos: []string{"http/1.1"}, CurvePreferences: curves}
		if *resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		}
		for time.Now().Before(deadline) {
			t0 := time.Now()
			st, err := oneTLSRequest(*addr, cfg, req)
			if err != nil {
				r.fail(err)
				continue
			}
			r.lat = append(r.lat, time.Since(t0))
			total.Add(1)
			group.Store(st.CurveID.String())
			if st.DidResume {
				resumed.Add(1)
			}
		}
	})
	res.mode = "tls-new"
	if *resume {
		res.mode = "tls-resumed"
	}
	res.extra = []string{fmt.Sprintf("resumed=%d/%d", resumed.Load(), total.Load()), "group=" + group.Load().(string)}
	res.print()
	return nil
}

// parseGroups reads -groups: names as crypto/tls's CurveID.String prints
// them.
func parseGroups(list string) ([]tls.CurveID, error) {
	if list == "" {
		return nil, nil
	}
	known := map[string]tls.CurveID{}
	for _, id := range []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521} {
		known[strings.ToLower(id.String())] = id
	}
	var ids []tls.CurveID
	for _, name := range strings.Split(list, ",") {
		id, ok := known[strings.ToLower(strings.TrimSpace(name))]
		if !ok {
			return nil, fmt.Errorf("-groups: unknown group %q", name)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func oneTLSRequest(addr string, cfg *tls.Config, req string) (st tls.ConnectionState, err error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return st, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return st, err
	}
	if _, err := io.WriteString(tc, req); err != nil {
		return st, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return st, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, statusError(resp.StatusCode)
	}
	return tc.ConnectionState(), nil
}
