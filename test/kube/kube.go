// Package kube starts a real Kubernetes control plane for a test: etcd,
// kube-apiserver and, on request, kube-controller-manager, as processes
// inside a network namespace of the test's own (test/netns), with the
// Gateway API (experimental channel) and Multi-Cluster Services CRDs
// installed. There is no kubelet and no kube-proxy: Pods are API objects
// only, and a test that needs a backend serves it itself inside the
// namespace (netns.NS.Listen) at an address of 198.18.0.0/16, which
// EndpointSlices accept (they reject loopback addresses).
//
// The binaries come from hack/build-kube.sh, found through the
// TRELLIS_KUBE_BIN environment variable. Everything a cluster starts or
// writes is removed when its test ends, pass or fail. It is test support
// only; nothing in the product imports it.
package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"trellis.dev/trellis/test/netns"
)

// Addresses inside the cluster's namespace. Everything else in
// netns.LocalRange is free for the test's own servers (Pod IPs, backends).
const (
	// NodeIP is the address the apiserver advertises and serves on.
	NodeIP = "198.18.0.1"
	// Server is the apiserver's URL inside the namespace.
	Server = "https://" + NodeIP + ":6443"
	// ServiceCIDR is the range of Service cluster IPs. Nothing answers on
	// them: there is no kube-proxy.
	ServiceCIDR = "198.19.0.0/16"
	// KubernetesServiceIP is the cluster IP of the default/kubernetes
	// Service, the first address of ServiceCIDR.
	KubernetesServiceIP = "198.19.0.1"

	etcdClientURL = "http://127.0.0.1:2379"
	kcmHealthz    = "https://127.0.0.1:10257/healthz"
)

// Options choose what Start runs.
type Options struct {
	// ControllerManager also starts kube-controller-manager with its
	// default controllers (endpointslice, namespace, garbage collector,
	// service account, ...). Start waits for its health endpoint, not for
	// every controller's first sync: wait for the effect you need.
	ControllerManager bool
	// DataCache, when set, names a data cache (see SaveDataCache): the
	// cluster starts from a copy of its etcd data when it exists
	// (DataCached then reports true), from the template otherwise. The
	// name must say what shapes the data, such as the objects' count and
	// form.
	DataCache string
	// Profiling has the apiserver serve /debug/pprof (APIServerProfile).
	Profiling bool
}

// Cluster is a running control plane. Its fields are valid until the test
// ends.
type Cluster struct {
	// NS is the network namespace everything runs in.
	NS *netns.NS
	// Config is an admin (system:masters) client configuration that dials
	// through NS. Copy it (rest.CopyConfig) before changing it.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file for processes
	// run inside NS; its server is Server.
	Kubeconfig string

	dir     string // PKI, kubeconfigs, etcd data, logs; under t.TempDir()
	dataDir string // etcd's
	bin     string
	opts    Options
	pki     *pki
	client  client.Client
	http    *http.Client
	running []*process // the control plane's processes, watched while waiting

	mu    sync.Mutex
	procs []*process // every process started, for the logs

	fromCache bool // started from Options.DataCache
}

// Start starts a cluster and returns once the apiserver is ready, the
// default namespace exists and the CRDs are established and served. It
// fails the test (never skips) when it cannot, in particular when
// TRELLIS_KUBE_BIN does not name a directory holding the binaries;
// hack/build-kube.sh builds them. A failed test's log shows the end of
// every process's log.
//
// etcd starts from a copy of a template data directory in which a control
// plane has already bootstrapped and the CRDs are installed (see
// etcdTemplate); the first Start that finds no template builds it, which
// takes a few seconds more.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	begin := time.Now()
	c := &Cluster{bin: binDir(t), dir: t.TempDir(), opts: opts}
	c.NS = netns.New(t)
	// Cleanups run last-in first-out: this one runs after the processes
	// are killed (their logs are complete) and before t.TempDir is removed.
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs(t)
		}
	})
	admin := c.issueCerts(t)
	c.Config = &rest.Config{
		Host: Server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.pki.caPEM,
			CertData: admin.certPEM,
			KeyData:  admin.keyPEM,
		},
		Dial:      c.NS.DialContext,
		UserAgent: "trellis-test",
		// No client-side rate limit: tests create objects in bursts.
		QPS: -1,
	}
	c.Kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.pki.caPEM, admin); err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	var err error
	if c.http, err = rest.HTTPClientFor(c.Config); err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	c.client = c.Client(t)
	// The CRD manifests take a while to read; it happens in the background.
	parsed := make(chan error, 1)
	go func() { _, err := standardCRDs(); parsed <- err }()
	crds := sync.OnceValue(func() []*apiextensionsv1.CustomResourceDefinition {
		if err := <-parsed; err != nil {
			t.Fatalf("test/kube: %v", err)
		}
		crds, _ := standardCRDs()
		return crds
	})

	var template string
	built := false
	if opts.DataCache != "" {
		template = c.cachedData(t, opts.DataCache)
		c.fromCache = template != ""
	}
	if template == "" {
		template, built = c.etcdTemplate(t, crds)
	}
	bootstrapped := time.Since(begin)
	c.dataDir = filepath.Join(c.dir, "etcd")
	if err := copyDir(template, c.dataDir); err != nil {
		t.Fatalf("test/kube: copying the etcd template: %v", err)
	}
	c.startControlPlane(t, "")
	apiReady := time.Since(begin)
	if opts.ControllerManager {
		c.running = append(c.running, c.startControllerManager(t))
	}
	// Usually long past: the template was built before this apiserver
	// started.
	waitPastJustCreated(c.waitCRDs(t, crds(), false))
	if opts.ControllerManager {
		hc := c.NS.HTTPClient(2 * time.Second)
		hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: c.pki.pool()}
		c.waitFor(t, "kube-controller-manager /healthz", time.Minute, c.running, func(ctx context.Context) error {
			return getOK(ctx, hc, kcmHealthz)
		})
	}
	how := "template reused"
	if c.fromCache {
		how = "data cache " + opts.DataCache + " copied"
	} else if built {
		how = fmt.Sprintf("template built in %.1f s", bootstrapped.Seconds())
	}
	t.Logf("test/kube: cluster ready in %.1f s (%s, apiserver ready at %.1f s; namespace %s)",
		time.Since(begin).Seconds(), how, apiReady.Seconds(), c.NS.Name)
	return c
}

// issueCerts creates the cluster's PKI in c.dir and returns the admin
// client certificate.
func (c *Cluster) issueCerts(t testing.TB) *cert {
	t.Helper()
	var err error
	if c.pki, err = newPKI(c.dir); err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	if _, err := c.pki.issue("apiserver", pkix.Name{CommonName: "kube-apiserver"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(NodeIP), net.ParseIP(KubernetesServiceIP)},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	); err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	admin, err := c.pki.issue("admin", pkix.Name{CommonName: "trellis-test-admin", Organization: []string{"system:masters"}}, nil, nil)
	if err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	return admin
}

// etcdFlags is etcd's command line.
func etcdFlags(dataDir string) []string {
	return []string{
		"-data-dir", dataDir,
		"-listen-client-url", etcdClientURL,
		"-listen-peer-url", "http://127.0.0.1:2380",
		// A one-member cluster elects itself after one election timeout;
		// short ticks make that take milliseconds instead of a second.
		"-tick-ms", "10", "-election-ms", "100",
		"-unsafe-no-fsync", "-log-level", "warn",
	}
}

// apiserverFlags is kube-apiserver's command line; dir holds the PKI.
func apiserverFlags(dir string) []string {
	file := func(name string) string { return filepath.Join(dir, name) }
	return []string{
		"--etcd-servers=" + etcdClientURL,
		"--bind-address=0.0.0.0", "--secure-port=6443",
		"--advertise-address=" + NodeIP,
		"--tls-cert-file=" + file("apiserver.crt"), "--tls-private-key-file=" + file("apiserver.key"),
		"--client-ca-file=" + file("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + file("sa.pub"),
		"--service-account-signing-key-file=" + file("sa.key"),
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--authorization-mode=RBAC",
		// The ServiceAccount admission plugin rejects Pods until the
		// controller manager has created their namespace's default
		// ServiceAccount; with no kubelet, Pods never use one.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--cert-dir=" + file("apiserver"),
	}
}

// startControllerManager starts kube-controller-manager with a
// system:masters identity (so no per-controller service accounts have to
// be created first) and a serving certificate from the cluster CA.
func (c *Cluster) startControllerManager(t testing.TB) *process {
	t.Helper()
	id, err := c.pki.issue("kcm", pkix.Name{CommonName: "system:kube-controller-manager", Organization: []string{"system:masters"}}, nil, nil)
	if err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	serving, err := c.pki.issue("kcm-serving", pkix.Name{CommonName: "kube-controller-manager"}, []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	if err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	kubeconfig := filepath.Join(c.dir, "kcm.kubeconfig")
	if err := writeKubeconfig(kubeconfig, c.pki.caPEM, id); err != nil {
		t.Fatalf("test/kube: %v", err)
	}
	return c.start(t, "kube-controller-manager", "kube-controller-manager",
		"--kubeconfig="+kubeconfig,
		"--bind-address=127.0.0.1", "--secure-port=10257",
		"--tls-cert-file="+serving.certFile, "--tls-private-key-file="+serving.keyFile,
		"--service-account-private-key-file="+c.pki.file("sa.key"),
		"--root-ca-file="+c.pki.file("ca.crt"),
		"--use-service-account-credentials=false",
		"--cluster-signing-cert-file="+c.pki.file("ca.crt"),
		"--cluster-signing-key-file="+c.pki.file("ca.key"),
		"--service-cluster-ip-range="+ServiceCIDR,
		"--leader-elect=false",
		"--controllers=*",
		"--profiling=false")
}

// Stop kills the cluster's processes before the test ends, as the test's
// end would: for a benchmark that runs clusters one after the other, so
// that one's idle work does not load the next.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	for _, p := range c.processes() {
		if err := p.stop(os.Kill, 10*time.Second); err != nil && p.running() == nil {
			t.Fatalf("test/kube: %v", err)
		}
	}
}

// Client returns a controller-runtime client for the admin identity, with
// Scheme's types.
func (c *Cluster) Client(t testing.TB) client.Client {
	t.Helper()
	cl, err := client.New(c.Config, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatalf("test/kube: client: %v", err)
	}
	return cl
}

// binDir returns TRELLIS_KUBE_BIN after checking the binaries are there.
func binDir(t testing.TB) string {
	t.Helper()
	const hint = "build them with hack/build-kube.sh and export TRELLIS_KUBE_BIN=$(hack/build-kube.sh | tail -n1)"
	dir := os.Getenv("TRELLIS_KUBE_BIN")
	if dir == "" {
		t.Fatal("test/kube: TRELLIS_KUBE_BIN is not set; " + hint)
	}
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("test/kube: TRELLIS_KUBE_BIN=%s: %v; %s", dir, err, hint)
		}
	}
	return dir
}

// ensureNamespace creates a namespace unless it exists. (The apiserver
// creates "default" itself, shortly after it is ready.)
func (c *Cluster) ensureNamespace(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("test/kube: creating namespace %s: %v", name, err)
	}
}

// get fetches an apiserver URL with the admin identity and wants 200.
func (c *Cluster) get(ctx context.Context, url string) error {
	return getOK(ctx, c.http, url)
}

func getOK(ctx context.Context, hc *http.Client, url string) error {
	return getBody(ctx, hc, url, "", nil)
}

// writeKubeconfig writes a kubeconfig for Server with a client certificate.
func writeKubeconfig(path string, caPEM []byte, id *cert) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["trellis-test"] = &clientcmdapi.Cluster{Server: Server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["trellis-test"] = &clientcmdapi.AuthInfo{ClientCertificateData: id.certPEM, ClientKeyData: id.keyPEM}
	cfg.Contexts["trellis-test"] = &clientcmdapi.Context{Cluster: "trellis-test", AuthInfo: "trellis-test"}
	cfg.CurrentContext = "trellis-test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}
