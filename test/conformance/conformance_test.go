package conformance_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	confsuite "sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
	"sigs.k8s.io/yaml"

	"trellis.dev/trellis/test/kube"
)

// The full run is configured through the environment (hack/conformance.sh
// sets these):
//
//	TRELLIS_CONFORMANCE=1                 run at all
//	TRELLIS_BIN                           the trellis binary (default: built by the test)
//	TRELLIS_CONFORMANCE_CLASSES           GatewayClasses to test, in order (default "trellis-edge,trellis")
//	TRELLIS_CONFORMANCE_PROFILES          default "GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS"
//	TRELLIS_CONFORMANCE_REPORT_DIR        where report-<class>.yaml goes (default docs/conformance)
//	TRELLIS_CONFORMANCE_LOG_DIR           where full logs go (default: only stdout)
//	TRELLIS_CONFORMANCE_SKIP              more tests to skip, comma-separated
//	TRELLIS_CONFORMANCE_RUN_TEST          run this one test only (its report goes to the log directory)
//	TRELLIS_CONFORMANCE_TIMEOUT           per class (default 25m)
//	TRELLIS_CONFORMANCE_DEBUG=1           the suite's request and response dumps
//	TRELLIS_CONFORMANCE_EXCLUDE_GATEWAYS  diagnosis only: base Gateways (ns/name,...) the suite's
//	                                      Setup should not wait for; the report goes to the log directory
//	TRELLIS_VERSION                       the version the report names (default "dev")

// classControllers are the GatewayClasses the harness creates, with the
// controller each names: Trellis's public controller names (written out
// rather than imported, so the harness depends only on the trellis binary).
var classControllers = map[string]gatewayv1.GatewayController{
	"trellis-edge": "trellis.dev/gateway",
	"trellis":      "trellis.dev/service-network",
}

// knownSkips are, per GatewayClass, tests the suite would select for
// Trellis that are skipped on purpose, with the reason;
// docs/conformance/README.md lists them too. Tests of features the
// GatewayClass does not publish are left out by the suite itself ("not
// supported") and need no entry here.
var knownSkips = map[string]map[string]string{
	"trellis": {
		"HTTPRouteRedirectPortAndScheme": "its HTTPS cases send Host and SNI example.org to a route without hostnames " +
			"through a listener without a hostname, expecting the route to take any host; a service network's route " +
			"answers only its generated name, the network's domain and the names it or its listener gives " +
			"(every service network shares the proxy's bind address, so no route can take every host there)",
	},
}

// TestConformance runs the Gateway API conformance suite against Trellis.
func TestConformance(t *testing.T) {
	if os.Getenv("TRELLIS_CONFORMANCE") != "1" {
		t.Skip("the full conformance run takes many minutes: use hack/conformance.sh, or set TRELLIS_CONFORMANCE=1")
	}
	classes := splitList(envOr("TRELLIS_CONFORMANCE_CLASSES", "trellis-edge,trellis"))
	profiles := splitList(envOr("TRELLIS_CONFORMANCE_PROFILES", "GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS"))
	reportDir, err := filepath.Abs(envOr("TRELLIS_CONFORMANCE_REPORT_DIR", filepath.Join("..", "..", "docs", "conformance")))
	if err != nil {
		t.Fatal(err)
	}
	timeout, err := time.ParseDuration(envOr("TRELLIS_CONFORMANCE_TIMEOUT", "25m"))
	if err != nil {
		t.Fatalf("TRELLIS_CONFORMANCE_TIMEOUT: %v", err)
	}
	logDir := os.Getenv("TRELLIS_CONFORMANCE_LOG_DIR")
	skips := splitList(os.Getenv("TRELLIS_CONFORMANCE_SKIP"))

	begin := time.Now()
	bin := trellisBinary(t)
	e := startEnv(t)
	for _, class := range classes {
		if ctrl, ok := classControllers[class]; ok {
			ensureGatewayClass(t, e.client, class, ctrl)
		}
	}
	startTrellis(t, e, bin, logDir)
	for _, class := range classes {
		waitClassAccepted(t, e.client, class, time.Minute)
	}
	t.Logf("cluster, node agent and Trellis up in %.1f s", time.Since(begin).Seconds())

	for _, class := range classes {
		t.Run(class, func(t *testing.T) {
			waitNamespacesGone(t, e.client, 2*time.Minute)
			start := time.Now()
			statusDir := logDir
			if statusDir == "" {
				statusDir = t.TempDir()
			}
			s := settings{
				GatewayClass: class,
				ReportPath:   filepath.Join(reportDir, "report-"+class+".yaml"),
				Profiles:     profiles,
				SkipTests:    classSkips(t, skips, class),
				RunTest:      os.Getenv("TRELLIS_CONFORMANCE_RUN_TEST"),
				Version:      envOr("TRELLIS_VERSION", "dev"),
				Debug:        os.Getenv("TRELLIS_CONFORMANCE_DEBUG") == "1",

				ExcludeGateways: splitList(os.Getenv("TRELLIS_CONFORMANCE_EXCLUDE_GATEWAYS")),
			}
			if s.RunTest != "" || len(s.ExcludeGateways) > 0 {
				// Such a report must not replace the real one: it goes
				// with the logs.
				s.ReportPath = filepath.Join(statusDir, "report-"+class+".partial.yaml")
			}
			stopObserving := observe(t, e.client, filepath.Join(statusDir, "status-"+class+".yaml"))
			err := runInside(t, e, "TestSuiteInNamespace", s, timeout, testOutput(t, logDir, "suite-"+class))
			stopObserving()
			t.Logf("suite for GatewayClass %s: %.1f s", class, time.Since(start).Seconds())
			if err != nil {
				t.Error(err)
			}
		})
	}
	t.Logf("conformance run done in %.1f s", time.Since(begin).Seconds())
}

// classSkips returns the tests to skip for class: skips and the class's
// knownSkips, each of which is logged with its reason.
func classSkips(t *testing.T, skips []string, class string) []string {
	out := slices.Clone(skips)
	for name, reason := range knownSkips[class] {
		t.Logf("skipping %s for GatewayClass %s: %s", name, class, reason)
		out = append(out, name)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestSuiteInNamespace is the suite half of TestConformance: the suite's
// own sequence (NewConformanceTestSuite, Setup, Run, Report) with one more
// wait, for the base Deployments, between Setup and Run. Service-network
// domains resolve to where Trellis serves them (resolveServiceNetworks).
func TestSuiteInNamespace(t *testing.T) {
	s := innerSettings(t)
	resolveServiceNetworks(t)
	cfg := innerConfig(t, s)
	cl := innerClient(t, s)
	var profiles []confsuite.ConformanceProfileName
	for _, p := range s.Profiles {
		profiles = append(profiles, confsuite.ConformanceProfileName(p))
	}
	feats := featureNames(s.Features)
	if s.RunTest != "" && len(feats) == 0 {
		// With one test selected the suite no longer reads the class's
		// features itself.
		feats = classFeatures(t, cl, s.GatewayClass)
	}
	opts := confsuite.ConformanceOptions{
		ConfigurableOptions: confsuite.ConfigurableOptions{
			GatewayClassName:     s.GatewayClass,
			Debug:                s.Debug,
			ReportOutputPath:     s.ReportPath,
			CleanupBaseResources: true,
			CleanupTestResources: true,
			SupportedFeatures:    feats,
			TimeoutConfig:        config.DefaultTimeoutConfig(),
			SkipTests:            s.SkipTests,
			RunTest:              s.RunTest,
			Mode:                 "default",
			ConformanceProfiles:  profiles,
			Implementation: confv1.Implementation{
				Organization: "trellis.dev",
				Project:      "trellis",
				URL:          "https://trellis.dev",
				Version:      s.Version,
				Contact:      []string{"trellis maintainers"},
			},
			// For GatewayStaticAddresses, should the class claim it: an
			// address of the pool, and one outside it.
			UsableNetworkAddresses:   []gatewayv1.GatewaySpecAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: "198.18.255.250"}},
			UnusableNetworkAddresses: []gatewayv1.GatewaySpecAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: "198.18.254.250"}},
		},
		Client:        cl,
		ClientOptions: client.Options{Scheme: kube.Scheme()},
		Clientset:     kubernetes.NewForConfigOrDie(cfg),
		RestConfig:    cfg,
		ManifestFS:    []fs.FS{&conformance.Manifests},
	}
	if err := opts.Implementation.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(s.ExcludeGateways) > 0 {
		fsys, err := excludingGateways(s.ExcludeGateways)
		if err != nil {
			t.Fatal(err)
		}
		opts.ManifestFS = []fs.FS{fsys}
		t.Logf("DIAGNOSIS RUN: base Gateways %v excluded from readiness checks; the report goes with the logs", s.ExcludeGateways)
	}
	cSuite, err := confsuite.NewConformanceTestSuite(opts)
	if err != nil {
		t.Fatalf("creating the suite: %v", err)
	}
	setUp := false
	if s.ReportPath != "" {
		t.Cleanup(func() {
			if !setUp {
				t.Logf("no report written: the suite's Setup did not finish, so no test ran")
				return
			}
			writeReport(t, cSuite, s.ReportPath)
		})
	}
	begin := time.Now()
	cSuite.Setup(t, tests.ConformanceTests)
	waitDeploymentsAvailable(t, cl, suiteNamespaces, 2*time.Minute)
	setUp = true
	t.Logf("suite Setup done in %.1f s", time.Since(begin).Seconds())
	if err := cSuite.Run(t, tests.ConformanceTests); err != nil {
		t.Fatal(err)
	}
}

// writeReport writes the suite's report as YAML and logs its summary.
func writeReport(t *testing.T, s *confsuite.ConformanceTestSuite, path string) {
	report, err := s.Report()
	if err != nil {
		t.Errorf("conformance report: %v", err)
		return
	}
	data, err := yaml.Marshal(report)
	if err != nil {
		t.Errorf("conformance report: %v", err)
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Errorf("conformance report: %v", err)
		return
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Errorf("conformance report: %v", err)
		return
	}
	t.Logf("conformance report written to %s:\n%s", path, data)
}

// featureNames converts feature names from the settings.
func featureNames(names []string) []features.FeatureName {
	var out []features.FeatureName
	for _, n := range names {
		out = append(out, features.FeatureName(n))
	}
	return out
}

// classFeatures reads the features a GatewayClass publishes.
func classFeatures(t *testing.T, cl client.Client, class string) []features.FeatureName {
	t.Helper()
	var gc gatewayv1.GatewayClass
	if err := cl.Get(context.Background(), client.ObjectKey{Name: class}, &gc); err != nil {
		t.Fatalf("GatewayClass %s: %v", class, err)
	}
	var out []features.FeatureName
	for _, f := range gc.Status.SupportedFeatures {
		out = append(out, features.FeatureName(f.Name))
	}
	return out
}

// trellisBinary returns TRELLIS_BIN, or builds cmd/trellis.
func trellisBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("TRELLIS_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "trellis")
	out, err := exec.Command("go", "build", "-o", bin, "trellis.dev/trellis/cmd/trellis").CombinedOutput()
	if err != nil {
		t.Fatalf("building trellis: %v\n%s", err, out)
	}
	return bin
}

// startTrellis runs `trellis up --kubeconfig` (controller, server and proxy
// in one process) inside the cluster's namespace until the test ends: edge
// Gateways get addresses from gatewayPool, service networks are served on
// serviceNetworkAddress. Its log goes to logDir, or to a temporary file
// shown when the test fails.
func startTrellis(t *testing.T, e *env, bin, logDir string) {
	t.Helper()
	dir := logDir
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "trellis.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "up",
		"--kubeconfig", e.cluster.Kubeconfig,
		"--gateway-addresses", gatewayPool.String(),
		"--bind", serviceNetworkAddress.String(),
		"--data", t.TempDir())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	t.Cleanup(func() {
		logFile.Close()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("trellis log (%s), last lines:\n%s", logPath, lastLines(data, 80))
		}
	})
	e.cluster.NS.StartUntilCleanup(t, cmd, syscall.SIGTERM, 10*time.Second)
	t.Logf("trellis up running in namespace %s, log %s", e.cluster.NS.Name, logPath)
}

// waitClassAccepted waits until the implementation has accepted class.
func waitClassAccepted(t *testing.T, cl client.Client, class string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var gc gatewayv1.GatewayClass
		err := cl.Get(context.Background(), client.ObjectKey{Name: class}, &gc)
		if err == nil {
			c := meta.FindStatusCondition(gc.Status.Conditions, string(gatewayv1.GatewayClassConditionStatusAccepted))
			if c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == gc.Generation {
				return
			}
			err = fmt.Errorf("conditions %v", gc.Status.Conditions)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GatewayClass %s not accepted after %v: %v", class, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lastLines returns the last n lines of data.
func lastLines(data []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(string(bytes.Join(lines, []byte("\n"))))
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
