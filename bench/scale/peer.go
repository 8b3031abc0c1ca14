package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// The peer's side of the health-check comparison (peer-health.sh): HAProxy
// given the same targets as trellis, checked alike, and one target process
// for both that counts the checks it answers.

// haproxyCmd writes HAProxy's configuration checking the targets gen
// writes (a backend per service, a server per endpoint), at the Lattice
// defaults trellis checks them with: GET / expecting 200 every 30 s,
// timeout 5 s, 2 failures down, 5 passes up. With -stat it instead asks a
// running HAProxy's stats socket how its servers are.
func haproxyCmd(args []string) error {
	fs := flag.NewFlagSet("haproxy", flag.ExitOnError)
	var s shape
	s.flags(fs)
	out := fs.String("out", "", "file to write the configuration to")
	socket := fs.String("socket", "", "HAProxy's stats socket (the configuration's)")
	threads := fs.Int("threads", 1, "HAProxy's nbthread")
	stat := fs.Bool("stat", false, "print the servers' states and check failures from -socket rather than write a configuration")
	_ = fs.Parse(args)
	if *stat {
		return haproxyStat(*socket)
	}
	if *out == "" || *socket == "" {
		return errors.New("haproxy: -out and -socket are required")
	}
	var b strings.Builder
	// HTTP/1.1 with a Host, as trellis's checks: the target keeps the
	// connection, and HAProxy closes it (with a reset) once it has the
	// status. spread-checks adds up to 5 % of jitter to each interval;
	// HAProxy spreads its servers' first checks over the interval itself.
	fmt.Fprintf(&b, `global
  maxconn 4096
  nbthread %d
  spread-checks 5
  stats socket %s mode 600 level admin
defaults
  mode http
  timeout connect 5s
  timeout check 5s
  timeout client 30s
  timeout server 30s
`, *threads, *socket)
	for i := range s.services {
		fmt.Fprintf(&b, `backend svc-%d
  option httpchk
  http-check send meth GET uri / ver HTTP/1.1 hdr Host svc-%d hdr User-Agent HAProxy-Check
  http-check expect status 200
  default-server check inter 30s fall 2 rise 5
`, i, i)
		for j := range s.endpoints {
			fmt.Fprintf(&b, "  server t-%d %s:%d\n", j, endpointIP(i*s.endpoints+j), targetPort)
		}
	}
	return os.WriteFile(*out, []byte(b.String()), 0o644)
}

// haproxyStat prints how many of HAProxy's servers are in each state and
// their check failures, from `show stat`.
func haproxyStat(socket string) error {
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, "show stat\n"); err != nil {
		return err
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var col map[string]int
	states := map[string]int{}
	var servers, chkfail int
	checks := map[string]int{}
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		if col == nil {
			col = map[string]int{}
			for i, name := range f {
				col[strings.TrimPrefix(name, "# ")] = i
			}
			continue
		}
		if len(f) <= col["check_status"] || f[col["svname"]] == "BACKEND" || f[col["svname"]] == "FRONTEND" {
			continue
		}
		servers++
		states[f[col["status"]]]++
		checks[f[col["check_status"]]]++
		var n int
		fmt.Sscan(f[col["chkfail"]], &n)
		chkfail += n
	}
	if err := sc.Err(); err != nil {
		return err
	}
	fmt.Printf("haproxy: %d servers, states %v, last checks %v, failed checks %d\n", servers, states, checks, chkfail)
	return nil
}

// targetCmd answers every request to -listen with 200 "ok", counting them,
// and serves the count at -count: the number of checks a window saw,
// whoever made them.
func targetCmd(args []string) error {
	fs := flag.NewFlagSet("target", flag.ExitOnError)
	listen := fs.String("listen", fmt.Sprintf("0.0.0.0:%d", targetPort), "where the targets are answered")
	count := fs.String("count", "127.0.0.1:9002", "where the count of requests answered is served")
	_ = fs.Parse(args)
	var n atomic.Int64
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	cl, err := net.Listen("tcp", *count)
	if err != nil {
		return err
	}
	go http.Serve(cl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, n.Load())
	}))
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		io.WriteString(w, "ok\n")
	}))
}
