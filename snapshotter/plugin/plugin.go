// Package plugin registers the snapshotter in containerd's plugin registry, as the built-in
// snapshotter plugin "p2p" (type io.containerd.snapshotter.v1), for containerd, or a
// distribution that embeds it, to compile in: import it for its side effect beside
// containerd's builtins (cmd/containerd-p2p does). containerd then reads the plugin's
// configuration from its own config.toml,
//
//	[plugins."io.containerd.snapshotter.v1.p2p"]
//	  [plugins."io.containerd.snapshotter.v1.p2p".mirror]
//	    address = "127.0.0.1:65001"
//	  [plugins."io.containerd.snapshotter.v1.p2p".p2p]
//	    address = "0.0.0.0:65002"
//	    schedulers = ["scheduler.example.com:65003"]
//
// with the same keys, defaults and meaning as the proxy daemon's file (docs/config.md), and
// the plugin is built by the same constructor (package daemon). Differences, since the
// plugin runs inside containerd: root defaults to the plugin's directory under containerd's
// root; address (the proxy socket) and log_level are not used; and FUSE is served in
// containerd's process (lazy.fuse_manager = false, the default here), so restarting
// containerd ends the lazily mounted layers of running containers.
package plugin

import (
	"fmt"

	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/log"
	"github.com/containerd/platforms"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	"github.com/p2pimage/p2p-snapshotter/snapshotter"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/daemon"
)

// ID is the plugin's name: snapshotter = "p2p" in containerd's and nerdctl's settings.
const ID = "p2p"

// DefaultConfig is the plugin's configuration before containerd's config.toml: the
// daemon's defaults, with root left to containerd and FUSE served in its process.
func DefaultConfig() *snapshotter.Config {
	cfg := snapshotter.DefaultConfig()
	cfg.Root = ""
	cfg.Lazy.FuseManager = false
	return &cfg
}

func init() {
	registry.Register(&plugin.Registration{
		Type:   plugins.SnapshotPlugin,
		ID:     ID,
		Config: DefaultConfig(),
		InitFn: initPlugin,
	})
}

// initPlugin builds the snapshotter. A configuration or start-up error skips the plugin
// (plugin.ErrSkipPlugin) rather than fail it: containerd's metadata plugin fails with any
// snapshotter that failed, which would take every other snapshotter down with this one. The
// error itself is logged here, at error level, since containerd logs skipped plugins at info.
func initPlugin(ic *plugin.InitContext) (interface{}, error) {
	sn, err := build(ic)
	if err != nil {
		log.G(ic.Context).WithError(err).Error("p2p snapshotter not loaded")
		return nil, fmt.Errorf("p2p snapshotter not loaded (its error is logged): %w", plugin.ErrSkipPlugin)
	}
	return sn, nil
}

func build(ic *plugin.InitContext) (*builtin, error) {
	cfg, ok := ic.Config.(*snapshotter.Config)
	if !ok {
		return nil, fmt.Errorf("configuration of type %T", ic.Config)
	}
	if cfg.Root == "" {
		cfg.Root = ic.Properties[plugins.PropertyRootDir]
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf(`[plugins."io.containerd.snapshotter.v1.%s"]: %w`, ID, err)
	}
	ic.Meta.Platforms = append(ic.Meta.Platforms, platforms.DefaultSpec())
	ic.Meta.Exports[plugins.SnapshotterRootDir] = cfg.Root
	d, err := daemon.New(ic.Context, *cfg)
	if err != nil {
		return nil, fmt.Errorf(`[plugins."io.containerd.snapshotter.v1.%s"]: %w`, ID, err)
	}
	log.G(ic.Context).WithFields(log.Fields{"root": cfg.Root, "mirror": cfg.Mirror.Address, "p2p": cfg.P2P.Address}).Info("p2p snapshotter built in")
	return &builtin{Snapshotter: d.Snapshotter, daemon: d}, nil
}

// builtin is the snapshotter containerd gets; closing it, at containerd's shutdown, stops
// the whole daemon.
type builtin struct {
	*snapshotter.Snapshotter
	daemon *daemon.Daemon
}

func (b *builtin) Close() error {
	b.daemon.Close()
	return nil
}

var _ interface{ Close() error } = (*builtin)(nil)
