package cluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/layer/stargz"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

// TestEStargzChunksFromPeers: an eStargz layer is mounted from its TOC on each peer of a
// cluster in turn, and each reads a few files through its mount. The first peer's reads
// take the blob's footer, its TOC and the chunks of those files from the registry, through
// the seed (the blob's origin); every later peer takes the same ranges from the seed and the
// peers before it, so the registry serves nothing more, and the 16 MiB file no one reads
// stays in the registry.
func TestEStargzChunksFromPeers(t *testing.T) {
	c := startEmptyCluster(t, Options{
		Name: "p2pde", Subnet: netip.MustParsePrefix("10.213.14.0/24"), Peers: 3, Seeds: 1,
		Limits: netlab.Limits{Up: 400 * netlab.Mbit, Down: 400 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 100 * netlab.Mbit},
		CacheSize: "64MiB", BlockSize: "1MiB",
	})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	rng := rand.NewChaCha8([32]byte{9})
	random := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	file := func(name string, data []byte) layertest.File {
		return layertest.File{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Format: tar.FormatPAX}, Data: data}
	}
	files := []layertest.File{ // in blob order: the files read first, the TOC last
		file("app/bin/server", random(300<<10)),
		file("app/etc/config.toml", []byte("listen = \":8080\"\n")),
		file("data.bin", random(16<<20)), // never read
	}
	raw, err := layertest.Tar(files)
	if err != nil {
		t.Fatal(err)
	}
	blob, toc, err := layertest.EStargz(raw)
	if err != nil {
		t.Fatal(err)
	}
	diffID, err := gunzipDigest(blob)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Registry.PushBlob(ctx, "test/esgz", blob); err != nil {
		t.Fatal(err)
	}
	c.Registry.ResetCounters()
	src := seed.Source{
		Host: c.Registry.Addr, Repository: "test/esgz",
		Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(blob), Size: int64(len(blob)),
			Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: toc.String()}},
		DiffID: diffID,
	}

	alone, err := exactRangeBytes(blob, toc, files[:2])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a node without peers reads %d bytes of exact ranges for the same files", alone)

	var first int64
	for i, d := range c.Peers {
		dir := filepath.Join(d.Root, "esgz")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := d.Control.Mount(ctx, dir, src, nil); err != nil {
			t.Fatalf("%s: mount: %v", d.Name, err)
		}
		t.Cleanup(func() { d.Control.Unmount(context.Background(), dir) })
		for _, f := range files[:2] {
			got, err := readInDaemon(ctx, d, filepath.Join(dir, f.Header.Name))
			if err != nil {
				t.Fatalf("%s: %v", d.Name, err)
			}
			if !bytes.Equal(got, f.Data) {
				t.Fatalf("%s: %s read through the mount differs from the layer's (%d bytes, want %d)", d.Name, f.Header.Name, len(got), len(f.Data))
			}
		}
		served := c.Registry.BytesOf(src.Blob.Digest)
		t.Logf("%s: mounted and read %d files in %s; the registry has served %d of the blob's %d bytes", d.Name, 2,
			time.Since(start).Round(time.Millisecond), served, len(blob))
		if i == 0 {
			first = served
			if served == 0 || served > int64(len(blob))/2 {
				t.Fatalf("the first peer's reads took %d bytes of the %d-byte blob from the registry; want some, and not the file no one reads", served, len(blob))
			}
		} else if served != first {
			t.Errorf("%s took %d bytes of the blob from the registry; want none: the ranges it read were at its parents", d.Name, served-first)
		}
	}
}

// exactRangeBytes returns how many bytes of blob a node without peers reads to open the
// layer and read files: exact chunk ranges, as the blob's origin reads them.
func exactRangeBytes(blob []byte, toc digest.Digest, files []layertest.File) (int64, error) {
	cr := &countingReaderAt{r: bytes.NewReader(blob)}
	l, err := stargz.Open(cr, int64(len(blob)), toc)
	if err != nil {
		return 0, err
	}
	for _, f := range files {
		if _, err := l.ReadAt(f.Header.Name, make([]byte, len(f.Data)), 0); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
	}
	return cr.n.Load(), nil
}

type countingReaderAt struct {
	r *bytes.Reader
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// gunzipDigest returns the digest of the uncompressed stream of a gzip blob: a layer's
// diffID.
func gunzipDigest(blob []byte) (digest.Digest, error) {
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		return "", err
	}
	defer zr.Close()
	d := digest.Canonical.Digester()
	if _, err := io.Copy(d.Hash(), zr); err != nil {
		return "", err
	}
	return d.Digest(), nil
}

// readInDaemon reads the file at path in the daemon's mount namespace, where its FUSE
// mounts are: `ip netns exec` gives each process a namespace of its own.
func readInDaemon(ctx context.Context, d *Daemon, path string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "nsenter", "--target", strconv.Itoa(d.Proc.Pid), "--mount", "cat", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w: %s", path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
