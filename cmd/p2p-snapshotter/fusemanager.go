package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"
	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/cobra"

	"github.com/p2pimage/p2p-snapshotter/p2p/blobs"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/mirror"
)

// Files of the FUSE manager under the daemon's root.
const (
	fuseManagerSocket = "fuse-manager.sock"
	fuseManagerConfig = "fuse-manager.toml"
	fuseManagerLog    = "fuse-manager.log"
)

// dataPlane is what holds this node's blocks: it mounts lazily pulled layers and copies
// blobs to the registry mirror through the block cache.
type dataPlane interface {
	snapshotter.LayerMounter
	mirror.Blobs
}

// inProcess is a data plane in this process.
type inProcess struct {
	*fusemanager.Mounter
	*blobs.Server
}

// layerMounter returns the data plane: the FUSE manager process (started if none answers),
// or, with lazy.fuse_manager = false, one in this process, which then serves the manager's
// socket itself. The returned close releases what
// this process owns; it never stops a manager process.
func layerMounter(ctx context.Context, cfg snapshotter.Config) (dataPlane, func(), error) {
	if !cfg.Lazy.FuseManager {
		d, err := newDataPlane(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		// The data plane's control socket (warm, blobs) is served by whichever process holds
		// the data plane: here, this one.
		ln, err := snapshotter.ListenUnix(filepath.Join(cfg.Root, fuseManagerSocket))
		if err != nil {
			d.close()
			return nil, nil, err
		}
		sctx, stop := context.WithCancel(ctx)
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := fusemanager.Serve(sctx, d.mounter, ln, d.serveOptions()...); err != nil {
				log.G(ctx).WithError(err).Error("data plane control socket stopped")
			}
		}()
		return inProcess{d.mounter, d.blobs}, func() {
			stop()
			<-served
			d.close()
		}, nil
	}
	cfgPath := filepath.Join(cfg.Root, fuseManagerConfig)
	b, err := toml.Marshal(cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return nil, nil, fmt.Errorf("write FUSE manager config: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	client := fusemanager.NewClient(filepath.Join(cfg.Root, fuseManagerSocket))
	argv := []string{self, "fuse-manager", "--config", cfgPath}
	if err := client.Start(ctx, argv, filepath.Join(cfg.Root, fuseManagerLog), 30*time.Second); err != nil {
		return nil, nil, err
	}
	return client, func() {}, nil
}

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
			d, err := newDataPlane(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer d.close()
			ln, err := snapshotter.ListenUnix(filepath.Join(cfg.Root, fuseManagerSocket))
			if err != nil {
				return err
			}
			log.G(cmd.Context()).WithFields(log.Fields{"root": cfg.Root, "version": version}).Info("FUSE manager starting")
			return fusemanager.Serve(cmd.Context(), d.mounter, ln, d.serveOptions()...)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration written by the daemon")
	cmd.MarkFlagRequired("config")
	return cmd
}
