package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/registry"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/daemon"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
)

func newGetCommand() *cobra.Command {
	var (
		root, platform, hostsDir, output string
		insecure                         []string
		layerIndex                       int
		blob, asJSON                     bool
	)
	cmd := &cobra.Command{
		Use:   "get IMAGE[@N]|TASK [-o FILE|-]",
		Short: "Write an image's layer (uncompressed tar, or the blob as stored) through the node's P2P network, with no disk",
		Long: `get resolves IMAGE, then asks the node's daemon for the uncompressed stream of its layers and
writes it to stdout, or to FILE with -o. The daemon reads each layer in stream mode: blocks come
from peers (or the registry, through a seed) a window at a time, and the whole stream is
checked against the layer's diffID before its last block is written. Nothing else is written
to disk on this node.

IMAGE@N, or --layer N, writes only layer N (0 is the base); otherwise every layer follows the
one before, which "tar -xi" reads as one archive. TASK, a layer's diffID ("sha256:<hex>"),
writes that layer with no image to resolve and no registry: from this node if it holds it,
else from peers the scheduler names (it waits for one that holds it). --blob writes the
layer's blob as the registry stores it (gzip, zstd, eStargz...), checked against the blob
digest, instead of the uncompressed tar: its blocks too come from peers, and one node, the
blob's origin, reads the registry. A progress bar shows on a terminal.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			if at := strings.LastIndex(ref, "@"); at > 0 {
				if n, err := strconv.Atoi(ref[at+1:]); err == nil {
					if cmd.Flags().Changed("layer") && n != layerIndex {
						return fmt.Errorf("%s and --layer %d name different layers", ref, layerIndex)
					}
					ref, layerIndex = ref[:at], n
				}
			}
			if asJSON && output == "-" {
				return errors.New("--json prints a summary to stdout: write the layers to a file with -o")
			}
			task, isTask := digest.Digest(ref), false
			if task.Validate() == nil {
				if blob || cmd.Flags().Changed("layer") {
					return errors.New("a TASK is one layer's tar: --blob and --layer take an IMAGE")
				}
				isTask = true
			}
			out, closeOut, err := openOutput(output)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			report := func(results []getResult, err error) error {
				err = errors.Join(err, closeOut(err == nil))
				if err == nil && asJSON {
					err = writeJSON(cmd.OutOrStdout(), results)
				}
				return err
			}
			if isTask {
				return report(stream(ctx, out, root, []seed.Source{{DiffID: task}}))
			}
			var p ocispec.Platform
			if platform != "" {
				if p, err = platforms.Parse(platform); err != nil {
					return errors.Join(fmt.Errorf("--platform: %w", err), closeOut(false))
				}
			}
			return report(get(ctx, out, ref, p, root, hostsDir, insecure, layerIndex, blob))
		},
	}
	f := cmd.Flags()
	f.StringVar(&root, "root", snapshotter.DefaultRoot, "the daemon's root directory (its data-plane socket is there)")
	f.StringVar(&platform, "platform", "", "platform of a multi-platform image (default: this host's)")
	f.StringVar(&hostsDir, "hosts-dir", "", "containerd certs.d directory of hosts.toml files")
	f.StringArrayVar(&insecure, "insecure-registry", nil, "registry (host or host:port) reached over plain HTTP; repeatable")
	f.IntVar(&layerIndex, "layer", -1, "write only this layer (0 is the base)")
	f.StringVarP(&output, "output", "o", "-", `write to FILE instead of stdout ("-")`)
	f.BoolVar(&blob, "blob", false, "write the layer's blob as the registry stores it, not the uncompressed tar")
	f.BoolVar(&asJSON, "json", false, "with -o FILE, print what was written, per layer, as JSON")
	return cmd
}

// openOutput opens where get writes: stdout, which must not be a terminal, for "-"; else a
// new FILE, removed again if the command fails.
func openOutput(path string) (io.Writer, func(ok bool) error, error) {
	if path == "-" {
		if term.IsTerminal(int(os.Stdout.Fd())) {
			return nil, nil, errors.New("stdout is a terminal: redirect it to a file or a pipe, or use -o FILE")
		}
		return os.Stdout, func(bool) error { return nil }, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("-o: %w", err)
	}
	return f, func(ok bool) error {
		err := f.Close()
		if !ok || err != nil {
			os.Remove(path)
		}
		return err
	}, nil
}

// get writes layer layerIndex of ref (every layer if negative) to out through the daemon at
// root: the uncompressed tar, or the blob as stored.
func get(ctx context.Context, out io.Writer, ref string, p ocispec.Platform, root, hostsDir string, insecure []string, layerIndex int, blob bool) ([]getResult, error) {
	opts := []registry.Option{registry.WithInsecureRegistries(insecure...)}
	if hostsDir != "" {
		opts = append(opts, registry.WithHostsDir(hostsDir))
	}
	img, err := registry.New(opts...).Resolve(ctx, ref, p)
	if err != nil {
		return nil, err
	}
	layers := img.Layers
	if layerIndex >= 0 {
		if layerIndex >= len(layers) {
			return nil, fmt.Errorf("layer %d: %s has %d layers", layerIndex, img.Name, len(layers))
		}
		layers = layers[layerIndex : layerIndex+1]
	}
	srcs := make([]seed.Source, len(layers))
	for i, l := range layers {
		srcs[i] = seed.Source{Host: img.Host, Repository: img.Repository, Blob: l.Descriptor, DiffID: l.DiffID, RandomAccess: blob}
	}
	return stream(ctx, out, root, srcs)
}

// getResult is one layer get wrote, as --json prints it.
type getResult struct {
	DiffID  string  `json:"diff_id"`
	Blob    string  `json:"blob,omitempty"` // with --blob
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// stream has the daemon at root write each of srcs to out, one after the other, with a
// progress bar on stderr when it is a terminal.
func stream(ctx context.Context, out io.Writer, root string, srcs []seed.Source) ([]getResult, error) {
	control, err := dataPlane(ctx, root)
	if err != nil {
		return nil, err
	}
	var results []getResult
	for i, src := range srcs {
		r := getResult{DiffID: src.DiffID.String()}
		var total int64 // a layer's tar is as long as its stream: not known here
		if src.RandomAccess {
			r.Blob, total = src.Blob.Digest.String(), src.Blob.Size
		}
		w := out
		var bar *progress
		if term.IsTerminal(int(os.Stderr.Fd())) {
			bar = newProgress(os.Stderr, fmt.Sprintf("layer %d", i), total)
			w = bar.writer(out)
		}
		start := time.Now()
		n, err := control.Stream(ctx, w, src)
		if bar != nil {
			bar.done()
		}
		if err != nil {
			return results, err
		}
		r.Bytes, r.Seconds = n, time.Since(start).Seconds()
		results = append(results, r)
	}
	return results, nil
}

// dataPlane returns a client of the data plane of the daemon whose root is root, once it
// answers.
func dataPlane(ctx context.Context, root string) (*fusemanager.Client, error) {
	c := fusemanager.NewClient(filepath.Join(root, daemon.FuseManagerSocket))
	if err := c.Ping(ctx); err != nil {
		return nil, fmt.Errorf("the daemon's data plane does not answer (is p2p-snapshotter running with --root %s?): %w", root, err)
	}
	return c, nil
}
