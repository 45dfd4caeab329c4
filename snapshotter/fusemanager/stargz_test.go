package fusemanager

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/p2p/tasks"
	"github.com/p2pimage/p2p-snapshotter/registry"
)

// TestMountStargzFromTOC mounts an eStargz layer from its TOC: its files read right, and the
// registry serves a small part of the blob, not the big file nobody read.
func TestMountStargzFromTOC(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts FUSE")
	}
	var served atomic.Int64 // blob bytes the registry sent
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			w = &countingResponse{ResponseWriter: w, n: &served}
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	ts, err := layertest.Tar([]layertest.File{
		{Header: tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}},
		{Header: tar.Header{Typeflag: tar.TypeReg, Name: "etc/hello.txt", Mode: 0o644}, Data: []byte("hello, stargz\n")},
		{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: "hello", Linkname: "etc/hello.txt", Mode: 0o777}},
		{Header: tar.Header{Typeflag: tar.TypeReg, Name: "big.bin", Mode: 0o644}, Data: layertest.Pattern(1, len(big))},
	})
	if err != nil {
		t.Fatal(err)
	}
	blob, toc, err := layertest.EStargz(ts)
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(host+"/fm/stargz", name.Insecure)
	if err := remote.WriteLayer(repo, static.NewLayer(blob, types.OCILayer)); err != nil {
		t.Fatal(err)
	}
	served.Store(0)
	mnt := mountStargzLayer(t, host, "fm/stargz", blob, toc, digest.FromBytes(ts))
	if got, err := os.ReadFile(filepath.Join(mnt, "hello")); err != nil || string(got) != "hello, stargz\n" {
		t.Fatalf("read through the mount: %q, %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(mnt, "big.bin")); err != nil || fi.Size() != int64(len(big)) {
		t.Fatalf("big.bin: %v, %v; want %d bytes", fi, err, len(big))
	}
	if got := served.Load(); got > int64(len(blob))/4 {
		t.Fatalf("the registry served %d bytes of the %d-byte blob for a small file; want at most a quarter", got, len(blob))
	}
	t.Logf("registry served %d of %d bytes before big.bin was read", served.Load(), len(blob))
	if f, err := os.Open(filepath.Join(mnt, "big.bin")); err != nil {
		t.Fatal(err)
	} else {
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, layertest.Pattern(1, len(big))) {
			t.Fatalf("big.bin: %d bytes, %v; want the file", len(got), err)
		}
	}
}

// TestStargzMountShowsEveryEntryType: a layer of every entry type, converted to eStargz and
// mounted from its TOC, shows what an index of the blob's tar stream shows (what containerd
// would unpack), the TOC's own file, stargz.index.json, included.
func TestStargzMountShowsEveryEntryType(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts FUSE")
	}
	reg := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	ts, err := layertest.Tar(layertest.EveryType())
	if err != nil {
		t.Fatal(err)
	}
	blob, toc, err := layertest.EStargz(ts)
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(host+"/fm/every", name.Insecure)
	if err := remote.WriteLayer(repo, static.NewLayer(blob, types.OCILayer)); err != nil {
		t.Fatal(err)
	}
	// What a plain unpack of the blob holds.
	var stream bytes.Buffer
	want, err := ingest.Build(context.Background(), bytes.NewReader(blob), ingest.Options{Sink: ingest.BlockSinkFunc(
		func(_ context.Context, _ int, data []byte, _ layer.BlockDigest) error { stream.Write(data); return nil })})
	if err != nil {
		t.Fatal(err)
	}

	mnt := mountStargzLayer(t, host, "fm/every", blob, toc, want.DiffID)
	layertest.CompareTree(t, mnt, want, stream.Bytes(), layertest.CompareOptions{
		Whiteouts:    layertest.WhiteoutOverlay,
		OpaqueXattrs: []string{"trusted.overlay.opaque"},
	})
}

// mountStargzLayer mounts the eStargz layer blob, pushed to repository on host, from its TOC
// with a Mounter as the daemon builds it, on a new directory it returns; the layer is
// unmounted in cleanup.
func mountStargzLayer(t *testing.T, host, repository string, blob []byte, toc, diffID digest.Digest) string {
	t.Helper()
	dir := t.TempDir()
	cache, err := blockcache.New(8<<20, blockcache.WithBlockSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	client := registry.New(registry.WithInsecureRegistries(host))
	store, err := seed.New(filepath.Join(dir, "layers"), cache, client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	// The daemon's opener: a node with no scheduler, the blob's origin, reads exact ranges.
	node := p2p.NewNode(cache, tasks.New(cache), store, nil, p2p.WithBlobRanges(client), p2p.WithStargzLayers())
	t.Cleanup(func() { node.Close() })
	m := NewMounter(store, WithStargz(node))
	t.Cleanup(func() { m.Close() })
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	src := seed.Source{Host: host, Repository: repository, DiffID: diffID,
		Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(blob), Size: int64(len(blob)),
			Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: toc.String()}}}
	if err := m.Mount(context.Background(), mnt, src, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount(context.Background(), mnt) })
	return mnt
}

// countingResponse counts the body bytes written.
type countingResponse struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingResponse) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}
