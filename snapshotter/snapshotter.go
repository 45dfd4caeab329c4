package snapshotter

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
)

// Snapshotter is the "p2p" snapshotter. Today every snapshot is an overlayfs snapshot of
// containerd's own overlay snapshotter; lazily mounted layers wrap it (see the package doc).
type Snapshotter struct {
	snapshots.Snapshotter
}

// New opens (or creates) the snapshotter's state under root.
func New(ctx context.Context, root string) (*Snapshotter, error) {
	ov, err := overlay.NewSnapshotter(root, overlay.AsynchronousRemove)
	if err != nil {
		return nil, fmt.Errorf("open overlay snapshots under %s: %w", root, err)
	}
	return &Snapshotter{Snapshotter: ov}, nil
}
