// Command stargzd serves stargz-snapshotter's snapshotter, built from its library
// (github.com/containerd/stargz-snapshotter/service), as a containerd proxy snapshotter on a
// unix socket. It is the peer that integration/lazybench compares our daemon with: Debian
// ships no stargz daemon and the module proxy does not serve stargz-snapshotter's cmd module.
//
// It is a module of its own so that the project's go.mod does not take stargz-snapshotter's
// dependencies. Build it from this directory:
//
//	go build -o /tmp/stargzd .
//	stargzd -root DIR -address SOCKET [-config stargz.toml] [-log-level info]
//
// The config file holds the keys of stargz-snapshotter's config.toml (service.Config), e.g.
//
//	no_background_fetch = true
//	[[resolver.host."10.201.0.2:5000".mirrors]]
//	  host = "10.201.0.2:5000"
//	  insecure = true
//
// containerd reaches it as
//
//	[proxy_plugins.stargz]
//	  type = "snapshot"
//	  address = "SOCKET"
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"github.com/containerd/stargz-snapshotter/service"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
)

func main() {
	root := flag.String("root", "/var/lib/stargzd", "directory for snapshots, the FUSE filesystems' caches and metadata")
	address := flag.String("address", "/run/stargzd/stargzd.sock", "unix socket containerd connects to")
	configPath := flag.String("config", "", "TOML file with stargz-snapshotter's service configuration")
	logLevel := flag.String("log-level", "info", "log level: trace, debug, info, warn, error")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *root, *address, *configPath, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "stargzd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, root, address, configPath, logLevel string) error {
	if err := log.SetLevel(logLevel); err != nil {
		return err
	}
	var cfg service.Config
	if configPath != "" {
		b, err := os.ReadFile(configPath)
		if err != nil {
			return err
		}
		dec := toml.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return fmt.Errorf("%s: %w", configPath, err)
		}
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	sn, err := service.NewStargzSnapshotterService(ctx, root, &cfg)
	if err != nil {
		return fmt.Errorf("start stargz snapshotter: %w", err)
	}
	// Close unmounts every FUSE layer, committed ones included.
	defer sn.Close()

	if err := os.MkdirAll(filepath.Dir(address), 0o711); err != nil {
		return err
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ln, err := net.Listen("unix", address)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	log.G(ctx).WithFields(log.Fields{
		"address":             address,
		"root":                root,
		"no_background_fetch": cfg.NoBackgroundFetch,
		"noprefetch":          cfg.NoPrefetch,
		"resolver_hosts":      len(cfg.ResolverConfig.Host),
	}).Info("serving stargz snapshots")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
