// Command p2p-scheduler is the scheduler service: it decides which peer fetches which task
// from whom, over the gRPC API p2pimage.scheduler.v1.Scheduler (proto/scheduler/v1), with
// the standard gRPC health service beside it. Node daemons with no scheduler configured run
// the same scheduler embedded instead. See docs/scheduler.md.
//
//	p2p-scheduler --config /etc/p2p-scheduler/config.toml --address 0.0.0.0:65003
//
// Flags given on the command line override the file. SIGINT or SIGTERM stops it: health
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
	"github.com/spf13/cobra"

	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/scheduler/server"
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

// newCommand returns the command; listening calls it with the address it listens on
// (tests pass one to learn the port of ":0").
func newCommand(listening func(net.Addr)) *cobra.Command {
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
			if set("address") {
				cfg.Address = flags.Address
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
	f.StringVar(&flags.Address, "address", scheduler.DefaultAddress, "host:port the gRPC service listens on")
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

func run(ctx context.Context, cfg scheduler.Config, listening func(net.Addr)) error {
	if err := log.SetLevel(cfg.LogLevel); err != nil {
		return err
	}
	core, err := scheduler.New(cfg.Options()...)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		core.Close()
		return fmt.Errorf("listen: %w", err)
	}
	log.G(ctx).WithFields(log.Fields{
		"address": ln.Addr().String(), "version": version, "topology": cfg.Topology.Mode,
		"keepalive": cfg.Keepalive.Interval, "max_back_to_source": cfg.Seed.MaxBackToSource,
	}).Info("p2p-scheduler serving")
	if listening != nil {
		listening(ln.Addr())
	}
	return server.Serve(ctx, ln, core, grace) // closes core
}
