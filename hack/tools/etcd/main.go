// Command etcd runs a single-member etcd server from go.etcd.io/etcd's embed
// package, for the Kubernetes control plane of the test harness (test/kube).
// It is not a general etcd: one member, plain HTTP, logs to stderr, and a
// clean exit on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "", "data directory (required)")
	clientURL := flag.String("listen-client-url", "http://127.0.0.1:2379", "URL to serve clients on")
	peerURL := flag.String("listen-peer-url", "http://127.0.0.1:2380", "URL to serve peers on (only this member uses it)")
	tickMs := flag.Uint("tick-ms", 100, "raft heartbeat interval in milliseconds")
	electionMs := flag.Uint("election-ms", 1000, "raft election timeout in milliseconds")
	noFsync := flag.Bool("unsafe-no-fsync", false, "never fsync: faster, and loses data on a machine crash (for throwaway test clusters)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("etcd: ")
	if *dataDir == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	cfg, err := config(*dataDir, *clientURL, *peerURL)
	if err != nil {
		log.Fatal(err)
	}
	cfg.TickMs = *tickMs
	cfg.ElectionMs = *electionMs
	cfg.UnsafeNoFsync = *noFsync
	cfg.LogLevel = *logLevel

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Fatal(err)
	}
}

// config is a single-member cluster that advertises exactly the URLs it
// listens on.
func config(dataDir, clientURL, peerURL string) (*embed.Config, error) {
	cu, err := url.Parse(clientURL)
	if err != nil {
		return nil, fmt.Errorf("-listen-client-url: %w", err)
	}
	pu, err := url.Parse(peerURL)
	if err != nil {
		return nil, fmt.Errorf("-listen-peer-url: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogOutputs = []string{embed.StdErrLogOutput}
	// Unset, this threshold is zero and every request is logged as slow.
	cfg.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	return cfg, nil
}

// run serves until ctx is done (a clean stop) or the server fails.
func run(ctx context.Context, cfg *embed.Config) error {
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("starting: %w", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		log.Printf("ready, serving clients on %s", cfg.ListenClientUrls[0].String())
	case <-time.After(time.Minute):
		return fmt.Errorf("not ready after a minute")
	case err := <-e.Err():
		return fmt.Errorf("starting: %w", err)
	case <-ctx.Done():
		return nil
	}
	select {
	case err := <-e.Err():
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
		log.Print("stopping")
		return nil
	}
}
