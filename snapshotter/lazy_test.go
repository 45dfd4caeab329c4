package snapshotter

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/registry"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
)

func reg(name, data string) layertest.File {
	return layertest.File{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Format: tar.FormatPAX}, Data: []byte(data)}
}

func dir(name string) layertest.File {
	return layertest.File{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, Format: tar.FormatPAX}}
}

// lazyEnv is a registry holding a two-layer image, and what a containerd unpacker would send
// to prepare each layer.
type lazyEnv struct {
	host      string
	blobGets  atomic.Int64 // GETs of layer blobs
	image     *registry.Image
	ref       string
	big       []byte
	layerDirs string
}

func newLazyEnv(t *testing.T) *lazyEnv {
	t.Helper()
	env := &lazyEnv{big: layertest.Pattern(5, 300<<10), layerDirs: t.TempDir()}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && env.image != nil {
			for _, l := range env.image.Layers {
				if strings.HasSuffix(r.URL.Path, "/blobs/"+l.Descriptor.Digest.String()) {
					env.blobGets.Add(1)
				}
			}
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	env.host = strings.TrimPrefix(srv.URL, "http://")
	env.ref = env.host + "/lazy/app:v1"

	layers := [][]layertest.File{
		{dir("etc/"), reg("etc/hostname", "one\n"), reg("etc/removed", "gone soon\n"), dir("cache/"), reg("cache/old", "old\n")},
		{dir("etc/"), reg("etc/.wh.removed", ""), dir("cache/"), reg("cache/.wh..wh..opq", ""), reg("cache/new", "new\n"),
			dir("data/"), {Header: tar.Header{Typeflag: tar.TypeReg, Name: "data/big", Mode: 0o600, Format: tar.FormatPAX}, Data: env.big}},
	}
	img := empty.Image
	for _, files := range layers {
		raw, err := layertest.Tar(files)
		if err != nil {
			t.Fatal(err)
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, _ = mutate.ConfigFile(img, cfg)
	r, _ := name.ParseReference(env.ref, name.Insecure)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	resolved, err := registry.New(registry.WithInsecureRegistries(env.host)).Resolve(context.Background(), env.ref, ocispec.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	env.image = resolved
	return env
}

// labels returns what containerd's CRI plugin sends when it prepares layer i.
func (env *lazyEnv) labels(i int) map[string]string {
	l := env.image.Layers[i]
	return map[string]string{
		LabelTargetRef:         l.ChainID.String(),
		LabelCRIImageRef:       env.ref,
		LabelCRIManifestDigest: env.image.Manifest.Digest.String(),
		LabelCRILayerDigest:    l.Descriptor.Digest.String(),
	}
}

// open starts what a daemon runs: a block cache, a layer store, an in-process FUSE mounter and
// the snapshotter. The returned stop stops them all, as a daemon (and its FUSE manager) exit.
func (env *lazyEnv) open(t *testing.T, root string, opts ...Option) (*Snapshotter, func()) {
	t.Helper()
	cache, err := blockcache.New(8<<20, blockcache.WithBlockSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	client := registry.New(registry.WithInsecureRegistries(env.host))
	store, err := seed.New(env.layerDirs, cache, client)
	if err != nil {
		t.Fatal(err)
	}
	mounter := fusemanager.NewMounter(store)
	sn, err := New(context.Background(), root, append([]Option{WithLazyLayers(mounter, NewLabelResolver(client), time.Minute)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			sn.Close()
			mounter.Close()
			store.Close()
			cache.Close()
		})
	}
	t.Cleanup(stop)
	return sn, stop
}

func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts FUSE and overlayfs")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// TestLazyLayersAsContainerdUnpacksThem drives the snapshotter the way containerd's unpacker
// does with CRI labels: each Prepare of a known layer returns ErrAlreadyExists after mounting
// it, the rootfs built on top shows both layers with whiteouts applied, the blobs are fetched
// once, and a restarted snapshotter mounts the layers again without fetching anything.
func TestLazyLayersAsContainerdUnpacksThem(t *testing.T) {
	requireFUSE(t)
	env := newLazyEnv(t)
	ctx := namespaces.WithNamespace(context.Background(), "test")
	root := t.TempDir()
	var outcomes outcomeCounts
	sn, stop := env.open(t, root, WithLayerOutcomes(outcomes.add))

	parent := ""
	for i, l := range env.image.Layers {
		key := "extract-" + l.ChainID.String()
		_, err := sn.Prepare(ctx, key, parent, snapshots.WithLabels(env.labels(i)))
		if !errdefs.IsAlreadyExists(err) {
			t.Fatalf("Prepare layer %d: got %v, want ErrAlreadyExists", i, err)
		}
		info, err := sn.Stat(ctx, l.ChainID.String())
		if err != nil {
			t.Fatalf("layer %d not committed: %v", i, err)
		}
		if info.Labels[LabelRemote] != "p2p" || info.Parent != parent {
			t.Fatalf("layer %d: labels %v parent %q", i, info.Labels, info.Parent)
		}
		parent = l.ChainID.String()
	}
	if got := outcomes.get("lazy"); got != len(env.image.Layers) {
		t.Errorf("%d layers counted lazy; want %d", got, len(env.image.Layers))
	}
	checkRootfs(t, ctx, sn, parent, env.big)
	if got := env.blobGets.Load(); got != 2 {
		t.Fatalf("%d blob GETs, want one per layer", got)
	}

	// A layer whose mount went away (unmounted by someone else) is mounted again when
	// containerd prepares it again.
	base, err := sn.Snapshotter.Stat(ctx, env.image.Layers[0].ChainID.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(base.Labels[upperdirLabel], unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := sn.Prepare(ctx, "extract-again", "", snapshots.WithLabels(env.labels(0)))
		if !errdefs.IsAlreadyExists(err) {
			t.Fatalf("Prepare of a committed layer: %v", err)
		}
		if _, err := os.Stat(filepath.Join(base.Labels[upperdirLabel], "etc", "hostname")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the layer was not mounted again")
		}
		time.Sleep(10 * time.Millisecond) // until the mounter has seen its mount go
	}
	checkRootfs(t, ctx, sn, parent, env.big)

	// Restart of everything, FUSE servers included: the layers are mounted again from what
	// this node stored.
	stop()
	sn2, _ := env.open(t, root)
	checkRootfs(t, ctx, sn2, parent, env.big)
	if got := env.blobGets.Load(); got != 2 {
		t.Fatalf("a restart fetched blobs again (%d GETs)", got)
	}

	// Removing the snapshots unmounts the layers.
	for i := len(env.image.Layers) - 1; i >= 0; i-- {
		if err := sn2.Remove(ctx, env.image.Layers[i].ChainID.String()); err != nil {
			t.Fatal(err)
		}
	}
	if mounts := fuseMountsUnder(t, root); len(mounts) != 0 {
		t.Fatalf("mounts left after Remove: %v", mounts)
	}
}

func checkRootfs(t *testing.T, ctx context.Context, sn snapshots.Snapshotter, top string, big []byte) {
	t.Helper()
	mounts, err := sn.View(ctx, "view-"+t.Name(), top)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Remove(ctx, "view-"+t.Name())
	target := t.TempDir()
	if err := mount.All(mounts, target); err != nil {
		t.Fatalf("mount rootfs %v: %v", mounts, err)
	}
	defer mount.UnmountAll(target, 0)
	for name, want := range map[string]string{"etc/hostname": "one\n", "cache/new": "new\n", "data/big": string(big)} {
		got, err := os.ReadFile(filepath.Join(target, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
	}
	for _, gone := range []string{"etc/removed", "cache/old"} {
		if _, err := os.Lstat(filepath.Join(target, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: still visible (%v); a whiteout or opaque directory should hide it", gone, err)
		}
	}
}

func fuseMountsUnder(t *testing.T, root string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && strings.HasPrefix(fields[4], root) {
			out = append(out, fields[4])
		}
	}
	return out
}

func TestUnknownLayerFallsBackToNormalSnapshot(t *testing.T) {
	requireFUSE(t)
	env := newLazyEnv(t)
	ctx := namespaces.WithNamespace(context.Background(), "test")
	var outcomes outcomeCounts
	sn, _ := env.open(t, t.TempDir(), WithLayerOutcomes(outcomes.add))
	defer func() {
		if lazy, others := outcomes.get("lazy"), outcomes.get("unknown")+outcomes.get("fallback"); lazy != 0 || others != 4 {
			t.Errorf("counted %d lazy and %d unknown or fallback; want 0 and 4", lazy, others)
		}
	}()
	for name, labels := range map[string]map[string]string{
		"no CRI labels": {LabelTargetRef: env.image.Layers[0].ChainID.String()},
		"wrong chain ID": func() map[string]string {
			l := env.labels(0)
			l[LabelTargetRef] = env.image.Layers[1].ChainID.String()
			return l
		}(),
		"unknown layer": func() map[string]string {
			l := env.labels(0)
			l[LabelCRILayerDigest] = "sha256:" + strings.Repeat("0", 64)
			return l
		}(),
		"unreachable ref": func() map[string]string { l := env.labels(0); l[LabelCRIImageRef] = "127.0.0.1:1/none:v1"; return l }(),
	} {
		t.Run(name, func(t *testing.T) {
			key := "extract-" + name
			mounts, err := sn.Prepare(ctx, key, "", snapshots.WithLabels(labels))
			if err != nil || len(mounts) == 0 {
				t.Fatalf("Prepare: %v, %d mounts; want a normal active snapshot", err, len(mounts))
			}
			if err := sn.Remove(ctx, key); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// outcomeCounts counts the outcomes a Snapshotter reports (WithLayerOutcomes).
type outcomeCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *outcomeCounts) add(outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[outcome]++
}

func (o *outcomeCounts) get(outcome string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[outcome]
}
