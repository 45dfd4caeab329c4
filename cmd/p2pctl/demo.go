package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/registry"
)

type demoOptions struct {
	layerMB   int
	cacheMB   int
	blockSize int
}

func newDemoCommand() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the block pipeline end to end on a generated image, with nothing to set up",
		Long: `Starts an in-process OCI registry on loopback, pushes a generated three-layer image to it,
resolves the image with the registry client, streams every layer through the seed's single
pass (decompress, cut into blocks, digest, index) into the in-memory block cache and a
verified stream file, then reads every file of every layer back through the cache and checks
it against the bytes it was made from.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	cmd.Flags().IntVar(&o.layerMB, "layer-size", 64, "size of the largest generated layer in MB")
	cmd.Flags().IntVar(&o.cacheMB, "cache-size", 256, "block cache size in MiB")
	cmd.Flags().IntVar(&o.blockSize, "block-size", layer.DefaultBlockSize, "block size in bytes")
	return cmd
}

// demoLayer is a generated layer and the tar stream it was made from.
type demoLayer struct {
	name  string
	files []layertest.File
	raw   []byte
}

func runDemo(ctx context.Context, out io.Writer, o demoOptions) error {
	start := time.Now()
	addr, stop, err := startRegistry()
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(out, "registry   in-process OCI registry on http://%s\n", addr)

	layers, err := makeLayers(o.layerMB)
	if err != nil {
		return err
	}
	ref := addr + "/demo/app:v1"
	if err := pushImage(ref, layers); err != nil {
		return err
	}
	fmt.Fprintf(out, "image      %s: %d layers pushed\n", ref, len(layers))

	client := registry.New(registry.WithInsecureRegistries(addr))
	img, err := client.Resolve(ctx, ref, ocispec.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		return fmt.Errorf("resolve %s: %w", ref, err)
	}
	fmt.Fprintf(out, "resolved   %s (manifest %s)\n\n", img.Name, img.Manifest.Digest)

	cache, err := blockcache.New(int64(o.cacheMB)<<20, blockcache.WithBlockSize(o.blockSize))
	if err != nil {
		return err
	}
	defer cache.Close()
	dir, err := os.MkdirTemp("", "p2pctl-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := seed.New(dir, cache, progressOpener{client})
	if err != nil {
		return err
	}
	defer store.Close()

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tBLOB\tTAR\tBLOCKS\tFILES\tPASS\tRATE")
	seeded := make([]*seed.Layer, len(img.Layers))
	var total int64
	var totalTime time.Duration
	for i, l := range img.Layers {
		t0 := time.Now()
		sl, err := store.Layer(ctx, seed.Source{Host: img.Host, Repository: img.Repository, Blob: l.Descriptor, DiffID: l.DiffID})
		if err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
		d := time.Since(t0)
		x := sl.Index
		seeded[i], total, totalTime = sl, total+x.Blocks.Size, totalTime+d
		fmt.Fprintf(tw, "%d %s\t%s\t%s\t%d\t%d\t%s\t%.0f MB/s\n", i+1, short(l.DiffID.Encoded()), mb(l.Descriptor.Size),
			mb(x.Blocks.Size), x.Blocks.Count(), len(x.Entries), d.Round(time.Millisecond), float64(x.Blocks.Size)/1e6/d.Seconds())
	}
	tw.Flush()

	files, bytesRead, readTime, err := verifyFiles(ctx, seeded, layers)
	if err != nil {
		return err
	}
	s := cache.Stats()
	fmt.Fprintf(out, "\nseed pass  %s of tar in %s: %.0f MB/s (decompress + blocks + digests + diffID + index)\n",
		mb(total), totalTime.Round(time.Millisecond), float64(total)/1e6/totalTime.Seconds())
	fmt.Fprintf(out, "read back  %d files, %s, through the block cache in %s: all match the layers they came from\n",
		files, mb(bytesRead), readTime.Round(time.Millisecond))
	fmt.Fprintf(out, "cache      %d blocks, %s held of %d MiB; %d hits, %d misses, %d evictions\n",
		s.Blocks, mb(s.BytesHeld), o.cacheMB, s.Hits, s.Misses, s.Evictions)
	fmt.Fprintf(out, "done in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func short(s string) string { return s[:12] }

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

func startRegistry() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("start registry: %w", err)
	}
	srv := &http.Server{Handler: ggcrregistry.New(ggcrregistry.Logger(discardLogger())), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}

func makeLayers(largestMB int) ([]demoLayer, error) {
	specs := []demoLayer{
		{name: "every entry type", files: layertest.EveryType()},
		{name: "application", files: layertest.Generated(1, int64(largestMB)<<20, 3000)},
		{name: "data", files: layertest.Generated(2, int64(largestMB)<<18, 800)},
	}
	for i := range specs {
		raw, err := layertest.Tar(specs[i].files)
		if err != nil {
			return nil, err
		}
		specs[i].raw = raw
	}
	return specs, nil
}

func pushImage(ref string, layers []demoLayer) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	img := empty.Image
	for _, l := range layers {
		raw := l.raw
		tl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
		if err != nil {
			return fmt.Errorf("layer %s: %w", l.name, err)
		}
		if img, err = mutate.AppendLayers(img, tl); err != nil {
			return err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = []string{"/bin/sh"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	if err := remote.Write(r, img); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// progressOpener shows a progress bar while a blob downloads.
type progressOpener struct{ blobs seed.BlobOpener }

func (p progressOpener) OpenBlob(ctx context.Context, host, repository string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := p.blobs.OpenBlob(ctx, host, repository, desc)
	if err != nil {
		return nil, err
	}
	bar := newProgress(os.Stderr, "seeding "+short(desc.Digest.Encoded()), desc.Size)
	return progressReadCloser{Reader: bar.reader(rc), rc: rc, bar: bar}, nil
}

type progressReadCloser struct {
	io.Reader
	rc  io.Closer
	bar *progress
}

func (p progressReadCloser) Close() error {
	p.bar.done()
	return p.rc.Close()
}

// verifyFiles reads every regular file of every layer through the block cache and compares it
// with the file the layer was made from.
func verifyFiles(ctx context.Context, seeded []*seed.Layer, layers []demoLayer) (int, int64, time.Duration, error) {
	var files int
	var total int64
	start := time.Now()
	for i, sl := range seeded {
		x := sl.Index
		want := map[string][32]byte{}
		for _, f := range layers[i].files {
			if n, err := layer.CleanName(f.Header.Name); err == nil && len(f.Data) > 0 {
				want[n] = sha256.Sum256(f.Data)
			}
		}
		for j := range x.Entries {
			e, err := x.Resolve(&x.Entries[j])
			if err != nil {
				return 0, 0, 0, err
			}
			if e.Type != layer.TypeRegular || e.Size == 0 {
				continue
			}
			buf := make([]byte, e.Size)
			if n, err := sl.ReadStreamAt(ctx, buf, e.Offset); err != nil || int64(n) != e.Size {
				return 0, 0, 0, fmt.Errorf("read %s: %d of %d bytes: %w", x.Entries[j].Name, n, e.Size, err)
			}
			if sum, ok := want[e.Name]; !ok || sum != sha256.Sum256(buf) {
				return 0, 0, 0, fmt.Errorf("file %s read through the cache differs from the layer's", x.Entries[j].Name)
			}
			files++
			total += e.Size
		}
	}
	return files, total, time.Since(start), nil
}
