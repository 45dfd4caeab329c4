package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

// TestEStargzMountedFromTOC: an image converted with `nerdctl image convert --estargz --oci`
// runs under --snapshotter=p2p with every layer mounted lazily from its TOC; the registry
// serves a small part of the layers (a 16 MiB file nobody reads stays unread), and the
// filesystem equals the one overlayfs unpacks from the same image, but for modification
// times, which the TOC keeps to the second.
func TestEStargzMountedFromTOC(t *testing.T) {
	reg := startRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	layers := equivalenceLayers(t)
	layers = append(layers, []layertest.File{{
		Header: tar.Header{Typeflag: tar.TypeReg, Name: "data/unread.bin", Mode: 0o644},
		Data:   layertest.Pattern(9, 16<<20),
	}})
	src, err := reg.PushStored(ctx, "test/esgz-src:v1", layers...)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/test/esgz:v1"
	img := convertToEStargz(ctx, t, reg, src.Ref, ref)
	manifest, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	var chain []digest.Digest
	for i, l := range manifest.Layers {
		if _, ok := l.Annotations[estargz.TOCJSONDigestAnnotation]; !ok {
			t.Fatalf("layer %d of the converted image has no TOC digest annotation: %v", i, l.Annotations)
		}
		total += l.Size
		chain = append(chain, digest.Digest(cfg.RootFS.DiffIDs[i].String()))
	}

	env := setupMirrorFor(t, reg, "", containerdenv.Options{}, true)
	before := reg.BlobBytesServed()
	out := env.Nerdctl(t, "--snapshotter=p2p", "run", "--rm", "--net", "none", ref, "sh", "-c", "cat /etc/replaced.conf /opq/new.txt")
	if want := "replaced in layer 2\nnew in layer 2\n"; out != want {
		t.Errorf("the container printed %q, want %q", out, want)
	}
	served := reg.BlobBytesServed() - before
	t.Logf("pull + run: the registry served %d bytes of the layers' %d", served, total)
	if served > total/2 {
		t.Errorf("pull + run read %d bytes of the layers' %d from the registry; want well under half (16 MiB are never read)", served, total)
	}
	p2p := env.SnapshotterClient(t)
	for i := range chain {
		info, err := p2p.Stat(ctx, identity.ChainID(chain[:i+1]).String())
		if err != nil {
			t.Fatalf("layer %d: no committed snapshot: %v", i, err)
		}
		if info.Labels[snapshotter.LabelRemote] != "p2p" {
			t.Fatalf("layer %d was not mounted lazily (labels %v)", i, info.Labels)
		}
	}
	content := env.Ctr(t, "content", "ls", "-q")
	for i, l := range manifest.Layers {
		if strings.Contains(content, l.Digest.String()) {
			t.Errorf("containerd fetched layer %d's blob %s", i, l.Digest)
		}
	}

	// The same image unpacked by overlayfs: the views of the top layer agree.
	env.Nerdctl(t, "--snapshotter=overlayfs", "pull", "--quiet", ref)
	got, want := views(ctx, t, env, p2p, "esgz", identity.ChainID(chain).String())
	// An eStargz TOC keeps modification times to the second, rounded: so does the mount, as
	// stargz-snapshotter's.
	for _, n := range want {
		ts := time.Unix(n.mtime.Unix()).Round(time.Second)
		n.mtime = unix.NsecToTimespec(ts.UnixNano())
	}
	if diffs := compareTrees(got, want); len(diffs) > 0 {
		t.Errorf("the p2p view differs from the overlayfs view (got p2p, want overlayfs):\n%s", strings.Join(diffs, "\n"))
	} else {
		t.Logf("%d paths compared: p2p and overlayfs agree", len(want))
	}
}

// convertToEStargz makes an eStargz copy of src with `nerdctl image convert --estargz --oci`
// in a containerd of its own, pushes it as dst, and returns it as the registry holds it.
func convertToEStargz(ctx context.Context, t *testing.T, reg *containerdenv.Registry, src, dst string) v1.Image {
	t.Helper()
	t.Run("convert", func(t *testing.T) {
		conv := containerdenv.New(t, containerdenv.Options{})
		hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n", "http://"+reg.Host, "http://"+reg.Host)
		if err := conv.SetHostsTOML(reg.Host, hosts); err != nil {
			t.Fatal(err)
		}
		conv.Nerdctl(t, "pull", "--quiet", src)
		conv.Nerdctl(t, "image", "convert", "--estargz", "--oci", src, dst)
		conv.Nerdctl(t, "push", "--quiet", dst)
	})
	if t.Failed() {
		t.FailNow()
	}
	r, err := name.ParseReference(dst, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestEStargzCorruptChunkIsRefused: the registry alters a byte of the chunk that holds a
// file of an eStargz layer. The container's read of that file fails; it never gets the
// altered bytes, and the layer was mounted lazily (the read went through our checks).
func TestEStargzCorruptChunkIsRefused(t *testing.T) {
	reg := startRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bb, err := containerdenv.BusyboxLayer("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("the true content of secret.txt\n", 2048)
	src, err := reg.PushStored(ctx, "test/esgz-corrupt-src:v1", bb, []layertest.File{{
		Header: tar.Header{Typeflag: tar.TypeReg, Name: "data/secret.txt", Mode: 0o644},
		Data:   []byte(secret),
	}})
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/test/esgz-corrupt:v1"
	img := convertToEStargz(ctx, t, reg, src.Ref, ref)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	top := layers[len(layers)-1]
	rc, err := top.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	er, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob))))
	if err != nil {
		t.Fatal(err)
	}
	e, ok := er.Lookup("data/secret.txt")
	if !ok {
		t.Fatal("the eStargz layer has no data/secret.txt")
	}
	dgst, err := top.Digest()
	if err != nil {
		t.Fatal(err)
	}
	// A byte of the file's compressed data, past its gzip member's header: the TOC, after
	// it, stays intact, so the layer mounts from it and the read hits the altered chunk.
	reg.CorruptBlob(dgst.String(), e.Offset+64)

	env := setupMirrorFor(t, reg, "", containerdenv.Options{}, true)
	out, stderr, err := env.RunNerdctl(ctx, "--snapshotter=p2p", "run", "--rm", "--net", "none", ref, "cat", "/data/secret.txt")
	if err == nil {
		t.Fatalf("reading the altered file succeeded: printed %d bytes", len(out))
	}
	if out != "" && !strings.HasPrefix(secret, out) {
		t.Fatalf("the container printed bytes that are not the file's: %.80q", out)
	}
	if !strings.Contains(stderr, "Input/output error") {
		t.Errorf("the read failed, but not with EIO: %v; stderr ends %q", err, stderr[max(0, len(stderr)-200):])
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var chain []digest.Digest
	for _, d := range cfg.RootFS.DiffIDs {
		chain = append(chain, digest.Digest(d.String()))
	}
	info, err := env.SnapshotterClient(t).Stat(ctx, identity.ChainID(chain).String())
	if err != nil || info.Labels[snapshotter.LabelRemote] != "p2p" {
		t.Fatalf("the top layer was not mounted lazily (%v, labels %v): the read did not go through our checks", err, info.Labels)
	}
}
