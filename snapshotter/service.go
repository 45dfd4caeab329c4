package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Serve serves sn with containerd's snapshots gRPC API on ln until ctx ends, then stops
// gracefully.
func Serve(ctx context.Context, sn snapshots.Snapshotter, ln net.Listener) error {
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)

	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		hs.Shutdown()
		srv.GracefulStop()
	}()
	log.G(ctx).WithField("address", ln.Addr().String()).Info("serving snapshots")
	err := srv.Serve(ln)
	<-done
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// ListenUnix listens on the unix socket at address, creating its directory. A stale socket
// left by an earlier run is replaced; a socket that another live process serves is not.
func ListenUnix(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o711); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if conn, err := net.Dial("unix", address); err == nil {
		conn.Close()
		return nil, fmt.Errorf("listen on %s: another process is serving it", address)
	}
	if err := os.Remove(address); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("remove stale socket %s: %w", address, err)
	}
	ln, err := net.Listen("unix", address)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", address, err)
	}
	if err := os.Chmod(address, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", address, err)
	}
	return ln, nil
}
