package e2e

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
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
	containerdenv.RequireRoot(t)
	reg, err := containerdenv.StartRegistry(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
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
	t.Run("convert", func(t *testing.T) {
		conv := containerdenv.New(t, containerdenv.Options{})
		hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n", "http://"+reg.Host, "http://"+reg.Host)
		if err := conv.SetHostsTOML(reg.Host, hosts); err != nil {
			t.Fatal(err)
		}
		conv.Nerdctl(t, "pull", "--quiet", src.Ref)
		conv.Nerdctl(t, "image", "convert", "--estargz", "--oci", src.Ref, ref)
		conv.Nerdctl(t, "push", "--quiet", ref)
	})
	if t.Failed() {
		return
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
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
