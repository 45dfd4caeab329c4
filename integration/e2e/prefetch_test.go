package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
)

// TestPrefetchThenRun: `p2pctl prefetch` warms an image's layers into the node's cache
// through its daemon; a container started after it, with plain nerdctl, reads every file of
// the image and nothing of its layers from the registry, and its layers are still mounted
// lazily (containerd fetched no layer blob).
func TestPrefetchThenRun(t *testing.T) {
	env, reg := setupMirror(t, containerdenv.Options{}, true)
	img := containerdenv.PushTestImage(t, reg, "test/prefetch:v1")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "p2pctl")
	if err := containerdenv.BuildCommand(ctx, "./cmd/p2pctl", bin, containerdenv.RaceEnabled); err != nil {
		t.Fatal(err)
	}
	layerBytes := func() int64 {
		var n int64
		for _, l := range img.Layers {
			n += reg.BlobBytesOf(l.Digest)
		}
		return n
	}

	out, err := exec.CommandContext(ctx, bin, "prefetch", "--root", env.SnapshotterRoot, "--insecure-registry", reg.Host, img.Ref).CombinedOutput()
	if err != nil {
		t.Fatalf("p2pctl prefetch: %v\n%s", err, out)
	}
	t.Logf("p2pctl prefetch:\n%s", out)
	if got := strings.Count(string(out), " warm in "); got != len(img.Layers) {
		t.Errorf("p2pctl prefetch reported %d layers warm; want %d", got, len(img.Layers))
	}
	prefetched := layerBytes()
	if prefetched == 0 {
		t.Fatal("the prefetch read nothing from the registry: was anything warmed?")
	}

	checkFiles(t, env, "p2p", img)
	if got := layerBytes() - prefetched; got != 0 {
		t.Errorf("the container's start read %d bytes of the layers from the registry after the prefetch; want none", got)
	}
	content := env.Ctr(t, "content", "ls", "-q")
	for i, l := range img.Layers {
		if strings.Contains(content, l.Digest) {
			t.Errorf("containerd fetched layer %d's blob %s; it must be mounted lazily", i, l.Digest)
		}
	}
}
