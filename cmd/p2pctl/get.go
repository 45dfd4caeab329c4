package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/registry"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
)

func newGetCommand() *cobra.Command {
	var (
		root, platform, hostsDir string
		insecure                 []string
		layerIndex               int
	)
	cmd := &cobra.Command{
		Use:   "get IMAGE",
		Short: "Write an image's layer (uncompressed tar) to stdout, through the node's P2P network, with no disk",
		Long: `get resolves IMAGE, then asks the node's daemon for the uncompressed stream of its layers and
writes it to stdout. The daemon reads each layer in stream mode: blocks come from peers (or the
registry, through a seed) a window at a time, and the whole stream is checked against the
layer's diffID before its last block is written. Nothing is written to disk on this node.

With --layer N only layer N (0 is the base) is written; otherwise every layer follows the one
before, which "tar -xi" reads as one archive.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if term.IsTerminal(int(os.Stdout.Fd())) {
				return errors.New("stdout is a terminal: redirect it to a file or a pipe")
			}
			ctx := cmd.Context()
			var p ocispec.Platform
			if platform != "" {
				var err error
				if p, err = platforms.Parse(platform); err != nil {
					return fmt.Errorf("--platform: %w", err)
				}
			}
			opts := []registry.Option{registry.WithInsecureRegistries(insecure...)}
			if hostsDir != "" {
				opts = append(opts, registry.WithHostsDir(hostsDir))
			}
			img, err := registry.New(opts...).Resolve(ctx, args[0], p)
			if err != nil {
				return err
			}
			layers := img.Layers
			if layerIndex >= 0 {
				if layerIndex >= len(layers) {
					return fmt.Errorf("--layer %d: %s has %d layers", layerIndex, img.Name, len(layers))
				}
				layers = layers[layerIndex : layerIndex+1]
			}
			daemon := fusemanager.NewClient(filepath.Join(root, "fuse-manager.sock"))
			if err := daemon.Ping(ctx); err != nil {
				return fmt.Errorf("the daemon's data plane does not answer (is p2p-snapshotter running with --root %s?): %w", root, err)
			}
			for _, l := range layers {
				src := seed.Source{Host: img.Host, Repository: img.Repository, Blob: l.Descriptor, DiffID: l.DiffID}
				if _, err := daemon.Stream(ctx, os.Stdout, src); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&root, "root", snapshotter.DefaultRoot, "the daemon's root directory (its data-plane socket is there)")
	f.StringVar(&platform, "platform", "", "platform of a multi-platform image (default: this host's)")
	f.StringVar(&hostsDir, "hosts-dir", "", "containerd certs.d directory of hosts.toml files")
	f.StringArrayVar(&insecure, "insecure-registry", nil, "registry (host or host:port) reached over plain HTTP; repeatable")
	f.IntVar(&layerIndex, "layer", -1, "write only this layer (0 is the base)")
	return cmd
}
