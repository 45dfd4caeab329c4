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
	"github.com/p2pimage/p2p-snapshotter/p2p/blobs"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
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
// or, with lazy.fuse_manager = false, one in this process. The returned close releases what
// this process owns; it never stops a manager process.
func layerMounter(ctx context.Context, cfg snapshotter.Config) (dataPlane, func(), error) {
	if !cfg.Lazy.FuseManager {
		m, b, closeAll, err := newMounter(cfg)
		if err != nil {
			return nil, nil, err
		}
		return inProcess{m, b}, closeAll, nil
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

// newMounter builds the block cache, the layer store, a FUSE mounter and the blob server in
// this process.
func newMounter(cfg snapshotter.Config) (*fusemanager.Mounter, *blobs.Server, func(), error) {
	cache, err := blockcache.New(int64(cfg.Cache.Size), blockcache.WithBlockSize(int(cfg.Cache.BlockSize)))
	if err != nil {
		return nil, nil, nil, err
	}
	client := newRegistryClient(cfg)
	store, err := seed.New(filepath.Join(cfg.Root, "layers"), cache, client)
	if err != nil {
		cache.Close()
		return nil, nil, nil, err
	}
	m := fusemanager.NewMounter(store)
	return m, blobs.New(cache, client), func() {
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
			m, b, closeMounter, err := newMounter(cfg)
			if err != nil {
				return err
			}
			defer closeMounter()
			ln, err := snapshotter.ListenUnix(filepath.Join(cfg.Root, fuseManagerSocket))
			if err != nil {
				return err
			}
			log.G(cmd.Context()).WithFields(log.Fields{"root": cfg.Root, "version": version}).Info("FUSE manager starting")
			return fusemanager.Serve(cmd.Context(), m, ln, fusemanager.WithBlobs(b))
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration written by the daemon")
	cmd.MarkFlagRequired("config")
	return cmd
}
