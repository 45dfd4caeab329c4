// Command p2p-scheduler is the scheduler service: it decides which peer fetches which task
// from whom, over the gRPC API p2pimage.scheduler.v1.Scheduler (proto/scheduler/v1), with
// the standard gRPC health service beside it. Node daemons with no scheduler configured run
// the same scheduler embedded instead. See docs/scheduler.md.
//
//	p2p-scheduler --config /etc/p2p-scheduler/config.toml --listen 0.0.0.0:65003 --metrics-address 127.0.0.1:9103
//
// Flags given on the command line override the file. --listen is another name of --address
// (the TOML key address), --metrics-address (metrics_address) serves Prometheus metrics at
// /metrics and the status page and its JSON (package scheduler/status) at /, off when empty
// (the default). SIGINT or SIGTERM stops it: health
// turns NOT_SERVING, open streams end with UNAVAILABLE so peers move to another scheduler,
// and running calls get a short grace period.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/registry"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/scheduler/issuer"
	"github.com/p2pimage/p2p-snapshotter/scheduler/metrics"
	"github.com/p2pimage/p2p-snapshotter/scheduler/server"
	"github.com/p2pimage/p2p-snapshotter/scheduler/status"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// grace bounds how long a stop waits for running calls.
const grace = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := newCommand(nil).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "p2p-scheduler:", err)
		os.Exit(1)
	}
}

// listening is told the addresses the service listens on, metrics nil when off (tests pass
// one to learn the ports of ":0").
type listening func(grpc, metrics net.Addr)

// newCommand returns the command.
func newCommand(listening listening) *cobra.Command {
	var (
		configPath string
		flags      = scheduler.DefaultConfig()
	)
	cmd := &cobra.Command{
		Use:           "p2p-scheduler",
		Short:         "scheduler of the P2P image distribution: parent selection, trees and DAGs, seed triggering",
		Args:          cobra.NoArgs,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := scheduler.DefaultConfig()
			if configPath != "" {
				var err error
				if cfg, err = scheduler.LoadConfig(configPath); err != nil {
					return err
				}
			}
			set := cmd.Flags().Changed
			if set("address") || set("listen") {
				cfg.Address = flags.Address
			}
			if set("metrics-address") {
				cfg.MetricsAddress = flags.MetricsAddress
			}
			if set("log-level") {
				cfg.LogLevel = flags.LogLevel
			}
			if set("topology") {
				cfg.Topology.Mode = flags.Topology.Mode
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg, listening)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "TOML configuration file")
	// --listen is a second name of --address: both set one value, the TOML key address;
	// given both, the last wins, as for a repeated flag.
	f.StringVar(&flags.Address, "address", scheduler.DefaultAddress, "host:port the gRPC service listens on")
	f.StringVar(&flags.Address, "listen", scheduler.DefaultAddress, "same as --address")
	f.StringVar(&flags.MetricsAddress, "metrics-address", "", "host:port serving Prometheus metrics at /metrics and the status page at /; empty: none")
	f.StringVar(&flags.LogLevel, "log-level", scheduler.DefaultLogLevel, "log level: trace, debug, info, warn, error")
	f.StringVar((*string)(&flags.Topology.Mode), "topology", string(scheduler.DefaultMode), `topology of new tasks: "dag" or "tree"`)
	cmd.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "p2p-scheduler", version) },
	})
	return cmd
}

func run(ctx context.Context, cfg scheduler.Config, listening listening) error {
	if err := log.SetLevel(cfg.LogLevel); err != nil {
		return err
	}
	opts := cfg.Options()
	opts = append(opts, scheduler.WithAccessVerifier(registryVerifier{registry.New(
		registry.WithHostsDir(cfg.Registry.HostsDir), registry.WithInsecureRegistries(cfg.Registry.Insecure...))}))
	var m *metrics.Metrics
	if cfg.MetricsAddress != "" {
		m = metrics.New()
		opts = append(opts, m.Option())
	}
	core, err := scheduler.New(opts...)
	if err != nil {
		return err
	}
	ln, mln, err := listen(cfg)
	if err != nil {
		core.Close()
		return err
	}
	fields := log.Fields{
		"address": ln.Addr().String(), "version": version, "topology": cfg.Topology.Mode,
		"keepalive": cfg.Keepalive.Interval, "max_back_to_source": cfg.Seed.MaxBackToSource,
	}
	var maddr net.Addr
	if m != nil {
		if err := m.Track(core); err != nil {
			ln.Close()
			mln.Close()
			core.Close()
			return err
		}
		maddr = mln.Addr()
		fields["metrics"] = "http://" + maddr.String() + metrics.Path
		fields["status"] = "http://" + maddr.String() + status.PathPage
	}
	log.G(ctx).WithFields(fields).Info("p2p-scheduler serving")
	if listening != nil {
		listening(ln.Addr(), maddr)
	}
	// Either server failing stops the other; a stop asked for by ctx stops both.
	g, gctx := errgroup.WithContext(ctx)
	var (
		sopts []grpc.ServerOption
		certs *issuer.Issuer
	)
	switch t := cfg.TLS; {
	case t.CAKey != "": // the scheduler is the cluster's CA
		certs, err = issuer.New(t.CA, t.CAKey, t.BootstrapTokens, time.Duration(t.CertificateTTL))
		if err == nil {
			sopts = append([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(certs.ServerConfig("p2p-scheduler")))}, issuer.RequireClientCert()...)
		}
	case t.CA != "":
		var id *tlsfiles.Identity
		if id, err = tlsfiles.Load(tlsfiles.Files{CA: t.CA, Cert: t.Cert, Key: t.Key}); err == nil {
			// Client certificates are required of every call but health checks, which
			// probes make without one.
			sopts = append([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(id.ServerConfigVerifyIfGiven()))}, issuer.RequireClientCert()...)
		}
	}
	if err != nil {
		ln.Close()
		if mln != nil {
			mln.Close()
		}
		core.Close()
		return err
	}
	g.Go(func() error { // closes core
		if certs != nil {
			return server.ServeIssuing(gctx, ln, core, certs, grace, sopts...)
		}
		return server.Serve(gctx, ln, core, grace, sopts...)
	})
	if mln != nil {
		g.Go(func() error {
			return metrics.Serve(gctx, mln, m.Handler(), metrics.Mount{Pattern: "/", Handler: status.Handler(core)})
		})
	}
	return g.Wait()
}

// listen opens the gRPC listener and, when configured, the metrics one (else nil).
func listen(cfg scheduler.Config) (grpcLn, metricsLn net.Listener, err error) {
	grpcLn, err = net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, nil, fmt.Errorf("listen: %w", err)
	}
	if cfg.MetricsAddress == "" {
		return grpcLn, nil, nil
	}
	metricsLn, err = net.Listen("tcp", cfg.MetricsAddress)
	if err != nil {
		grpcLn.Close()
		return nil, nil, fmt.Errorf("listen for metrics: %w", err)
	}
	return grpcLn, metricsLn, nil
}

// registryVerifier checks a host's proof of access to a private task's repository with a
// HEAD of the blob at the registry, and says the proof holds until the token expires.
type registryVerifier struct{ client *registry.Client }

func (v registryVerifier) VerifyAccess(ctx context.Context, src *schedulerv1.TaskSource, authorization string) (time.Time, error) {
	if err := v.client.CheckAuthorization(ctx, src.GetRegistry(), src.GetRepository(), digest.Digest(src.GetBlobDigest()), authorization); err != nil {
		return time.Time{}, err
	}
	return registry.TokenExpiry(authorization, time.Now()), nil
}
