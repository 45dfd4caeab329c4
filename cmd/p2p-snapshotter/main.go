// Command p2p-snapshotter is the node daemon: a containerd proxy snapshotter named "p2p".
// containerd reaches it through
//
//	[proxy_plugins.p2p]
//	  type = "snapshot"
//	  address = "/run/p2p-snapshotter/p2p-snapshotter.sock"
//
// Layers whose source the Prepare labels name (containerd's CRI labels) are mounted lazily from
// FUSE; every other snapshot is an ordinary overlayfs snapshot.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/registry"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/metrics"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/mirror"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := newCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "p2p-snapshotter:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		configPath string
		flags      = snapshotter.DefaultConfig()
	)
	cmd := &cobra.Command{
		Use:           "p2p-snapshotter",
		Short:         "containerd proxy snapshotter with lazily pulled, peer-to-peer layers",
		Args:          cobra.NoArgs,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := snapshotter.DefaultConfig()
			if configPath != "" {
				var err error
				if cfg, err = snapshotter.ReadConfig(configPath); err != nil { // validated below, with the flags
					return err
				}
			}
			// Flags given on the command line override the file.
			set := cmd.Flags().Changed
			if set("root") {
				cfg.Root = flags.Root
			}
			if set("address") {
				cfg.Address = flags.Address
			}
			if set("log-level") {
				cfg.LogLevel = flags.LogLevel
			}
			if set("insecure-registry") {
				cfg.Registry.Insecure = append(cfg.Registry.Insecure, flags.Registry.Insecure...)
			}
			if set("mirror-address") {
				cfg.Mirror.Address = flags.Mirror.Address
			}
			if set("hosts-dir") {
				cfg.Registry.HostsDir = flags.Registry.HostsDir
			}
			if set("metrics-address") {
				cfg.Metrics.Address = flags.Metrics.Address
			}
			if set("debug-address") {
				cfg.Debug.Address = flags.Debug.Address
			}
			if set("advertise-address") {
				cfg.P2P.AdvertiseAddress = flags.P2P.AdvertiseAddress
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "TOML configuration file")
	f.StringVar(&flags.Root, "root", snapshotter.DefaultRoot, "directory for snapshots and metadata")
	f.StringVar(&flags.Address, "address", snapshotter.DefaultAddress, "unix socket containerd connects to")
	f.StringVar(&flags.LogLevel, "log-level", snapshotter.DefaultLogLevel, "log level: trace, debug, info, warn, error")
	f.StringVar(&flags.Mirror.Address, "mirror-address", snapshotter.DefaultMirrorAddress, "host:port of the registry mirror containerd's hosts.toml points at; empty disables it")
	f.StringArrayVar(&flags.Registry.Insecure, "insecure-registry", nil, "registry (host or host:port) reached over plain HTTP; repeatable")
	f.StringVar(&flags.Registry.HostsDir, "hosts-dir", "", "containerd certs.d directory of hosts.toml files")
	f.StringVar(&flags.Metrics.Address, "metrics-address", "", "host:port serving Prometheus metrics at /metrics; empty: none")
	f.StringVar(&flags.P2P.AdvertiseAddress, "advertise-address", "", "host:port other peers dial for this node's blocks (p2p.advertise_address), e.g. the node's IP in a DaemonSet")
	f.StringVar(&flags.Debug.Address, "debug-address", "", "host:port serving Go's pprof profiles at /debug/pprof/; empty: none (bind it to loopback)")
	cmd.AddCommand(newFuseManagerCommand(), newConfigCommand())
	return cmd
}

func run(ctx context.Context, cfg snapshotter.Config) error {
	if err := log.SetLevel(cfg.LogLevel); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return fmt.Errorf("create root: %w", err)
	}
	var opts []snapshotter.Option
	if cfg.Metrics.Address != "" {
		m := metrics.New()
		opts = append(opts, snapshotter.WithLayerOutcomes(m.LayerPrepared))
		var dataPlane prometheus.Gatherer
		if cfg.Lazy.Enable { // the data plane serves its metrics on its control socket
			control := fusemanager.NewClient(filepath.Join(cfg.Root, "fuse-manager.sock"))
			dataPlane = metrics.TextGatherer(func() (io.ReadCloser, error) { return control.Metrics(ctx) })
		}
		stop, err := serveHTTP(ctx, "metrics", cfg.Metrics.Address, metricsMux(m.Handler(dataPlane)))
		if err != nil {
			return err
		}
		defer stop()
	}
	if cfg.Debug.Address != "" {
		stop, err := serveHTTP(ctx, "debug", cfg.Debug.Address, debugMux())
		if err != nil {
			return err
		}
		defer stop()
	}
	if cfg.Lazy.Enable {
		client := newRegistryClient(cfg)
		mounter, closeMounter, err := layerMounter(ctx, cfg)
		if err != nil {
			return err
		}
		defer closeMounter()
		resolvers := snapshotter.Resolvers{snapshotter.NewLabelResolver(client)}
		if cfg.Mirror.Address != "" {
			chains, err := mirror.OpenStore(filepath.Join(cfg.Root, "chains.db"))
			if err != nil {
				return err
			}
			defer chains.Close()
			stopMirror, err := serveMirror(ctx, cfg.Mirror.Address, mirror.New(client, chains, mirror.WithImageSeen(prefetchLayers(mounter)), mirror.WithBlobs(mounter)))
			if err != nil {
				return err
			}
			defer stopMirror()
			resolvers = append(resolvers, chains)
		}
		opts = append(opts, snapshotter.WithLazyLayers(mounter, resolvers, time.Duration(cfg.Lazy.Timeout)))
	}
	sn, err := snapshotter.New(ctx, filepath.Join(cfg.Root, "overlay"), opts...)
	if err != nil {
		return err
	}
	defer sn.Close()
	ln, err := snapshotter.ListenUnix(cfg.Address)
	if err != nil {
		return err
	}
	log.G(ctx).WithFields(log.Fields{"root": cfg.Root, "version": version}).Info("p2p-snapshotter starting")
	return snapshotter.Serve(ctx, sn, ln)
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

// serveHTTP serves h on address until the returned stop is called.
func serveHTTP(ctx context.Context, what, address string, h http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.G(ctx).WithField("address", ln.Addr().String()).Infof("serving %s", what)
	return func() { srv.Close() }, nil
}

func metricsMux(h http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	return mux
}

// debugMux serves Go's pprof profiles at /debug/pprof/, as containerd's [debug] address does.
func debugMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serveMirror serves the registry mirror on address until the returned stop is called.
func serveMirror(ctx context.Context, address string, m *mirror.Mirror) (stop func(), err error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("registry mirror: %w", err)
	}
	srv := &http.Server{Handler: m, ReadHeaderTimeout: 30 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go srv.Serve(ln)
	log.G(ctx).WithField("address", address).Info("serving registry mirror")
	return func() { srv.Close() }, nil
}
