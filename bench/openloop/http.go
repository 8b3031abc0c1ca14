package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// headerFlags collects repeated -H "Name: value" flags.
type headerFlags []string

func (h *headerFlags) String() string { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error {
	name, _, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" || strings.ContainsAny(v, "\r\n") {
		return fmt.Errorf("-H %q: want \"Name: value\"", v)
	}
	*h = append(*h, v)
	return nil
}

// statusError is an answer other than 200; the connection stays usable.
type statusError int

func (s statusError) Error() string { return fmt.Sprintf("status %d", int(s)) }

func httpCmd(args []string) error {
	fs := flag.NewFlagSet("http", flag.ExitOnError)
	rawURL := fs.String("url", "", "http:// or https:// URL to GET")
	var headers headerFlags
	fs.Var(&headers, "H", "request header \"Name: value\" (repeatable; Host: sets the host)")
	rate := fs.Float64("rate", 1000, "requests per second, on a fixed timetable")
	duration := fs.Duration("d", 10*time.Second, "how long to send (after the warm-up)")
	warmup := fs.Duration("warmup", time.Second, "sent at the same rate first, not counted")
	conns := fs.Int("c", 64, "keep-alive connections (at most this many requests in flight)")
	dump := fs.String("dump", "", "write every measured request's scheduled time, latency and connection to this file (ms; one request a line)")
	_ = fs.Parse(args)
	u, err := url.Parse(*rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("-url %q: want http://host:port/path or https://", *rawURL)
	}
	if *rate <= 0 || *duration <= 0 || *warmup < 0 || *conns < 1 || *conns > 100_000 {
		return errors.New("-rate and -d must be positive, -warmup not negative, -c between 1 and 100000")
	}
	total := int(*rate * (*duration + *warmup).Seconds())
	if total > maxSamples {
		return fmt.Errorf("-rate × (-d + -warmup) is %d requests; at most %d", total, maxSamples)
	}
	skip := int(*rate * warmup.Seconds())

	host := u.Host
	var extra strings.Builder
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		if strings.EqualFold(strings.TrimSpace(name), "host") {
			host = strings.TrimSpace(value)
			continue
		}
		fmt.Fprintf(&extra, "%s: %s\r\n", strings.TrimSpace(name), strings.TrimSpace(value))
	}
	req := []byte(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", u.RequestURI(), host, extra.String()))
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	dial := func() (net.Conn, error) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil || u.Scheme == "http" {
			return c, err
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: host, NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, err
		}
		return tc, nil
	}

	// The timetable: request i is due at start + i×interval. A free
	// worker takes the next index and sends it when it falls due (at
	// once if it is late), so time spent waiting for a free connection
	// counts in the latency; no scheduler goroutine hands requests over.
	interval := time.Duration(float64(time.Second) / *rate)
	var next atomic.Int64
	recs := make([]*recorder, *conns)
	var wg sync.WaitGroup
	start := time.Now().Add(100 * time.Millisecond)
	lastDone := make([]time.Time, *conns)
	for w := range recs {
		recs[w] = &recorder{lat: make([]time.Duration, 0, (total-skip) / *conns + 16)}
		if *dump != "" {
			recs[w].index = make([]int, 0, cap(recs[w].lat))
			recs[w].port = make([]uint16, 0, cap(recs[w].lat))
			recs[w].late = make([]time.Duration, 0, cap(recs[w].lat))
		}
		wg.Add(1)
		go func(r *recorder, last *time.Time) {
			defer wg.Done()
			var c net.Conn
			var br *bufio.Reader
			var port uint16 // c's local port, for -dump
			for {
				i := int(next.Add(1) - 1)
				if i >= total {
					break
				}
				due := start.Add(time.Duration(i) * interval)
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				var sent time.Time // with -dump: when the request was written

				err := func() error {
					if c == nil {
						var err error
						if c, err = dial(); err != nil {
							return err
						}
						br = bufio.NewReaderSize(c, 16<<10)
						if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
							port = uint16(a.Port)
						}
					}
					now := time.Now()
					c.SetDeadline(now.Add(30 * time.Second))
					if r.index != nil {
						sent = now
					}
					if _, err := c.Write(req); err != nil {
						return err
					}
					status, closing, err := readResponse(br)
					if err != nil {
						return err
					}
					if closing {
						c.Close()
						c = nil
					}
					if status != http.StatusOK {
						return statusError(status)
					}
					return nil
				}()
				now := time.Now()
				if err != nil {
					var status statusError
					if c != nil && !errors.As(err, &status) {
						c.Close()
						c = nil
					}
					if i >= skip {
						r.fail(err)
					}
					continue
				}
				if i >= skip {
					r.lat = append(r.lat, now.Sub(due))
					if r.index != nil {
						r.index = append(r.index, i)
						r.port = append(r.port, port)
						r.late = append(r.late, sent.Sub(due))
					}
					*last = now
				}
			}
			if c != nil {
				c.Close()
			}
		}(recs[w], &lastDone[w])
	}
	wg.Wait()
	if *dump != "" {
		if err := writeDump(*dump, recs, start, interval); err != nil {
			return err
		}
	}
	lat, nerr, first := merge(recs)
	measured := start.Add(time.Duration(skip) * interval)
	end := measured
	for _, t := range lastDone {
		if t.After(end) {
			end = t
		}
	}
	// The achieved rate is over the measured part of the timetable, or
	// longer if the answers trailed behind it.
	elapsed := max(end.Sub(measured), *duration)
	result{
		mode: "http", elapsed: elapsed, lat: lat, errors: nerr, err: first, sent: total,
		extra: []string{fmt.Sprintf("offered=%.1f", *rate)},
	}.print()
	return nil
}

// writeDump writes one line per measured request, in the timetable's
// order: its scheduled time (ms after the first request was due, and as
// Unix time in µs, to line it up with other tools' records), its latency
// (ms) and the connection (worker) that sent it.
func writeDump(path string, recs []*recorder, start time.Time, interval time.Duration) error {
	type row struct {
		i, w      int
		port      uint16
		lat, late time.Duration
	}
	var rows []row
	for w, r := range recs {
		for k, i := range r.index {
			rows = append(rows, row{i, w, r.port[k], r.lat[k], r.late[k]})
		}
	}
	slices.SortFunc(rows, func(a, b row) int { return a.i - b.i })
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("-dump: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(bw, "# due_ms due_unix_us latency_ms conn local_port sent_late_ms")
	for _, r := range rows {
		due := start.Add(time.Duration(r.i) * interval)
		fmt.Fprintf(bw, "%.3f %d %.3f %d %d %.3f\n", float64(time.Duration(r.i)*interval)/1e6, due.UnixMicro(), float64(r.lat)/1e6, r.w, r.port, float64(r.late)/1e6)
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("-dump %s: %w", path, err)
	}
	return f.Close()
}
