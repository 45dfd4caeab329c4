package containerdenv

import (
	"context"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// ContainerdSnapshotter connects to containerd's snapshots service for the named snapshotter
// ("overlayfs", "p2p", …): what containerd shows of it, in a namespace. Calls must carry the
// namespace: use NamespaceContext. The connection is closed in cleanup.
//
// containerd's garbage collection removes snapshots that nothing references, views
// included: label one containerd.io/gc.root (snapshots.WithLabels) to keep it until removed.
func (e *Env) ContainerdSnapshotter(t testing.TB, name string) snapshots.Snapshotter {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+e.ContainerdAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("containerdenv: connect to containerd: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), name)
}

// NamespaceContext returns ctx in the environment's containerd namespace, for calls to
// containerd's services.
func (e *Env) NamespaceContext(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, e.Namespace)
}
