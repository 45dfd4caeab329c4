package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

// TestFallbackWhenTheLayerCannotBeSeeded: the mirror tells the daemon every layer's source, but
// the daemon cannot read the registry (it is not told the registry speaks plain HTTP). Every
// Prepare falls back to a normal snapshot, containerd downloads and unpacks the layers itself,
// and the container starts with the right files: fallback, never failure.
func TestFallbackWhenTheLayerCannotBeSeeded(t *testing.T) {
	env, reg := setupMirror(t, containerdenv.Options{}, false)
	img := containerdenv.PushTestImage(t, reg, "test/fallback:v1")

	checkFiles(t, env, "p2p", img)

	// containerd names normal snapshots in the daemon after its own keys: walk them all.
	committed := 0
	err := env.SnapshotterClient(t).Walk(context.Background(), func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindCommitted {
			committed++
		}
		if info.Labels[snapshotter.LabelRemote] != "" {
			t.Errorf("snapshot %s is marked lazily mounted, yet the daemon could not read the registry", info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if committed != len(img.Layers) {
		t.Errorf("%d committed snapshots, want one per layer (%d)", committed, len(img.Layers))
	}
	content := env.Ctr(t, "content", "ls", "-q")
	for i, l := range img.Layers {
		if !strings.Contains(content, l.Digest) {
			t.Errorf("layer %d's blob is not in containerd's content store: it was not unpacked normally", i)
		}
	}
	if n := countFUSE(t, env.SnapshotterRoot); n != 0 {
		t.Errorf("%d FUSE mounts after a fallback", n)
	}
}
