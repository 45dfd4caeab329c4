package fusemanager

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/registry"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

// The snapshotter drives both kinds of mounter through one interface.
var (
	_ snapshotter.LayerMounter = (*Mounter)(nil)
	_ snapshotter.LayerMounter = (*Client)(nil)
)

// TestClientServer mounts a layer through a manager served on a unix socket, as the daemon
// does, and checks that every call is idempotent and errors come back with their reason.
func TestClientServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts FUSE")
	}
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	raw, err := layertest.Tar([]layertest.File{{Header: tar.Header{Typeflag: tar.TypeReg, Name: "hello.txt", Mode: 0o644}, Data: []byte("hello, layer\n")}})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
	repo, _ := name.NewRepository(host+"/fm/layer", name.Insecure)
	if err := remote.WriteLayer(repo, l); err != nil {
		t.Fatal(err)
	}
	blob, _ := l.Digest()
	size, _ := l.Size()
	diffID, _ := l.DiffID()
	src := seed.Source{Host: host, Repository: "fm/layer", DiffID: digest.Digest(diffID.String()),
		Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.Digest(blob.String()), Size: size}}

	dir := t.TempDir()
	cache, _ := blockcache.New(4<<20, blockcache.WithBlockSize(64<<10))
	defer cache.Close()
	store, err := seed.New(filepath.Join(dir, "layers"), cache, registry.New(registry.WithInsecureRegistries(host)))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m := NewMounter(store)
	defer m.Close()
	ln, err := snapshotter.ListenUnix(filepath.Join(dir, "fm.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, m, ln) }()
	defer func() { cancel(); <-served }()

	c := NewClient(filepath.Join(dir, "fm.sock"))
	if err := c.Start(ctx, []string{"/nonexistent"}, filepath.Join(dir, "log"), time.Second); err != nil {
		t.Fatalf("Start with a manager already answering: %v", err)
	}
	// A prefetch seeds the layer in the background; the Mount below finds it held.
	if err := c.Prefetch(ctx, src); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := store.Open(layer.TaskIDFromDigest(src.DiffID)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the prefetch did not seed the layer")
		}
		time.Sleep(10 * time.Millisecond)
	}

	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	for range 2 {
		if err := c.Mount(ctx, mnt, src, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "hello.txt")); err != nil || string(got) != "hello, layer\n" {
		t.Fatalf("read through the mount: %q, %v", got, err)
	}
	if err := c.Restore(ctx, mnt, src.DiffID, nil); err != nil {
		t.Fatalf("Restore of a mounted layer: %v", err)
	}
	if err := c.Restore(ctx, filepath.Join(dir, "other"), digest.FromString("never seeded"), nil); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Restore of a layer this node never held: got %v", err)
	}
	if err := c.Unmount(ctx, mnt); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "hello.txt")); !os.IsNotExist(err) {
		t.Fatalf("layer still mounted after Unmount: %v", err)
	}
	if err := c.Unmount(ctx, mnt); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
}

func TestStartReportsAManagerThatDies(t *testing.T) {
	dir := t.TempDir()
	c := NewClient(filepath.Join(dir, "none.sock"))
	err := c.Start(context.Background(), []string{"/bin/false"}, filepath.Join(dir, "fm.log"), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("got %v, want an error saying the manager exited", err)
	}
}
