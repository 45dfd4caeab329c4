// Command p2p-snapshotter is the node daemon: a containerd proxy snapshotter named "p2p".
// containerd reaches it through
//
//	[proxy_plugins.p2p]
//	  type = "snapshot"
//	  address = "/run/p2p-snapshotter/p2p-snapshotter.sock"
//
// Layers whose source the Prepare labels name (containerd's CRI labels) are mounted lazily from
// FUSE; every other snapshot is an ordinary overlayfs snapshot.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/containerd/log"
	"github.com/spf13/cobra"

	"github.com/p2pimage/p2p-snapshotter/snapshotter"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/daemon"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := newCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "p2p-snapshotter:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		configPath string
		flags      = snapshotter.DefaultConfig()
	)
	cmd := &cobra.Command{
		Use:           "p2p-snapshotter",
		Short:         "containerd proxy snapshotter with lazily pulled, peer-to-peer layers",
		Args:          cobra.NoArgs,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := snapshotter.DefaultConfig()
			if configPath != "" {
				var err error
				if cfg, err = snapshotter.ReadConfig(configPath); err != nil { // validated below, with the flags
					return err
				}
			}
			// Flags given on the command line override the file.
			set := cmd.Flags().Changed
			if set("root") {
				cfg.Root = flags.Root
			}
			if set("address") {
				cfg.Address = flags.Address
			}
			if set("log-level") {
				cfg.LogLevel = flags.LogLevel
			}
			if set("insecure-registry") {
				cfg.Registry.Insecure = append(cfg.Registry.Insecure, flags.Registry.Insecure...)
			}
			if set("mirror-address") {
				cfg.Mirror.Address = flags.Mirror.Address
			}
			if set("hosts-dir") {
				cfg.Registry.HostsDir = flags.Registry.HostsDir
			}
			if set("metrics-address") {
				cfg.Metrics.Address = flags.Metrics.Address
			}
			if set("debug-address") {
				cfg.Debug.Address = flags.Debug.Address
			}
			if set("advertise-address") {
				cfg.P2P.AdvertiseAddress = flags.P2P.AdvertiseAddress
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "TOML configuration file")
	f.StringVar(&flags.Root, "root", snapshotter.DefaultRoot, "directory for snapshots and metadata")
	f.StringVar(&flags.Address, "address", snapshotter.DefaultAddress, "unix socket containerd connects to")
	f.StringVar(&flags.LogLevel, "log-level", snapshotter.DefaultLogLevel, "log level: trace, debug, info, warn, error")
	f.StringVar(&flags.Mirror.Address, "mirror-address", snapshotter.DefaultMirrorAddress, "host:port of the registry mirror containerd's hosts.toml points at; empty disables it")
	f.StringArrayVar(&flags.Registry.Insecure, "insecure-registry", nil, "registry (host or host:port) reached over plain HTTP; repeatable")
	f.StringVar(&flags.Registry.HostsDir, "hosts-dir", "", "containerd certs.d directory of hosts.toml files")
	f.StringVar(&flags.Metrics.Address, "metrics-address", "", "host:port serving Prometheus metrics at /metrics; empty: none")
	f.StringVar(&flags.P2P.AdvertiseAddress, "advertise-address", "", "host:port other peers dial for this node's blocks (p2p.advertise_address), e.g. the node's IP in a DaemonSet")
	f.StringVar(&flags.Debug.Address, "debug-address", "", "host:port serving Go's pprof profiles at /debug/pprof/; empty: none (bind it to loopback)")
	cmd.AddCommand(newFuseManagerCommand(), newConfigCommand())
	return cmd
}

func run(ctx context.Context, cfg snapshotter.Config) error {
	if err := log.SetLevel(cfg.LogLevel); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	d, err := daemon.New(ctx, cfg, daemon.WithFuseManager(self, "fuse-manager"))
	if err != nil {
		return err
	}
	defer d.Close()
	ln, err := snapshotter.ListenUnix(cfg.Address)
	if err != nil {
		return err
	}
	log.G(ctx).WithFields(log.Fields{"root": cfg.Root, "version": version}).Info("p2p-snapshotter starting")
	return snapshotter.Serve(ctx, d.Snapshotter, ln)
}
