package main

import (
	"path/filepath"

	"github.com/containerd/log"
	"github.com/spf13/cobra"

	"github.com/p2pimage/p2p-snapshotter/snapshotter"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/daemon"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
)

func newFuseManagerCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "fuse-manager",
		Short: "Serve lazily pulled layers over FUSE for the daemon (started by it; outlives its restarts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := snapshotter.LoadConfig(configPath)
			if err != nil {
				return err
			}
			if err := log.SetLevel(cfg.LogLevel); err != nil {
				return err
			}
			d, err := daemon.NewDataPlane(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer d.Close()
			ln, err := snapshotter.ListenUnix(filepath.Join(cfg.Root, daemon.FuseManagerSocket))
			if err != nil {
				return err
			}
			log.G(cmd.Context()).WithFields(log.Fields{"root": cfg.Root, "version": version}).Info("FUSE manager starting")
			return fusemanager.Serve(cmd.Context(), d.Mounter(), ln, d.ServeOptions()...)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration written by the daemon")
	cmd.MarkFlagRequired("config")
	return cmd
}
