package conformance_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	confsuite "sigs.k8s.io/gateway-api/conformance/utils/suite"

	"trellis.dev/trellis/test/conformance/nodeagent"
	"trellis.dev/trellis/test/kube"
)

// Addresses inside the cluster's namespace (all of 198.18.0.0/15 is local
// there). kube.NodeIP (198.18.0.1) is the apiserver's and the node's.
var (
	// podCIDR is where the node agent allocates Pod IPs.
	podCIDR = netip.MustParsePrefix("198.18.0.0/17")
	// gatewayPool is where Trellis allocates edge Gateway addresses.
	gatewayPool = netip.MustParsePrefix("198.18.255.0/24")
)

// The suite's namespaces, which must be gone before the suite runs again.
var suiteNamespaces = []string{confsuite.InfrastructureNamespace, confsuite.AppBackendNamespace, confsuite.WebBackendNamespace}

// env is a cluster with the node agent running.
type env struct {
	cluster *kube.Cluster
	agent   *nodeagent.Agent
	client  client.Client
}

// startEnv starts the cluster (with the controller manager) and the node
// agent; both stop when the test ends.
func startEnv(t *testing.T) *env {
	t.Helper()
	c := kube.Start(t, kube.Options{ControllerManager: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The agent's own events (binds, starts, retries with their reasons)
	// go to nodeagent-<test>.log in the log directory, when there is one.
	var log *slog.Logger
	if dir := os.Getenv("TRELLIS_CONFORMANCE_LOG_DIR"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(dir, "nodeagent-"+t.Name()+".log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		log = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	agent, err := nodeagent.Start(ctx, nodeagent.Options{
		Config:  c.Config,
		NodeIP:  netip.MustParseAddr(kube.NodeIP),
		PodCIDR: podCIDR,
		Network: nodeagent.InNamespace(c.NS),
		Log:     log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Stop)
	return &env{cluster: c, agent: agent, client: c.Client(t)}
}

// innerEnv names the test a process was started to run inside the
// namespace; innerSettingsEnv carries its settings as JSON.
const (
	innerEnv         = "TRELLIS_CONFORMANCE_INNER"
	innerSettingsEnv = "TRELLIS_CONFORMANCE_SETTINGS"
)

// settings is what an outer test hands the test it runs inside the
// namespace.
type settings struct {
	Kubeconfig   string   `json:"kubeconfig"`
	GatewayClass string   `json:"gatewayClass"`
	ReportPath   string   `json:"reportPath,omitempty"`
	Profiles     []string `json:"profiles,omitempty"`
	SkipTests    []string `json:"skipTests,omitempty"`
	RunTest      string   `json:"runTest,omitempty"`
	// Features, when set, replaces what the GatewayClass publishes.
	Features []string `json:"features,omitempty"`
	Version  string   `json:"version,omitempty"`
	Debug    bool     `json:"debug,omitempty"`
	// ExcludeGateways marks base Gateways as excluded from the suite's
	// readiness checks (diagnosis only; see excludingGateways).
	ExcludeGateways []string `json:"excludeGateways,omitempty"`
}

// innerSettings returns the settings of a test started by runInside, and
// skips the test when it was started any other way.
func innerSettings(t *testing.T) settings {
	t.Helper()
	if os.Getenv(innerEnv) != t.Name() {
		t.Skip("runs only inside the cluster's network namespace, started by the harness's outer tests")
	}
	var s settings
	if err := json.Unmarshal([]byte(os.Getenv(innerSettingsEnv)), &s); err != nil {
		t.Fatalf("%s: %v", innerSettingsEnv, err)
	}
	return s
}

// innerConfig is the inner test's client configuration, from the
// kubeconfig the outer test passed (its server is only reachable inside the
// namespace). The suite polls every 100 ms from several goroutines, some
// of which outlive their test for a while; client-go's default limit of 5
// requests a second throttles it, and even 100 once starved a later test's
// poll until its deadline ("rate: Wait(n=1) would exceed context
// deadline"). The apiserver is the test's own: the client is not limited.
func innerConfig(t *testing.T, s settings) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	cfg.QPS = -1
	return cfg
}

// innerClient is a client from innerConfig.
func innerClient(t *testing.T, s settings) client.Client {
	t.Helper()
	cl, err := client.New(innerConfig(t, s), client.Options{Scheme: kube.Scheme()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return cl
}

// runInside runs test name of this test binary as a process inside the
// cluster's network namespace and waits for it. Its output goes to out,
// each line prefixed so that it cannot be taken for the outer test's own.
// The process is killed if the outer test binary dies.
func runInside(t *testing.T, e *env, name string, s settings, timeout time.Duration, out io.Writer) error {
	t.Helper()
	s.Kubeconfig = e.cluster.Kubeconfig
	js, err := json.Marshal(s)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("locating the test binary: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "-test.run=^"+name+"$", "-test.v", "-test.count=1",
		"-test.timeout="+timeout.String())
	cmd.Env = append(os.Environ(), innerEnv+"="+name, innerSettingsEnv+"="+string(js), "KUBECONFIG="+s.Kubeconfig)
	cmd.Dir, _ = os.Getwd()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var copied sync.WaitGroup
	copied.Go(func() {
		lines := bufio.NewScanner(pr)
		lines.Buffer(make([]byte, 64*1024), 4*1024*1024)
		for lines.Scan() {
			fmt.Fprintf(out, "  [%s] %s\n", name, lines.Text())
		}
		io.Copy(io.Discard, pr)
	})
	err = e.cluster.NS.Start(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	pw.Close()
	copied.Wait()
	if err != nil {
		return fmt.Errorf("%s inside namespace %s: %w", name, e.cluster.NS.Name, err)
	}
	return nil
}

// testOutput is where an inner test's output goes: the outer test's
// stdout, and a log file when dir is set.
func testOutput(t *testing.T, dir, name string) io.Writer {
	t.Helper()
	if dir == "" {
		return os.Stdout
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	t.Logf("full output of %s: %s", name, f.Name())
	return io.MultiWriter(os.Stdout, f)
}

// waitDeploymentsAvailable waits until every Deployment in namespaces has
// all its replicas available. The suite's own readiness check looks only at
// Pods that already exist, which a fast node agent can satisfy before every
// ReplicaSet has created its Pods.
func waitDeploymentsAvailable(t *testing.T, cl client.Client, namespaces []string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	for {
		last = ""
		for _, ns := range namespaces {
			var list appsv1.DeploymentList
			if err := cl.List(ctx, &list, client.InNamespace(ns)); err != nil {
				last = err.Error()
				break
			}
			for _, d := range list.Items {
				want := int32(1)
				if d.Spec.Replicas != nil {
					want = *d.Spec.Replicas
				}
				if d.Status.AvailableReplicas != want || d.Status.ObservedGeneration != d.Generation {
					last = fmt.Sprintf("deployment %s/%s: %d/%d available", ns, d.Name, d.Status.AvailableReplicas, want)
					break
				}
			}
			if last != "" {
				break
			}
		}
		if last == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for the suite's Deployments: %s", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitNamespacesGone waits until the suite's namespaces from an earlier run
// have been deleted, so a new Setup does not race their termination.
func waitNamespacesGone(t *testing.T, cl client.Client, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, name := range suiteNamespaces {
		for {
			var ns corev1.Namespace
			err := cl.Get(context.Background(), client.ObjectKey{Name: name}, &ns)
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("namespace %s still exists after %v (phase %s, err %v)", name, timeout, ns.Status.Phase, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// ensureGatewayClass creates a GatewayClass unless one of that name exists.
func ensureGatewayClass(t *testing.T, cl client.Client, name string, controller gatewayv1.GatewayController) {
	t.Helper()
	gc := &gatewayv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       gatewayv1.GatewayClassSpec{ControllerName: controller},
	}
	if err := cl.Create(context.Background(), gc); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating GatewayClass %s: %v", name, err)
	}
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
