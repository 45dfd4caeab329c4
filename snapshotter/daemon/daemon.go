package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"
	"github.com/pelletier/go-toml/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pimage/p2p-snapshotter/p2p/blobs"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/registry"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/metrics"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/mirror"
)

// Files of the FUSE manager under the daemon's root.
const (
	FuseManagerSocket = "fuse-manager.sock"
	FuseManagerConfig = "fuse-manager.toml"
	fuseManagerLog    = "fuse-manager.log"
)

// scrapeTimeout bounds gathering the data plane's metrics from its FUSE manager.
const scrapeTimeout = 10 * time.Second

// cancelOnClose releases a context once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// Daemon is a running node daemon. Close it when done.
type Daemon struct {
	// Snapshotter is what containerd is given: served on a socket, or returned to it.
	Snapshotter *snapshotter.Snapshotter

	closers []func()
}

// Option configures New.
type Option func(*options)

type options struct {
	fuseManager []string
}

// WithFuseManager says how to start the FUSE manager process when lazy.fuse_manager is set:
// argv, to which "--config FILE" is added (the p2p-snapshotter binary's "fuse-manager"
// subcommand). Without it a daemon with lazy.fuse_manager set is refused: only the proxy
// daemon can start one.
func WithFuseManager(argv ...string) Option {
	return func(o *options) { o.fuseManager = argv }
}

// New starts the daemon cfg describes; cfg is validated already. What it started stops when
// Close is called (a FUSE manager process excepted: it outlives the daemon).
func New(ctx context.Context, cfg snapshotter.Config, opts ...Option) (_ *Daemon, retErr error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	d := &Daemon{}
	defer func() {
		if retErr != nil {
			d.Close()
		}
	}()
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return nil, fmt.Errorf("create root: %w", err)
	}
	var sopts []snapshotter.Option
	if cfg.Metrics.Address != "" {
		m := metrics.New()
		sopts = append(sopts, snapshotter.WithLayerOutcomes(m.LayerPrepared))
		var dataPlane prometheus.Gatherer
		if cfg.Lazy.Enable { // the data plane serves its metrics on its control socket
			control := fusemanager.NewClient(filepath.Join(cfg.Root, FuseManagerSocket))
			dataPlane = metrics.TextGatherer(func() (io.ReadCloser, error) {
				// A wedged FUSE manager must not leave a scrape waiting for good.
				sctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
				rc, err := control.Metrics(sctx)
				if err != nil {
					cancel()
					return nil, err
				}
				return cancelOnClose{rc, cancel}, nil
			})
		}
		stop, err := serveHTTP(ctx, "metrics", cfg.Metrics.Address, metricsMux(m.Handler(dataPlane)))
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, stop)
	}
	if cfg.Debug.Address != "" {
		stop, err := serveHTTP(ctx, "debug", cfg.Debug.Address, debugMux())
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, stop)
	}
	if cfg.Lazy.Enable {
		client := newRegistryClient(cfg)
		mounter, closeMounter, err := layerMounter(ctx, cfg, o.fuseManager)
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, closeMounter)
		resolvers := snapshotter.Resolvers{snapshotter.NewLabelResolver(client)}
		if cfg.Mirror.Address != "" {
			chains, err := mirror.OpenStore(filepath.Join(cfg.Root, "chains.db"))
			if err != nil {
				return nil, err
			}
			d.closers = append(d.closers, func() { chains.Close() })
			stopMirror, err := serveMirror(ctx, cfg.Mirror.Address, mirror.New(client, chains, mirror.WithImageSeen(prefetchLayers(mounter)), mirror.WithBlobs(mounter)))
			if err != nil {
				return nil, err
			}
			d.closers = append(d.closers, stopMirror)
			resolvers = append(resolvers, chains)
		}
		sopts = append(sopts, snapshotter.WithLazyLayers(mounter, resolvers, time.Duration(cfg.Lazy.Timeout)))
	}
	sn, err := snapshotter.New(ctx, filepath.Join(cfg.Root, "overlay"), sopts...)
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() { sn.Close() })
	d.Snapshotter = sn
	return d, nil
}

// Close stops what New started, last first.
func (d *Daemon) Close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
}

// dataPlane is what holds this node's blocks: it mounts lazily pulled layers and copies
// blobs to the registry mirror through the block cache.
type dataPlane interface {
	snapshotter.LayerMounter
	mirror.Blobs
}

// inProcess is a data plane in this process.
type inProcess struct {
	*fusemanager.Mounter
	*blobs.Server
}

// layerMounter returns the data plane: the FUSE manager process (started with fuseManager if
// none answers), or, with lazy.fuse_manager = false, one in this process, which then serves
// the manager's socket itself. The returned close releases what this process owns; it never
// stops a manager process.
func layerMounter(ctx context.Context, cfg snapshotter.Config, fuseManager []string) (dataPlane, func(), error) {
	if !cfg.Lazy.FuseManager {
		d, err := NewDataPlane(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		// The data plane's control socket (warm, blobs) is served by whichever process holds
		// the data plane: here, this one.
		ln, err := snapshotter.ListenUnix(filepath.Join(cfg.Root, FuseManagerSocket))
		if err != nil {
			d.Close()
			return nil, nil, err
		}
		sctx, stop := context.WithCancel(ctx)
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := fusemanager.Serve(sctx, d.mounter, ln, d.ServeOptions()...); err != nil {
				log.G(ctx).WithError(err).Error("data plane control socket stopped")
			}
		}()
		return inProcess{d.mounter, d.blobs}, func() {
			stop()
			<-served
			d.Close()
		}, nil
	}
	if len(fuseManager) == 0 {
		return nil, nil, fmt.Errorf("lazy.fuse_manager = true, but this process cannot start a FUSE manager: set lazy.fuse_manager = false")
	}
	cfgPath := filepath.Join(cfg.Root, FuseManagerConfig)
	b, err := toml.Marshal(cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return nil, nil, fmt.Errorf("write FUSE manager config: %w", err)
	}
	client := fusemanager.NewClient(filepath.Join(cfg.Root, FuseManagerSocket))
	argv := append(append([]string(nil), fuseManager...), "--config", cfgPath)
	if err := client.Start(ctx, argv, filepath.Join(cfg.Root, fuseManagerLog), 30*time.Second); err != nil {
		return nil, nil, err
	}
	return client, func() {}, nil
}

// prefetchLayers starts fetching an image's layers as soon as the mirror has seen its config,
// before containerd prepares them one after another, if the mounter can.
func prefetchLayers(m snapshotter.LayerMounter) func(context.Context, []seed.Source) {
	p, ok := m.(interface {
		Prefetch(ctx context.Context, src seed.Source) error
	})
	if !ok {
		return nil
	}
	return func(ctx context.Context, layers []seed.Source) {
		ctx = context.WithoutCancel(ctx)
		go func() {
			for _, l := range layers {
				if err := p.Prefetch(ctx, l); err != nil {
					log.G(ctx).WithError(err).WithField("diffID", l.DiffID).Warn("cannot start prefetching a layer")
				}
			}
		}()
	}
}

func newRegistryClient(cfg snapshotter.Config) *registry.Client {
	opts := []registry.Option{registry.WithInsecureRegistries(cfg.Registry.Insecure...)}
	if cfg.Registry.HostsDir != "" {
		opts = append(opts, registry.WithHostsDir(cfg.Registry.HostsDir))
	}
	return registry.New(opts...)
}
