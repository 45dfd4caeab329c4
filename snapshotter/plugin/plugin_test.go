package plugin

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"github.com/pelletier/go-toml/v2"
)

// TestRegistered: the plugin is in containerd's registry as the snapshotter "p2p", and the
// documented section of containerd's config.toml decodes into its configuration (containerd
// decodes a plugin's section with go-toml into the Config the registration holds).
func TestRegistered(t *testing.T) {
	var reg *plugin.Registration
	for _, r := range registry.Graph(func(*plugin.Registration) bool { return false }) {
		if r.Type == plugins.SnapshotPlugin && r.ID == ID {
			reg = &r
		}
	}
	if reg == nil {
		t.Fatalf("no %s.%s in containerd's plugin registry", plugins.SnapshotPlugin, ID)
	}
	if got := reg.URI(); got != "io.containerd.snapshotter.v1.p2p" {
		t.Errorf("plugin URI %q; want io.containerd.snapshotter.v1.p2p", got)
	}
	cfg := DefaultConfig()
	section := `
[mirror]
  address = "127.0.0.1:65101"
[cache]
  size = "64MiB"
[p2p]
  address = "0.0.0.0:65102"
  schedulers = ["scheduler.example.com:65003"]
`
	if err := toml.Unmarshal([]byte(section), cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Mirror.Address != "127.0.0.1:65101" || cfg.Cache.Size != 64<<20 || cfg.P2P.Schedulers[0] != "scheduler.example.com:65003" || cfg.Lazy.FuseManager {
		t.Errorf("decoded %+v", cfg)
	}
}

// TestInit builds the snapshotter as containerd does, under the plugin's root, and uses it.
func TestInit(t *testing.T) {
	root := t.TempDir()
	cfg := DefaultConfig()
	cfg.Mirror.Address = "" // nothing to listen on in a unit test
	cfg.Lazy.Enable = false // FUSE needs root; the e2e test TestBuiltinPlugin runs it all
	ic := plugin.NewContext(context.Background(), nil, map[string]string{plugins.PropertyRootDir: root})
	ic.Config = cfg
	inst, err := initPlugin(ic)
	if err != nil {
		t.Fatal(err)
	}
	sn, ok := inst.(snapshots.Snapshotter)
	if !ok {
		t.Fatalf("the plugin is a %T, not a snapshots.Snapshotter", inst)
	}
	t.Cleanup(func() { sn.Close() })
	if got := ic.Meta.Exports[plugins.SnapshotterRootDir]; got != root {
		t.Errorf("root exported as %q; want the plugin's directory %q", got, root)
	}
	ctx := context.Background()
	if _, err := sn.Prepare(ctx, "layer-1", ""); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, "committed-1", "layer-1"); err != nil {
		t.Fatal(err)
	}
	mounts, err := sn.View(ctx, "view-1", "committed-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) == 0 || !strings.HasPrefix(mounts[0].Source, filepath.Join(root, "overlay")) {
		t.Errorf("mounts %+v; want them under %s", mounts, filepath.Join(root, "overlay"))
	}

	// A proxy-only setting is refused, naming the table it belongs in.
	bad := DefaultConfig()
	bad.Lazy.FuseManager = true
	ic = plugin.NewContext(context.Background(), nil, map[string]string{plugins.PropertyRootDir: t.TempDir()})
	ic.Config = bad
	_, err = build(ic)
	if err == nil || !strings.Contains(err.Error(), "lazy.fuse_manager") {
		t.Errorf("lazy.fuse_manager = true: got %v; want an error naming it", err)
	}
	// containerd then skips the plugin, and keeps its other snapshotters.
	if _, err := initPlugin(ic); !errors.Is(err, plugin.ErrSkipPlugin) {
		t.Errorf("a misconfigured plugin: got %v; want it skipped (plugin.ErrSkipPlugin)", err)
	}
}
