// Package nodeagent is a "loopback kubelet": a client-go node agent that
// lets a test cluster with no container runtime run the Gateway API
// conformance suite's workloads. It
//
//   - registers a Ready Node and keeps it alive with a heartbeat Lease;
//   - binds pending Pods to that Node (there is no kube-scheduler);
//   - runs each Pod's containers as in-process servers (package backend)
//     bound to an address allocated from the pod CIDR, after resolving env
//     (values, fieldRef, resourceFieldRef, Secret and ConfigMap keys,
//     envFrom, $(VAR) references) and Secret, ConfigMap, downward API and
//     projected volumes the way the kubelet does;
//   - reports Pod status (Running, Ready, pod and host IPs, container
//     states), or the reason a container cannot start, retrying with a
//     backoff capped at a few seconds;
//   - serves the kubelet API's container logs, so `kubectl logs` and the
//     pods/log subresource work;
//   - finishes graceful deletion: it stops a deleted Pod's servers and
//     removes the Pod, which lets namespace deletion complete.
//
// It does not implement exec, attach, port-forward, probes, init
// containers (they are reported as completed without running), Service
// environment variables, or restarts after a Secret changes. It is test
// support only; nothing in the product imports it.
package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"trellis.dev/trellis/test/conformance/backend"
)

// Options configure an Agent. Config, NodeIP and PodCIDR are required.
type Options struct {
	// Config reaches the apiserver with rights over Nodes, Leases, Pods,
	// Secrets and ConfigMaps.
	Config *rest.Config
	// NodeName is the Node to register; default "trellis-node".
	NodeName string
	// NodeIP is the Node's InternalIP. The kubelet API listens there, and
	// it is every Pod's hostIP.
	NodeIP netip.Addr
	// PodCIDR is where Pod IPs come from. NodeIP, the network address and
	// addresses ending in .0 or .255 are never handed out.
	PodCIDR netip.Prefix
	// KubeletPort is the kubelet API's port; default 10250.
	KubeletPort int
	// Network is where the Pods' servers and the kubelet API listen;
	// default backend.Host.
	Network backend.Network
	// Log receives the agent's own events; default: discarded.
	Log *slog.Logger
}

// Agent is a running node agent.
type Agent struct {
	opts   Options
	client kubernetes.Interface
	log    *slog.Logger

	nodeUID types.UID // set by registerNode

	pods    corelisters.PodLister
	queue   workqueue.TypedRateLimitingInterface[string]
	ipam    *ipam
	kubelet *kubeletServer

	mu      sync.Mutex
	running map[string]*podRun         // by namespace/name
	logs    map[string]map[string]*Log // container logs by namespace/name, container

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start registers the Node, starts the kubelet API and begins running
// Pods. It returns once the Node is Ready and the Pod cache is synced; the
// agent runs until Stop.
func Start(ctx context.Context, opts Options) (*Agent, error) {
	if opts.Config == nil || !opts.NodeIP.IsValid() || !opts.PodCIDR.IsValid() {
		return nil, errors.New("nodeagent: Config, NodeIP and PodCIDR are required")
	}
	if opts.NodeName == "" {
		opts.NodeName = "trellis-node"
	}
	if opts.KubeletPort == 0 {
		opts.KubeletPort = 10250
	}
	if opts.Network == nil {
		opts.Network = backend.Host
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	pool, err := newIPAM(opts.PodCIDR, opts.NodeIP)
	if err != nil {
		return nil, fmt.Errorf("nodeagent: %w", err)
	}
	cfg := rest.CopyConfig(opts.Config)
	cfg.UserAgent = "trellis-nodeagent/" + opts.NodeName
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("nodeagent: client: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	a := &Agent{
		opts:    opts,
		client:  cs,
		log:     opts.Log.With("node", opts.NodeName),
		ipam:    pool,
		running: map[string]*podRun{},
		logs:    map[string]map[string]*Log{},
		cancel:  cancel,
		// The cap matters: Pods whose Secrets appear a moment after them
		// (the suite creates its certificates after its Deployments) must
		// start within seconds of the Secret, not after a long backoff.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 3*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodeagent-pods"}),
	}
	ok := false
	defer func() {
		if !ok {
			a.Stop()
		}
	}()

	ln, err := opts.Network.Listen("tcp", net.JoinHostPort(opts.NodeIP.String(), fmt.Sprint(opts.KubeletPort)))
	if err != nil {
		return nil, fmt.Errorf("nodeagent: kubelet API: %w", err)
	}
	if a.kubelet, err = startKubelet(a, ln); err != nil {
		return nil, fmt.Errorf("nodeagent: kubelet API: %w", err)
	}
	if err := a.registerNode(ctx); err != nil {
		return nil, fmt.Errorf("nodeagent: registering node %s: %w", opts.NodeName, err)
	}
	a.wg.Go(func() { a.heartbeat(runCtx) })

	factory := informers.NewSharedInformerFactory(cs, 0)
	podInformer := factory.Core().V1().Pods()
	a.pods = podInformer.Lister()
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.enqueue,
		UpdateFunc: func(_, obj any) { a.enqueue(obj) },
		DeleteFunc: a.enqueue,
	}); err != nil {
		return nil, fmt.Errorf("nodeagent: pod informer: %w", err)
	}
	factory.Start(runCtx.Done())
	a.wg.Go(func() {
		<-runCtx.Done()
		factory.Shutdown()
	})
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced) {
		return nil, fmt.Errorf("nodeagent: pod cache did not sync: %w", context.Cause(ctx))
	}
	for range 4 {
		a.wg.Go(func() {
			for a.processNext(runCtx) {
			}
		})
	}
	a.log.Info("node agent started", "ip", opts.NodeIP, "podCIDR", opts.PodCIDR)
	ok = true
	return a, nil
}

// Stop stops the agent and every Pod's servers. The Node and the Pods stay
// in the API as they are, as when a kubelet dies.
func (a *Agent) Stop() {
	a.cancel()
	a.queue.ShutDown()
	a.wg.Wait()
	if a.kubelet != nil {
		a.kubelet.stop()
	}
	a.mu.Lock()
	runs := a.running
	a.running = map[string]*podRun{}
	a.mu.Unlock()
	for _, r := range runs {
		r.stop()
	}
}

// NodeName is the registered Node's name.
func (a *Agent) NodeName() string { return a.opts.NodeName }

// enqueue queues a Pod event's object by namespace/name.
func (a *Agent) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName != "" && pod.Spec.NodeName != a.opts.NodeName {
		return
	}
	a.queue.Add(key)
}

// processNext syncs one queued Pod; it returns false once the queue shuts
// down.
func (a *Agent) processNext(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if err := a.sync(ctx, key); err != nil {
		if ctx.Err() == nil {
			a.log.Warn("pod sync failed; retrying", "pod", key, "err", err)
		}
		a.queue.AddRateLimited(key)
		return true
	}
	a.queue.Forget(key)
	return true
}
