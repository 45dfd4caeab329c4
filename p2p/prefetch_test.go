package p2p_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"sync/atomic"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

// OpenBlob implements seed.BlobOpener: the whole blob, for a seed's pass.
func (m *memRanges) OpenBlob(ctx context.Context, host, repository string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	return m.ReadBlobRange(ctx, host, repository, desc.Digest, 0, int64(len(m.blob)))
}

// prefetchFiles is a layer of three 100 KiB files and a 1 MiB one, each spanning whole
// 64 KiB blocks of the stream or more.
func prefetchFiles() []layertest.File {
	reg := func(name string, n int, seed uint64) layertest.File {
		return layertest.File{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Format: tar.FormatPAX}, Data: layertest.Pattern(seed, n)}
	}
	dir := func(name string) layertest.File {
		return layertest.File{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, Format: tar.FormatPAX}}
	}
	return []layertest.File{dir("bin/"), reg("bin/app", 100<<10, 1), dir("etc/"), reg("etc/a.conf", 100<<10, 2), reg("etc/b.conf", 100<<10, 3),
		dir("data/"), reg("data/big", 1<<20, 4)}
}

// held returns how many blocks of task n's cache holds.
func held(n *testNode, task layer.TaskID, blocks int) int {
	c := 0
	for i := range blocks {
		if b, err := n.cache.Lookup(context.Background(), layer.BlockKey{Task: task, Index: i}); err == nil {
			b.Release()
			c++
		}
	}
	return c
}

// TestPrefetchLayerFiles: a peer prefetching the files of a gzip layer that match a pattern
// gets the layer's index and exactly the blocks holding those files, from the seed.
func TestPrefetchLayerFiles(t *testing.T) {
	raw, err := layertest.Tar(prefetchFiles())
	if err != nil {
		t.Fatal(err)
	}
	blob := layertest.Gzip(raw)
	src := seed.Source{Host: "registry.test", Repository: "app", DiffID: digest.FromBytes(raw),
		Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(blob), Size: int64(len(blob))}}
	origin := newTestNode(t, blob, nil, false)
	if err := origin.SeedLayer(t.Context(), src); err != nil {
		t.Fatal(err)
	}
	sched := newScheduler(p2p.FetchFromParents).add("origin", origin, false)
	sched.parents[0].Vouches = true
	peer := newTestNode(t, blob, sched, false)
	var last, total atomic.Int64
	err = peer.Prefetch(t.Context(), src, p2p.Selection{Files: []string{"etc/*.conf"}}, func(d, tot int64) { last.Store(d); total.Store(tot) })
	if err != nil {
		t.Fatal(err)
	}
	l, err := peer.Open(src.Task())
	if err != nil {
		t.Fatal(err)
	}
	x := l.Index
	want := map[int]bool{}
	for _, name := range []string{"etc/a.conf", "etc/b.conf"} {
		e, _ := x.Lookup(name)
		first, last := x.Blocks.Span(e.Offset, e.Size)
		for i := first; i <= last; i++ {
			want[i] = true
		}
	}
	if got := held(peer, src.Task(), x.Blocks.Count()); got != len(want) {
		t.Errorf("the peer holds %d blocks; want the %d holding etc/*.conf", got, len(want))
	}
	for i := range want {
		if b, err := peer.cache.Lookup(t.Context(), layer.BlockKey{Task: src.Task(), Index: i}); err != nil {
			t.Errorf("block %d of etc/*.conf not warmed: %v", i, err)
		} else {
			b.Release()
		}
	}
	if last.Load() != total.Load() || total.Load() != int64(len(want))*testBlockSize {
		t.Errorf("progress ended at %d of %d; want %d of %d", last.Load(), total.Load(), len(want)*testBlockSize, len(want)*testBlockSize)
	}
	if got := peer.ranges.served.Load(); got != 0 {
		t.Errorf("the peer read %d bytes from the registry; want none", got)
	}
}

// TestPrefetchEStargz: a peer prefetching an eStargz layer gets its TOC and the chunks of
// the files before the landmark, or of the files named, in blocks of the blob, from the
// blob's origin; a mount after it reads them from the cache.
func TestPrefetchEStargz(t *testing.T) {
	raw, err := layertest.Tar(prefetchFiles())
	if err != nil {
		t.Fatal(err)
	}
	blob, toc, err := layertest.EStargz(raw, estargz.WithPrioritizedFiles([]string{"bin/app"}), estargz.WithChunkSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	src := seed.Source{Host: "registry.test", Repository: "app", DiffID: digest.FromBytes(raw),
		Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(blob), Size: int64(len(blob)),
			Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: toc.String()}}}
	task := layer.TaskIDFromDigest(src.Blob.Digest)
	blocks := layer.BlockCount(src.Blob.Size, testBlockSize)
	for _, tc := range []struct {
		name string
		sel  p2p.Selection
		file string // a file whose reads must find every block warmed
		most int    // blocks at most
	}{
		{"landmark", p2p.Selection{}, "bin/app", 4},
		{"files", p2p.Selection{Files: []string{"etc/b.conf"}}, "etc/b.conf", 4},
		{"all", p2p.Selection{All: true}, "data/big", blocks},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := newTestNode(t, blob, nil, false, p2p.WithStargzLayers())
			if _, err := origin.Blob(t.Context(), src); err != nil {
				t.Fatal(err)
			}
			peer := newTestNode(t, blob, newScheduler(p2p.FetchFromParents).add("origin", origin, false), false, p2p.WithStargzLayers())
			if err := peer.Prefetch(t.Context(), src, tc.sel, nil); err != nil {
				t.Fatal(err)
			}
			got := held(peer, task, blocks)
			if got == 0 || got > tc.most {
				t.Errorf("the peer holds %d blocks of the blob; want 1 to %d", got, tc.most)
			}
			// Reading the file now takes nothing more from the origin.
			servedBefore := origin.served.Load()
			l, err := peer.OpenStargz(t.Context(), src, toc)
			if err != nil {
				t.Fatal(err)
			}
			var want []byte
			for _, f := range prefetchFiles() {
				if f.Header.Name == tc.file {
					want = f.Data
				}
			}
			p := make([]byte, len(want))
			if n, err := l.ReadAt(tc.file, p, 0); n != len(want) || (err != nil && err != io.EOF) || !bytes.Equal(p, want) {
				t.Fatalf("read %s: %d bytes, %v", tc.file, n, err)
			}
			if got := origin.served.Load() - servedBefore; got != 0 {
				t.Errorf("reading %s after the prefetch took %d blocks from the origin; want none", tc.file, got)
			}
			if got := peer.ranges.served.Load(); got != 0 {
				t.Errorf("the peer read %d bytes from the registry; want none", got)
			}
		})
	}
}
