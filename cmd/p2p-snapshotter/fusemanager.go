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

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
)

// Files of the FUSE manager under the daemon's root.
const (
	fuseManagerSocket = "fuse-manager.sock"
	fuseManagerConfig = "fuse-manager.toml"
	fuseManagerLog    = "fuse-manager.log"
)

// layerMounter returns what mounts lazily pulled layers: the FUSE manager process (started
// if none answers), or, with lazy.fuse_manager = false, a mounter in this process. The
// returned close releases what this process owns; it never stops a manager process.
func layerMounter(ctx context.Context, cfg snapshotter.Config) (snapshotter.LayerMounter, func(), error) {
	if !cfg.Lazy.FuseManager {
		return newMounter(cfg)
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

// newMounter builds the block cache, the layer store and a FUSE mounter in this process.
func newMounter(cfg snapshotter.Config) (*fusemanager.Mounter, func(), error) {
	cache, err := blockcache.New(int64(cfg.Cache.Size), blockcache.WithBlockSize(int(cfg.Cache.BlockSize)))
	if err != nil {
		return nil, nil, err
	}
	store, err := seed.New(filepath.Join(cfg.Root, "layers"), cache, newRegistryClient(cfg))
	if err != nil {
		cache.Close()
		return nil, nil, err
	}
	m := fusemanager.NewMounter(store)
	return m, func() {
		m.Close()
		store.Close()
		cache.Close()
	}, nil
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
			m, closeMounter, err := newMounter(cfg)
			if err != nil {
				return err
			}
			defer closeMounter()
			ln, err := snapshotter.ListenUnix(filepath.Join(cfg.Root, fuseManagerSocket))
			if err != nil {
				return err
			}
			log.G(cmd.Context()).WithFields(log.Fields{"root": cfg.Root, "version": version}).Info("FUSE manager starting")
			return fusemanager.Serve(cmd.Context(), m, ln)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration written by the daemon")
	cmd.MarkFlagRequired("config")
	return cmd
}
