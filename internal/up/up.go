// Package up is `trellis up`: it runs the whole of Trellis in one process —
// the control-plane server with its embedded store, a provider (the file
// provider, or the Kubernetes provider against a cluster) and one proxy —
// wired exactly as the separate processes are: the provider and the proxy
// reach the server over its HTTP API on loopback. It is the quick start and
// the harness end-to-end tests drive.
//
// It owns the wiring and the user-facing progress lines, nothing else.
package up

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/controlplane"
	"trellis.dev/trellis/internal/demo"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/parallel"
	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/internal/provider/kubernetes"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/internal/proxy/runner"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/translate"
)

// Config configures Run.
type Config struct {
	// ConfigDir holds the Gateway API YAML the file provider serves.
	// Exactly one of ConfigDir and Kubeconfig is set.
	ConfigDir string
	// Kubeconfig, when set, runs the Kubernetes controller against that
	// cluster instead of the file provider.
	Kubeconfig string
	// GatewayAddresses is the pool edge Gateways get their addresses from
	// when the controller runs (see kubernetes.Config.AddressPool).
	// Without one, edge Gateways are served on Bind, and their status
	// publishes it when it is one IP address (see proxyAddress).
	GatewayAddresses netip.Prefix
	// Bind is the address the proxy's listeners bind (default 127.0.0.1).
	Bind string
	// APIListen is the control-plane API's address (default 127.0.0.1:7070;
	// port 0 picks a free one).
	APIListen string
	// DataDir keeps the store. Empty means a temporary directory removed on
	// exit: in this mode the files are the source of truth.
	DataDir string
	// Cluster names this cluster, the owner of everything the files define.
	Cluster string
	// Demo serves every loopback endpoint in the configuration with the
	// built-in echo backend, named after the endpoint's Service.
	Demo bool
	// AccessLog receives the proxy's access log (see proxy.Config); nil
	// turns it off.
	AccessLog io.Writer
	// AdminListen is the address of the proxy's admin listener (/metrics,
	// /healthz, /readyz); empty means none.
	AdminListen string
	// TargetMetrics exports one health series per target (see
	// proxy.Config.TargetMetrics).
	TargetMetrics bool
	// DNSListen, when set, serves the service networks' names there (UDP
	// and TCP, package nameserver), resolving to DNSAnswer: a
	// comma-separated list of addresses, by default Bind.
	DNSListen, DNSAnswer string
	// Limits are the proxy's request limits (zero values: the defaults).
	Limits runner.Limits
	// SettlePeriod and MaxFileSize tune the file provider (see
	// file.Provider; zero values: the defaults).
	SettlePeriod time.Duration
	MaxFileSize  int64
	// Out receives progress lines meant for a person.
	Out    io.Writer
	Logger *slog.Logger
}

// Run serves until ctx ends, then shuts everything down gracefully. With a
// kubeconfig it first installs trellis's own CRDs where the cluster lacks
// them (kubernetes.InstallCRDs), and fails at once when it cannot or when
// Gateway API CRDs are missing.
func Run(ctx context.Context, cfg Config) (err error) {
	cfg.Bind = cmp.Or(cfg.Bind, "127.0.0.1")
	cfg.APIListen = cmp.Or(cfg.APIListen, "127.0.0.1:7070")
	cfg.Cluster = cmp.Or(cfg.Cluster, "local")
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger
	var kube *rest.Config
	switch {
	case (cfg.ConfigDir == "") == (cfg.Kubeconfig == ""):
		return errors.New("give exactly one of a config directory and a kubeconfig")
	case cfg.Kubeconfig != "":
		if cfg.Demo {
			return errors.New("--demo serves the endpoints of a config directory; it does not work with a kubeconfig")
		}
		if kube, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig); err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
		// Before anything starts: a cluster the controller cannot serve
		// ends the run at once, saying what to install.
		installed, err := kubernetes.InstallCRDs(ctx, kube, log)
		if err != nil {
			return fmt.Errorf("kubernetes controller: %w", err)
		}
		for _, name := range installed {
			fmt.Fprintf(cfg.Out, "controller: installed CRD %s\n", name)
		}
	default:
		if _, err := os.Stat(cfg.ConfigDir); err != nil {
			return fmt.Errorf("config directory: %w", err)
		}
	}

	dataDir := cfg.DataDir
	if dataDir == "" {
		if dataDir, err = os.MkdirTemp("", "trellis-up-"); err != nil {
			return err
		}
		defer os.RemoveAll(dataDir)
	} else if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	st, _, err := controlplane.OpenStore(ctx, controlplane.StoreOptions{DataDir: dataDir, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	// Errors from the goroutines below end the run; the first one wins.
	errc := make(chan error, 4)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
		cancel()
	}

	token, err := randomToken()
	if err != nil {
		return err
	}
	apiLn, apiURL, err := controlplane.Listen(controlplane.ListenOptions{Addr: cfg.APIListen, Logger: log})
	if err != nil {
		return fmt.Errorf("control-plane API: %w", err)
	}
	apiHandler := server.New(st, server.Config{Tokens: map[string]string{token: cfg.Cluster}, Logger: log})
	wg.Go(func() {
		if err := controlplane.Serve(ctx, apiLn, apiHandler); err != nil {
			fail(fmt.Errorf("control-plane API: %w", err))
		}
	})
	// The token goes next to the store, readable by its owner only, for
	// `trellis get --token-file`.
	tokenFile := filepath.Join(dataDir, "api-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("API token file: %w", err)
	}
	fmt.Fprintf(cfg.Out, "control plane: API on %s (store in %s; token in %s)\n", apiURL, dataDir, tokenFile)

	cl, err := client.New(apiURL, token, client.Options{Logger: log})
	if err != nil {
		return err
	}

	if cfg.Demo {
		if err := startDemo(ctx, &wg, cfg, fail); err != nil {
			return err
		}
	}

	report := newReporter(cfg.Out, log)
	// A change the file provider or the controller sees holds the proxy's
	// health checks until the proxy applied it.
	hold := &runner.CheckHold{}
	wg.Go(func() {
		err := runner.Run(ctx, runner.Config{
			Client: cl, Cluster: cfg.Cluster, Bind: cfg.Bind, AccessLog: cfg.AccessLog,
			AdminListen: cfg.AdminListen, TargetMetrics: cfg.TargetMetrics, DNSListen: cfg.DNSListen, DNSAnswer: cfg.DNSAnswer,
			Applied: report.proxyUpdated, Out: cfg.Out, Logger: log, Limits: cfg.Limits, HealthHolder: "proxy",
			CheckHold: hold,
		})
		if err != nil {
			fail(fmt.Errorf("proxy: %w", err))
		}
	})

	if kube != nil {
		wg.Go(func() {
			err := kubernetes.Run(ctx, kubernetes.Config{
				Kube: kube, ControlPlane: cl, Cluster: cfg.Cluster, AddressPool: cfg.GatewayAddresses, Logger: log,
				ProxyAddress: proxyAddress(cfg.Bind),
				// A reconcile that sends nothing leaves the proxy nothing
				// to apply.
				OnChange: hold.Begin, NothingSent: hold.End,
			})
			if err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("kubernetes controller: %w", err))
			}
		})
		fmt.Fprintf(cfg.Out, "controller: watching the cluster of %s\n", cfg.Kubeconfig)
	} else {
		wg.Go(func() { runFileProvider(ctx, cfg, cl, hold, log, fail) })
	}

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	return err
}

// runFileProvider applies the configuration directory until ctx ends.
// A change it sees holds the proxy's health checks (hold) until the proxy
// applied it, or until the provider finds nothing to send.
func runFileProvider(ctx context.Context, cfg Config, cl *client.Client, hold *runner.CheckHold, log *slog.Logger, fail func(error)) {
	prov := &file.Provider{Dir: cfg.ConfigDir, Cluster: cfg.Cluster, Logger: log, SettlePeriod: cfg.SettlePeriod, MaxFileSize: cfg.MaxFileSize,
		OnChange: hold.Begin,
		// A failed attempt leaves the proxy nothing to apply.
		OnResult: func(err error) {
			if err != nil {
				hold.End()
			}
		}}
	var send fileSender
	err := prov.Run(ctx, func(ctx context.Context, out *translate.Output) error {
		rev, counts, err := send.send(ctx, cl, &out.Objects, out.Changed)
		if err != nil || rev == 0 {
			hold.End() // nor does one that sent nothing
			return err
		}
		fmt.Fprintf(cfg.Out, "config: applied revision %d (%d created, %d updated, %d deleted, %d unchanged)\n",
			rev, counts[0], counts[1], counts[2], counts[3])
		return nil
	})
	if err != nil && ctx.Err() == nil {
		fail(fmt.Errorf("file provider: %w", err))
	}
}

// fileSender makes the control plane hold exactly the file provider's
// objects. The first send, and the first after a failure, applies them
// whole (which also deletes what an earlier run left behind); later ones
// send only the objects whose stored form changed, and the deletions, in
// one transaction, so that a change costs the server what it changes
// rather than the whole configuration.
type fileSender struct {
	// sent is the hash of the stored form (model.Encode) of every object
	// last sent, by key; nil until an apply succeeded, and after a failure.
	sent map[string][sha256.Size]byte
}

// send sends objs and returns the revision (0 when nothing differed, so
// nothing was sent) and the counts of created, updated, deleted and
// unchanged objects. changed, when not nil, names (by model.Key) every
// object that may differ from, be new since or be gone since the objects
// of the last successful send (translate.Output.Changed): only those are
// encoded and compared.
func (f *fileSender) send(ctx context.Context, cl *client.Client, objs *model.Objects, changed map[string]bool) (int64, [4]int, error) {
	if f.sent == nil || changed == nil {
		return f.sendAll(ctx, cl, objs)
	}
	var req api.TxnRequest
	sums := map[string][sha256.Size]byte{}
	present := map[string]bool{}
	// The changed names by kind, so that passing over an unchanged object
	// makes no key.
	names := map[model.Kind]map[string]bool{}
	for k := range changed {
		kind, name, err := model.ParseKey(k)
		if err != nil {
			return 0, [4]int{}, err
		}
		if names[kind] == nil {
			names[kind] = map[string]bool{}
		}
		names[kind][name] = true
	}
	// Each changed object found by name (the lists are sorted), rather
	// than every object visited: a change costs what it changes.
	for _, kind := range model.Kinds {
		l, ok := objs.List(kind)
		if !ok || len(names[kind]) == 0 {
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(names[kind])) { // in the lists' order
			obj := l.Find(name)
			if obj == nil {
				continue
			}
			k := model.Key(kind, name)
			present[k] = true
			b, err := model.Encode(obj)
			if err != nil {
				return 0, [4]int{}, err
			}
			sum := sha256.Sum256(b)
			if prev, ok := f.sent[k]; !ok || prev != sum {
				req.Puts.Add(obj)
				sums[k] = sum
			}
		}
	}
	var deletes []string
	for k := range changed {
		if _, ok := f.sent[k]; ok && !present[k] {
			deletes = append(deletes, k)
		}
	}
	slices.Sort(deletes)
	return f.txn(ctx, cl, &req, deletes, objs.Len()-req.Puts.Len(), func() {
		maps.Copy(f.sent, sums)
		for _, k := range deletes {
			delete(f.sent, k)
		}
	})
}

// sendAll sends objs, comparing every object with what was last sent.
// The objects are encoded side by side: at a cold start that is every
// object of the configuration.
func (f *fileSender) sendAll(ctx context.Context, cl *client.Client, objs *model.Objects) (int64, [4]int, error) {
	var all []model.Object
	eachObject(objs, func(obj model.Object) { all = append(all, obj) })
	sums := make([][sha256.Size]byte, len(all))
	errs := make([]error, len(all))
	parallel.Do(len(all), 256, func(i int) {
		var b []byte
		if b, errs[i] = model.Encode(all[i]); errs[i] == nil {
			sums[i] = sha256.Sum256(b)
		}
	})
	encoded := make(map[string][sha256.Size]byte, len(all))
	var req api.TxnRequest
	for i, obj := range all {
		if errs[i] != nil {
			return 0, [4]int{}, errs[i]
		}
		k := model.Key(obj.ObjectKind(), obj.ObjectMeta().Name)
		encoded[k] = sums[i]
		if prev, ok := f.sent[k]; f.sent != nil && (!ok || prev != sums[i]) {
			req.Puts.Add(obj)
		}
	}
	if f.sent == nil {
		res, err := cl.Apply(ctx, objs)
		if err != nil {
			return 0, [4]int{}, err
		}
		f.sent = encoded
		return res.Revision, [4]int{res.Created, res.Updated, res.Deleted, res.Unchanged}, nil
	}
	var deletes []string
	for _, k := range slices.Sorted(maps.Keys(f.sent)) {
		if _, ok := encoded[k]; !ok {
			deletes = append(deletes, k)
		}
	}
	return f.txn(ctx, cl, &req, deletes, len(encoded)-req.Puts.Len(), func() { f.sent = encoded })
}

// txn sends req (its puts) with the deletion of deletes, keys in order,
// in one transaction unless there is nothing to send, and calls sent when
// it succeeded; after a failure every object is sent again. unchanged is
// how many objects were left out of req for being as last sent.
func (f *fileSender) txn(ctx context.Context, cl *client.Client, req *api.TxnRequest, deletes []string, unchanged int, sent func()) (int64, [4]int, error) {
	for _, k := range deletes {
		kind, name, err := model.ParseKey(k)
		if err != nil {
			return 0, [4]int{}, err
		}
		req.Deletes = append(req.Deletes, api.ObjectRef{Kind: kind, Name: name})
	}
	if req.Puts.Len() == 0 && len(req.Deletes) == 0 {
		return 0, [4]int{0, 0, 0, unchanged}, nil
	}
	res, err := cl.Txn(ctx, req)
	if err != nil {
		f.sent = nil
		return 0, [4]int{}, err
	}
	sent()
	return res.Revision, [4]int{res.Created, res.Updated, res.Deleted, unchanged + res.Unchanged}, nil
}

// eachObject calls fn with every object of objs.
func eachObject(objs *model.Objects, fn func(model.Object)) {
	for obj := range objs.All() {
		fn(obj)
	}
}

// proxyAddress is the address edge Gateways without one are published at:
// the proxy's bind address when it is one IP address, else none (a host
// name, or 0.0.0.0, which serves every address of the host).
func proxyAddress(bind string) netip.Addr {
	ip, err := netip.ParseAddr(bind)
	if err != nil || ip.IsUnspecified() {
		return netip.Addr{}
	}
	return ip
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// startDemo runs an echo backend on every loopback endpoint the configuration
// names, each answering with its Service's name.
func startDemo(ctx context.Context, wg *sync.WaitGroup, cfg Config, fail func(error)) error {
	in, err := file.Load(cfg.ConfigDir)
	if err != nil {
		return fmt.Errorf("--demo needs a loadable configuration: %w", err)
	}
	started := map[string]bool{}
	for _, es := range in.EndpointSlices {
		backend := es.Labels["kubernetes.io/service-name"]
		for _, ep := range es.Endpoints {
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil || !ip.IsLoopback() {
					continue
				}
				for _, p := range es.Ports {
					if p.Port == nil {
						continue
					}
					addr := netip.AddrPortFrom(ip, uint16(*p.Port)).String()
					if started[addr] {
						continue
					}
					started[addr] = true
					ln, err := net.Listen("tcp", addr)
					if err != nil {
						return fmt.Errorf("demo backend %s: %w", backend, err)
					}
					fmt.Fprintf(cfg.Out, "demo: echo backend %q on %s\n", backend, addr)
					wg.Go(func() {
						if err := demo.Serve(ctx, ln, backend); err != nil {
							fail(fmt.Errorf("demo backend %s: %w", backend, err))
						}
					})
				}
			}
		}
	}
	return nil
}

// reporter prints what the proxy serves whenever it changes (the runner
// says where it listens): a line per service for a configuration of at
// most listedServices, else one line of counts, the services going to the
// log at debug level.
type reporter struct {
	out  io.Writer
	log  *slog.Logger
	mu   sync.Mutex
	last string
}

// listedServices is the most services the reporter lists line by line.
const listedServices = 20

func newReporter(out io.Writer, log *slog.Logger) *reporter {
	return &reporter{out: out, log: log}
}

func (r *reporter) proxyUpdated(snap *model.Snapshot, _ map[router.Bind]string) {
	r.mu.Lock()
	defer r.mu.Unlock()

	debug := r.log.Enabled(context.Background(), slog.LevelDebug)
	if len(snap.Services) > listedServices {
		fmt.Fprintf(r.out, "proxy: serving revision %d: %d services, %d target groups\n", snap.Revision, len(snap.Services), len(snap.TargetGroups))
		r.last = ""
		if !debug {
			return
		}
	}
	var b strings.Builder
	for _, s := range snap.Services {
		var ports []string
		for _, l := range s.Listeners {
			ports = append(ports, fmt.Sprint(l.Port))
		}
		names := s.Hostnames()
		if len(names) == 0 {
			names = []string{"(any host)"}
		}
		if len(snap.Services) > listedServices {
			r.log.Debug("service served", "revision", snap.Revision, "service", s.Name, "hostnames", names, "ports", ports)
			continue
		}
		fmt.Fprintf(&b, "service %s: %s (port %s)\n", s.Name, strings.Join(names, ", "), strings.Join(ports, ", "))
	}
	if len(snap.Services) <= listedServices && b.String() != r.last {
		r.last = b.String()
		fmt.Fprintf(r.out, "proxy: serving revision %d\n%s", snap.Revision, b.String())
	}
}
