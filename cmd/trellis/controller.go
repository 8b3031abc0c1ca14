package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/provider/kubernetes"
)

func newController() *cobra.Command {
	var (
		kubeconfig, pool, clusterSetIP string
		identitySecret                 string
		conn                           clusterFlags
		cfg                            kubernetes.Config
	)
	cmd := &cobra.Command{
		Use:   "controller --server URL --cluster NAME",
		Short: "Run the Kubernetes controller: Gateway API objects in, model to the control plane, status back",
		Long: `Run the Kubernetes controller. It watches the cluster's GatewayClasses,
Gateways, HTTPRoutes, ReferenceGrants, Services, EndpointSlices and
Namespaces, translates them, sends what changed to the control plane and
writes status back to the objects. Inside a cluster it uses the pod's service
account; elsewhere --kubeconfig (or $KUBECONFIG). The token comes from
--token, --token-file or the TRELLIS_TOKEN variable and must authenticate
as --cluster. It exits at once, naming what to install, when the cluster
does not serve a CRD it requires.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if pool != "" {
				p, err := netip.ParsePrefix(pool)
				if err != nil {
					return fmt.Errorf("--gateway-addresses: %w", err)
				}
				cfg.AddressPool = p
			}
			if clusterSetIP != "" {
				ip, err := netip.ParseAddr(clusterSetIP)
				if err != nil {
					return fmt.Errorf("--clusterset-ip: %w", err)
				}
				cfg.ClusterSetIP = ip
			}
			if cfg.APIQPS < 0 {
				return fmt.Errorf("--kube-api-qps %v: a rate is not negative", cfg.APIQPS)
			}
			if cfg.APIBurst < 0 {
				return fmt.Errorf("--kube-api-burst %d: a burst is not negative", cfg.APIBurst)
			}
			if cfg.APIBurst > 0 && cfg.APIQPS == 0 {
				return errors.New("--kube-api-burst needs --kube-api-qps")
			}
			if kubeconfig != "" {
				cfg.Kube, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
			} else {
				cfg.Kube, err = ctrl.GetConfig()
			}
			if err != nil {
				return fmt.Errorf("kubernetes client configuration: %w", err)
			}
			cfg.Logger = slog.Default()
			if identitySecret != "" {
				if conn.ident.dir != "" {
					return errors.New("--identity-secret and --identity-dir are two places to keep the identity: give one")
				}
				if conn.cluster == "" {
					return errors.New("--identity-secret needs --cluster: the Secret's certificate must name it")
				}
				if conn.ident.store, err = kubernetes.NewSecretStore(cfg.Kube, identitySecret); err != nil {
					return fmt.Errorf("--identity-secret: %w", err)
				}
			}
			var id *pki.Identity
			if cfg.ControlPlane, cfg.Cluster, id, err = conn.connect(cmd.Context(), cfg.Logger); err != nil {
				return err
			}
			if id != nil {
				go client.KeepLease(cmd.Context(), cfg.ControlPlane, "controller", nil, cfg.Logger)
			}
			return kubernetes.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	conn.register(f, "name of this cluster, the owner of what the controller sends")
	f.StringVar(&identitySecret, "identity-secret", "", "keep the cluster certificate in this Secret (NAMESPACE/NAME) instead of --identity-dir: joined with --join-token-file when it holds none, renewed in it; proxies mount it with --identity-read-only. Needs --cluster")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration, or $KUBECONFIG)")
	f.StringVar(&pool, "gateway-addresses", "", "CIDR edge Gateways get their addresses from, e.g. 198.18.100.0/24")
	f.StringVar(&clusterSetIP, "clusterset-ip", "", "address of this cluster's proxy for <svc>.<ns>.svc.clusterset.local: the IP of every ClusterSetIP ServiceImport (default: none)")
	f.StringVar(&cfg.MetricsAddress, "metrics-address", ":8080", "address of the Prometheus metrics endpoint (0 disables)")
	f.StringVar(&cfg.HealthAddress, "health-address", ":8081", "address of /healthz and /readyz (0 disables)")
	f.BoolVar(&cfg.LeaderElection, "leader-elect", false, "elect a leader among replicas (a Lease in --leader-election-namespace)")
	f.StringVar(&cfg.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader-election Lease (default: the pod's)")
	f.Float32Var(&cfg.APIQPS, "kube-api-qps", 0, "requests a second to the Kubernetes API, over the kubeconfig's (default: the kubeconfig's, else 100); a large cluster's first reconcile writes a status per route")
	f.IntVar(&cfg.APIBurst, "kube-api-burst", 0, "requests at once to the Kubernetes API with --kube-api-qps (default: twice the rate)")
	f.DurationVar(&cfg.SyncPeriod, "resync", 10*time.Hour, "how often the informers resync; a resync that changes nothing sends nothing")
	return cmd
}
