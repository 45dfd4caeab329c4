package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
)

// TestBuiltinPlugin builds containerd-p2p (containerd's main and built-in plugins, plus
// package plugin) and runs a container through it with nerdctl --snapshotter=p2p: no daemon
// process, the snapshotter configured in containerd's own config.toml under
// [plugins."io.containerd.snapshotter.v1.p2p"], its mirror in front of the registry. Every
// layer is mounted lazily, by containerd's process, and the container reads every file right.
func TestBuiltinPlugin(t *testing.T) {
	reg := startRegistry(t)
	mirror := freeAddress(t)
	env := containerdenv.New(t, containerdenv.Options{
		Builtin: true,
		ContainerdConfig: fmt.Sprintf(`  [plugins."io.containerd.snapshotter.v1.p2p".mirror]
    address = %q
  [plugins."io.containerd.snapshotter.v1.p2p".registry]
    insecure = [%q]
`, mirror, reg.Host),
	})
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+reg.Host, "http://"+mirror)
	if err := env.SetHostsTOML(reg.Host, hosts); err != nil {
		t.Fatal(err)
	}
	img := containerdenv.PushTestImage(t, reg, "test/builtin:v1")

	checkFiles(t, env, "p2p", img)

	client, err := containerd.New(env.ContainerdAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), env.Namespace)
	if lazy := len(lazyLayers(ctx, t, client.SnapshotService("p2p"))); lazy != len(img.Layers) {
		t.Errorf("%d of %d layers mounted lazily by the built-in snapshotter", lazy, len(img.Layers))
	}
	if got := countFUSE(t, env.SnapshotterRoot); got != len(img.Layers) {
		t.Errorf("%d FUSE layer mounts under the plugin's root; want %d", got, len(img.Layers))
	}
}

// TestBuiltinPluginMisconfigured: a plugin table with a bad value leaves containerd running
// with its other snapshotters; only the p2p snapshotter is missing, and says so.
func TestBuiltinPluginMisconfigured(t *testing.T) {
	reg := startRegistry(t)
	env := containerdenv.New(t, containerdenv.Options{
		Builtin: true,
		ContainerdConfig: `  [plugins."io.containerd.snapshotter.v1.p2p".mirror]
    address = ""
  [plugins."io.containerd.snapshotter.v1.p2p".cache]
    block_size = "1KiB"
`,
	})
	if err := env.SetHostsTOML(reg.Host, fmt.Sprintf("server = %q\n", "http://"+reg.Host)); err != nil {
		t.Fatal(err)
	}
	img := containerdenv.PushTestImage(t, reg, "test/misconfigured:v1")
	if _, stderr, err := env.RunNerdctl(context.Background(), "--snapshotter=p2p", "pull", img.Ref); err == nil || !strings.Contains(stderr, "p2p") {
		t.Errorf("pull with the misconfigured snapshotter: %v: %s; want an error naming it", err, stderr)
	}
	if _, stderr, err := env.RunNerdctl(context.Background(), "--snapshotter=overlayfs", "pull", img.Ref); err != nil {
		t.Errorf("containerd's own snapshotter no longer works: %v: %s", err, stderr)
	}
}
