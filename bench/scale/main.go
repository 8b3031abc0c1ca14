// Command scale measures `trellis up --config DIR` at scale (issue 15): N
// HTTPRoutes on one edge Gateway, each with a hostname, a header-and-prefix
// rule and a catch-all rule, to its own Service of M ready endpoints.
//
//	scale gen -dir DIR -services N -endpoints M   writes the configuration
//	    (-interval S: and a TargetGroupPolicy per Service checking every S seconds)
//	scale run -trellis BIN -services N ...        generates, starts trellis up, measures
//	scale haproxy -services N -endpoints M        writes HAProxy's configuration checking the same targets
//	scale target -listen ADDR -count ADDR         answers every target, counting requests
//
// run measures cold start to the last route served, one hostname changed to
// served (over -changes changes), the process's RSS and goroutines, and the
// size and scrape time of /metrics. The endpoints are 127.x.y.z:9000, which
// one echo listener on 0.0.0.0:9000 answers, so run belongs in a network
// namespace of its own (bench/scale/run.sh starts it in one).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	gatewayPort = 8080
	targetPort  = 9000
	apiListen   = "127.0.0.1:7070"
	adminListen = "127.0.0.1:9901"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: scale gen|run|haproxy|target [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = genCmd(os.Args[2:])
	case "run":
		err = runCmd(os.Args[2:])
	case "haproxy":
		err = haproxyCmd(os.Args[2:])
	case "target":
		err = targetCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

// shape is the generated configuration's size.
type shape struct {
	services, endpoints, perFile int
	// noChecks gives every Service port appProtocol kubernetes.io/h2c,
	// whose target groups are not health-checked (the Lattice default for
	// HTTP2), so that a run measures the change path without the checks
	// beside it: a diagnosis aid, not the shape.
	noChecks bool
	// interval, when not 0, writes a TargetGroupPolicy per Service with
	// healthCheck.intervalSeconds interval, so that the checks run at a
	// chosen rate: services×endpoints/interval a second.
	interval int
}

func (s *shape) flags(fs *flag.FlagSet) {
	fs.IntVar(&s.services, "services", 1000, "routes, each to its own Service")
	fs.IntVar(&s.endpoints, "endpoints", 10, "ready endpoints per Service")
	fs.IntVar(&s.perFile, "per-file", 100, "routes (with their Services) per file")
	fs.BoolVar(&s.noChecks, "no-checks", false, "targets speak h2c, whose target groups are not health-checked (a diagnosis aid: the change path alone)")
	fs.IntVar(&s.interval, "interval", 0, "seconds between two health checks of a target (5-300): one TargetGroupPolicy per Service; 0 writes none (the default, 30 s)")
}

func genCmd(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	var s shape
	s.flags(fs)
	dir := fs.String("dir", "", "directory to write (created)")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("gen: -dir is required")
	}
	return generate(*dir, s)
}

// generate writes the gateway file and one file per perFile routes.
func generate(dir string, s shape) error {
	if s.interval != 0 && (s.interval < 5 || s.interval > 300) {
		return fmt.Errorf("-interval %d is not in 5-300 (a TargetGroupPolicy's healthCheck.intervalSeconds)", s.interval)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	gw := fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: edge
spec:
  controllerName: trellis.dev/gateway
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
spec:
  gatewayClassName: edge
  listeners:
    - name: http
      protocol: HTTP
      port: %d
`, gatewayPort)
	if err := os.WriteFile(filepath.Join(dir, "0-gateway.yaml"), []byte(gw), 0o644); err != nil {
		return err
	}
	for f := 0; f*s.perFile < s.services; f++ {
		if err := writeFile(dir, s, f, nil); err != nil {
			return err
		}
	}
	return nil
}

// routeFile names the file holding route i.
func routeFile(dir string, s shape, i int) string {
	return filepath.Join(dir, fmt.Sprintf("routes-%05d.yaml", i/s.perFile))
}

// hostname is route i's hostname at version v (0: as generated).
func hostname(i, v int) string {
	if v == 0 {
		return fmt.Sprintf("r-%d.example.com", i)
	}
	return fmt.Sprintf("r-%d-v%d.example.com", i, v)
}

// writeFile writes file f, giving the routes in versions their version's
// hostname. It writes a temporary file and renames it over the old one, as
// an editor or a ConfigMap volume does.
func writeFile(dir string, s shape, f int, versions map[int]int) error {
	var b strings.Builder
	for i := f * s.perFile; i < min((f+1)*s.perFile, s.services); i++ {
		writeService(&b, s, i, versions[i])
	}
	path := routeFile(dir, s, f*s.perFile)
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func writeService(b *strings.Builder, s shape, i, version int) {
	appProtocol := ""
	if s.noChecks {
		appProtocol = "      appProtocol: kubernetes.io/h2c\n"
	}
	fmt.Fprintf(b, `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r-%[1]d
spec:
  parentRefs:
    - name: web
  hostnames:
    - %[2]s
  rules:
    - matches:
        - path:
            type: PathPrefix
            value: /api
          headers:
            - name: x-canary
              value: "yes"
      backendRefs:
        - name: svc-%[1]d
          port: 80
    - backendRefs:
        - name: svc-%[1]d
          port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: svc-%[1]d
spec:
  ports:
    - name: http
      port: 80
%[4]s      targetPort: %[3]d
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-%[1]d-1
  labels:
    kubernetes.io/service-name: svc-%[1]d
addressType: IPv4
ports:
  - name: http
    protocol: TCP
    port: %[3]d
endpoints:
`, i, hostname(i, version), targetPort, appProtocol)
	for j := range s.endpoints {
		fmt.Fprintf(b, "  - addresses: [%q]\n    conditions:\n      ready: true\n", endpointIP(i*s.endpoints+j))
	}
	if s.interval != 0 {
		fmt.Fprintf(b, `---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroupPolicy
metadata:
  name: svc-%[1]d
spec:
  targetRefs:
    - group: ""
      kind: Service
      name: svc-%[1]d
  healthCheck:
    intervalSeconds: %[2]d
`, i, s.interval)
	}
}

// endpointIP is the address of the k-th endpoint of the configuration (its
// service's endpoints are consecutive): one of 127.0.0.0/8, which loopback
// answers whole.
func endpointIP(k int) string {
	return fmt.Sprintf("127.%d.%d.%d", 1+k/62500, k/250%250, 1+k%250)
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var s shape
	s.flags(fs)
	bin := fs.String("trellis", "trellis", "the trellis binary")
	changes := fs.Int("changes", 50, "hostname changes to time")
	dir := fs.String("dir", "", "directory for the configuration (default: a temporary one, removed)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up waiting for a route after this long")
	logLevel := fs.String("log-level", "info", "trellis's --log-level")
	logFile := fs.String("log", "", "write trellis's log here")
	heapProfile := fs.String("heapprofile", "", "write a heap profile of trellis at the end here")
	profile := fs.String("cpuprofile", "", "write a CPU profile of trellis during the changes here")
	every := fs.Duration("every", 0, "start a change at most this often (0: each as soon as the last is served), so that the changes sample the health checks' whole interval rather than a few seconds of it")
	settle := fs.Duration("settle", 0, "wait this long after the cold start before the first change, so that the changes meet the health checks' steady rate (every target once an interval) rather than their first rounds (45s is past both at the default 30 s interval)")
	settleRSS := fs.Duration("settlerss", 0, "after the idle window, wait this long more and print the resident memory again (settled: the runtime returns freed memory to the system over minutes)")
	startProfile := fs.String("startprofile", "", "write a CPU profile of trellis's cold start (from when its admin listener answers, 10 s) here")
	_ = fs.Parse(args)
	if *dir == "" {
		d, err := os.MkdirTemp("", "trellis-scale-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	if err := generate(*dir, s); err != nil {
		return err
	}
	size, err := dirSize(*dir)
	if err != nil {
		return err
	}
	fmt.Printf("config: %d routes, %d services, %d targets, %.1f MB of YAML in %s\n",
		s.services, s.services, s.services*s.endpoints, float64(size)/1e6, *dir)

	// The targets: one listener answers every 127.x.y.z:9000.
	ln, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", targetPort))
	if err != nil {
		return fmt.Errorf("target listener (run in a network namespace of its own): %w", err)
	}
	defer ln.Close()
	echo := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })}
	if s.noChecks {
		echo.Protocols = new(http.Protocols)
		echo.Protocols.SetHTTP1(true)
		echo.Protocols.SetUnencryptedHTTP2(true)
	}
	go echo.Serve(ln)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, *bin, "up", "--config", *dir, "--api-listen", apiListen,
		"--admin-listen", adminListen, "--log-level", *logLevel)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	cmd.Stdout = io.Discard
	// trellis ends with the driver, however the driver ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(os.Interrupt)
	logLines := make(chan string, 1024)
	logOut := io.Discard
	if *logFile != "" {
		f, err := os.Create(*logFile)
		if err != nil {
			return err
		}
		defer f.Close()
		logOut = f
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		n := 0
		for sc.Scan() {
			n++
			line := sc.Text()
			fmt.Fprintln(logOut, line)
			if strings.Contains(line, "configuration applied") || strings.Contains(line, "level=ERROR") {
				select {
				case logLines <- line:
				default:
				}
			}
		}
		logLines <- fmt.Sprintf("(%d log lines in all)", n)
		close(logLines)
	}()

	startProfiled := make(chan error, 1)
	if *startProfile != "" {
		go func() {
			for ctx.Err() == nil {
				if c, err := net.Dial("tcp", adminListen); err == nil {
					c.Close()
					startProfiled <- saveProfile(*startProfile, 10)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			startProfiled <- ctx.Err()
		}()
	} else {
		startProfiled <- nil
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 2 * time.Second}
	last := s.services - 1
	if err := waitServed(ctx, client, hostname(last, 0), *timeout); err != nil {
		return fmt.Errorf("cold start: %w", err)
	}
	startCPU, _ := cpuTime(cmd.Process.Pid)
	fmt.Printf("cold start to route %d served: %v, trellis CPU %v\n", last, time.Since(start).Round(time.Millisecond), startCPU)
	drain(logLines)
	if err := <-startProfiled; err != nil {
		return err
	}

	if *settle > 0 {
		time.Sleep(*settle)
		drain(logLines)
	}
	profiled := make(chan error, 1)
	if *profile != "" {
		go func() { profiled <- saveProfile(*profile, 15) }()
	} else {
		profiled <- nil
	}
	rng := rand.New(rand.NewPCG(1, 2))
	versions := map[int]int{}
	var took, cpus []time.Duration
	var next time.Time
	for c := range *changes {
		time.Sleep(time.Until(next))
		next = time.Now().Add(*every)
		i := rng.IntN(s.services)
		versions[i]++
		cpu0, _ := cpuTime(cmd.Process.Pid)
		t0 := time.Now()
		if err := writeFile(*dir, s, i/s.perFile, versions); err != nil {
			return err
		}
		if err := waitServed(ctx, client, hostname(i, versions[i]), *timeout); err != nil {
			return fmt.Errorf("change %d (route %d): %w", c, i, err)
		}
		d := time.Since(t0)
		cpu1, _ := cpuTime(cmd.Process.Pid)
		took, cpus = append(took, d), append(cpus, cpu1-cpu0)
		fmt.Printf("change %d (route %d): served after %v, trellis CPU %v\n", c, i, d.Round(time.Millisecond), cpu1-cpu0)
	}
	if len(took) > 0 {
		slices.Sort(took)
		fmt.Printf("one hostname changed to served, %d changes: p50 %v p99 %v max %v\n", len(took),
			pct(took, 50).Round(time.Millisecond), pct(took, 99).Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
		slices.Sort(cpus)
		fmt.Printf("trellis CPU during a change (health checks included): p50 %v max %v\n", pct(cpus, 50), cpus[len(cpus)-1])
	}
	if err := <-profiled; err != nil {
		return err
	}
	// Idle: let checks run a while before sampling CPU.
	time.Sleep(5 * time.Second)
	cpu0, _ := cpuTime(cmd.Process.Pid)
	time.Sleep(10 * time.Second)
	cpu1, _ := cpuTime(cmd.Process.Pid)
	fmt.Printf("idle CPU: %.2f core (over 10 s)\n", (cpu1-cpu0).Seconds()/10)
	if *heapProfile != "" {
		if err := saveURL(*heapProfile, "http://"+adminListen+"/debug/pprof/heap"); err != nil {
			return err
		}
	}
	fmt.Printf("RSS: %s\n", memLine(cmd.Process.Pid))
	if *settleRSS > 0 {
		time.Sleep(*settleRSS)
		fmt.Printf("RSS %v later: %s\n", *settleRSS, memLine(cmd.Process.Pid))
	}
	t0 := time.Now()
	body, err := get(&http.Client{Timeout: time.Minute}, "http://"+adminListen+"/metrics", "")
	if err != nil {
		return err
	}
	fmt.Printf("/metrics: %.1f MB, %d series, scraped in %v\n", float64(len(body))/1e6, series(body), time.Since(t0).Round(time.Millisecond))
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, "go_goroutines ") {
			fmt.Printf("goroutines: %s\n", strings.TrimPrefix(l, "go_goroutines "))
		}
	}
	cmd.Process.Signal(os.Interrupt)
	for l := range logLines {
		if len(l) > 300 {
			l = l[:300] + "..."
		}
		fmt.Println("log:", l)
	}
	return nil
}

// waitServed polls the gateway until host is answered 200 by its target.
func waitServed(ctx context.Context, c *http.Client, host string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		body, err := get(c, fmt.Sprintf("http://127.0.0.1:%d/", gatewayPort), host)
		if err == nil && body != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not served after %v: %v", host, timeout, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// get returns the body of a 200 answer, nil for another status.
func get(c *http.Client, url, host string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	return body, err
}

func drain(ch chan string) {
	for {
		select {
		case l := <-ch:
			if len(l) > 300 {
				l = l[:300] + "..."
			}
			fmt.Println("log:", l)
		default:
			return
		}
	}
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[min(len(sorted)-1, (len(sorted)*p+99)/100-1)]
}

func series(body []byte) int {
	n := 0
	for _, l := range strings.Split(string(body), "\n") {
		if l != "" && l[0] != '#' {
			n++
		}
	}
	return n
}

func dirSize(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			return 0, err
		}
		n += info.Size()
	}
	return n, nil
}

// memStatus reads a process's memory lines from /proc/PID/status (VmRSS,
// VmHWM: the peak, RssAnon, RssFile...), in bytes.
func memStatus(pid int) (map[string]int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[2] == "kB" {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				m[strings.TrimSuffix(f[0], ":")] = kb << 10
			}
		}
	}
	return m, nil
}

// memLine is a process's resident memory in MiB: now, the peak, and what
// of it is anonymous (the heap, stacks) and file-backed (the binary, the
// store's map).
func memLine(pid int) string {
	m, err := memStatus(pid)
	if err != nil {
		return err.Error()
	}
	mib := func(k string) float64 { return float64(m[k]) / (1 << 20) }
	return fmt.Sprintf("%.0f MiB (peak %.0f MiB; anon %.0f, file %.0f)", mib("VmRSS"), mib("VmHWM"), mib("RssAnon"), mib("RssFile"))
}

// cpuTime reads a process's user+system CPU time from /proc (clock ticks of 10 ms).
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	sy, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+sy) * 10 * time.Millisecond, nil
}

// saveProfile writes a CPU profile of trellis over seconds to path.
func saveProfile(path string, seconds int) error {
	return saveURL(path, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", adminListen, seconds))
}

// saveURL writes what url answers to path.
func saveURL(path, url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
