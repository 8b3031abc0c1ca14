package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tclient "trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/internal/provider/kubernetes"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/store/bolt"
	"trellis.dev/trellis/test/kube"
	"trellis.dev/trellis/test/testsync"
	"trellis.dev/trellis/test/trellisbin"
)

// trellisBin is the trellis binary, built by TestMain for the tests that
// run a proxy.
var trellisBin string

// libLogs receives the logs of controller-runtime's components and
// client-go in this test process, as `trellis` routes them to its logger.
var libLogs testsync.Buffer

func TestMain(m *testing.M) {
	kubernetes.RouteLogs(slog.New(slog.NewTextHandler(&libLogs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	trellisbin.Main(m, &trellisBin)
}

// Addresses inside the cluster's network namespace.
const (
	// apiAddr is where the test's control-plane server listens.
	apiAddr = "198.18.50.2"
	// pool is the edge Gateway address pool.
	pool = "198.18.100.0/24"
	// cluster is the name the controller sends as.
	cluster = "test"
	token   = "test-token"
)

// env is a real apiserver with the controller and a control-plane server
// running in the test process, both reaching the apiserver through its
// network namespace.
type env struct {
	*kube.Cluster
	kc  client.Client
	cp  *tclient.Client
	rec *kubernetes.Reconciler
	// apiURL is the control plane's URL inside the namespace.
	apiURL string
	// start starts the controller, when envOptions.later kept it from
	// starting with the env.
	start func()
	// stop stops the controller and returns how it ended; later calls
	// return the same.
	stop func() error
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, envOptions{})
}

// envOptions change how newEnvWith runs the controller.
type envOptions struct {
	// identity, when set, is called once the apiserver is up and returns
	// the configuration the controller reaches it with (instead of the
	// admin's).
	identity func(c *kube.Cluster, kc client.Client) *rest.Config
	// leaderElectionNamespace turns leader election on, in that namespace.
	leaderElectionNamespace string
	// logs, when set, also receives the controller's warnings and errors.
	logs io.Writer
	// metricsAddress, when set, serves the controller's metrics there.
	metricsAddress string
	// later leaves the controller to be started by env.start.
	later bool
	// apiQPS and apiBurst are the controller's Config.APIQPS and
	// Config.APIBurst.
	apiQPS   float32
	apiBurst int
	// onChange and nothingSent are the controller's Config.OnChange and
	// Config.NothingSent.
	onChange, nothingSent func()
	// dataCache is the cluster's kube.Options.DataCache.
	dataCache string
	// profiling is the cluster's kube.Options.Profiling.
	profiling bool
}

func newEnvWith(t testing.TB, opts envOptions) *env {
	t.Helper()
	c := kube.Start(t, kube.Options{DataCache: opts.dataCache, Profiling: opts.profiling})
	e := &env{Cluster: c, kc: c.Client(t)}
	kubeConfig := c.Config
	if opts.identity != nil {
		kubeConfig = opts.identity(c, e.kc)
	}

	e.apiURL = serveControlPlane(t, c, map[string]string{token: cluster})
	var err error
	if e.cp, err = tclient.New(e.apiURL, token, tclient.Options{HTTPClient: c.NS.HTTPClient(0)}); err != nil {
		t.Fatal(err)
	}

	var logTo io.Writer = testWriter{t}
	if opts.logs != nil {
		logTo = io.MultiWriter(logTo, opts.logs)
	}
	log := slog.New(slog.NewTextHandler(logTo, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mgr, rec, err := kubernetes.New(context.Background(), kubernetes.Config{
		Kube: kubeConfig, ControlPlane: e.cp, Cluster: cluster, AddressPool: netip.MustParsePrefix(pool), Logger: log,
		LeaderElection: opts.leaderElectionNamespace != "", LeaderElectionNamespace: opts.leaderElectionNamespace,
		MetricsAddress: opts.metricsAddress, APIQPS: opts.apiQPS, APIBurst: opts.apiBurst,
		OnChange: opts.onChange, NothingSent: opts.nothingSent,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.rec = rec
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	e.start = sync.OnceFunc(func() { go func() { done <- mgr.Start(ctx) }() })
	if !opts.later {
		e.start()
	}
	e.stop = sync.OnceValue(func() error {
		cancel()
		e.start() // so that it ends
		return <-done
	})
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	return e
}

// testWriter sends log lines to t.Log while the test runs.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// create creates every object of a YAML document stream (the kinds the
// file provider reads): the namespaces first, then every other list in the
// order translate.Input declares it. Objects that exist are left alone.
func (e *env) create(t testing.TB, yaml string) {
	t.Helper()
	in, err := file.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	var objs []client.Object
	for i := range in.Namespaces {
		objs = append(objs, &in.Namespaces[i])
	}
	v := reflect.ValueOf(in).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Slice && v.Type().Field(i).Name != "Namespaces" {
			for j := range f.Len() {
				objs = append(objs, f.Index(j).Addr().Interface().(client.Object))
			}
		}
	}
	ctx := context.Background()
	for _, o := range objs {
		if err := e.kc.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %T %s/%s: %v", o, o.GetNamespace(), o.GetName(), err)
		}
	}
}

// update reads obj, changes it with f and writes it back, retrying on
// conflicts.
func update[T client.Object](t testing.TB, kc client.Client, obj T, f func(T)) {
	t.Helper()
	ctx := context.Background()
	for range 10 {
		if err := kc.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Fatal(err)
		}
		f(obj)
		err := kc.Update(ctx, obj)
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
	t.Fatalf("updating %s: too many conflicts", obj.GetName())
}

// controlPlane returns what the control plane holds.
func (e *env) controlPlane(t testing.TB) *model.Objects {
	t.Helper()
	return readControlPlane(t, e.cp)
}

// readControlPlane reads every object of every kind through cp.
func readControlPlane(t testing.TB, cp *tclient.Client) *model.Objects {
	t.Helper()
	var out model.Objects
	for _, k := range model.Kinds {
		objs, _, err := cp.List(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			out.Add(o)
		}
	}
	return &out
}

// proxy runs `trellis proxy` inside the namespace, bound to bind, following
// the test's control plane, and returns its process.
func (e *env) proxy(t testing.TB, bind string) *os.Process {
	t.Helper()
	cmd := exec.Command(trellisBin, "proxy", "--server", e.apiURL, "--cluster", cluster, "--bind", bind, "--log-level", "warn")
	cmd.Env = append(os.Environ(), "TRELLIS_TOKEN="+token)
	start(t, e.Cluster, cmd)
	return cmd.Process
}

// serveControlPlane runs a control plane over a bolt store inside c's
// network namespace, accepting tokens (token → cluster), and returns its
// URL.
func serveControlPlane(t testing.TB, c *kube.Cluster, tokens map[string]string) string {
	return serveControlPlaneWith(t, c, tokens, "")
}

// serveControlPlaneWith is serveControlPlane with, when adminToken is set,
// a CA of its own and that administrator token, so that the test admits
// clusters (trellis cluster add and set) as an operator does.
func serveControlPlaneWith(t testing.TB, c *kube.Cluster, tokens map[string]string, adminToken string) string {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "trellis.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := server.Config{Tokens: tokens, Heartbeat: time.Second}
	if adminToken != "" {
		if cfg.CA, err = server.EnsureCA(context.Background(), st, nil); err != nil {
			t.Fatal(err)
		}
		cfg.AdminTokens = map[string]struct{}{adminToken: {}}
	}
	ln, err := c.NS.Listen("tcp", apiAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: server.New(st, cfg)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// start runs cmd inside c's network namespace until the test ends, and logs
// its output if the test failed.
func start(t testing.TB, c *kube.Cluster, cmd *exec.Cmd) {
	t.Helper()
	var out testsync.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := c.NS.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", strings.Join(cmd.Args, " "), out.String())
		}
	})
}

// hasCondition checks that conds has a condition of type typ with the
// status, reason and observed generation given.
func hasCondition(conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string, generation int64) error {
	for _, c := range conds {
		if c.Type != typ {
			continue
		}
		if c.Status != status || c.Reason != reason || c.ObservedGeneration != generation {
			return fmt.Errorf("%s is %s/%s (generation %d, %q); want %s/%s (generation %d)",
				typ, c.Status, c.Reason, c.ObservedGeneration, c.Message, status, reason, generation)
		}
		if c.LastTransitionTime.IsZero() {
			return fmt.Errorf("%s has no lastTransitionTime", typ)
		}
		return nil
	}
	return errors.New("no " + typ + " condition")
}
