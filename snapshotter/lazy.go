package snapshotter

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
)

// prepareLazy mounts the layer of target lazily and commits it. It returns nil when target
// exists afterwards, committed by this call or by a concurrent one.
func (s *Snapshotter) prepareLazy(ctx context.Context, key, parent, target string, labels map[string]string, opts []snapshots.Opt) error {
	if info, err := s.Snapshotter.Stat(ctx, target); err == nil {
		if info.Labels[LabelRemote] == "p2p" {
			s.ensureMounted(ctx, info, labels)
		}
		return nil
	}
	src, err := s.resolver.ResolveLayer(ctx, target, labels)
	if err != nil {
		return err
	}
	if err := ingest.CheckMediaType(src.Blob.MediaType); err != nil {
		// Before asking anyone for the layer: containerd may have a stream processor for it.
		return fmt.Errorf("layer %s: %w", src.Blob.Digest, err)
	}
	if _, err := s.Snapshotter.Prepare(ctx, key, parent, opts...); err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			if err := s.Snapshotter.Remove(ctx, key); err != nil {
				log.G(ctx).WithError(err).WithField("key", key).Warn("remove abandoned snapshot")
			}
		}
	}()
	dir, err := s.upperdir(ctx, key)
	if err != nil {
		return err
	}
	lowers, err := s.lowerDirs(ctx, parent)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.layers.Mount(lctx, dir, src, lowers); err != nil {
		return fmt.Errorf("layer %s: %w", src.DiffID, err)
	}
	commitLabels := maps.Clone(labels)
	commitLabels[LabelRemote] = "p2p"
	commitLabels[LabelDiffID] = src.DiffID.String()
	if err := s.Snapshotter.Commit(ctx, target, key, snapshots.WithLabels(commitLabels)); err != nil {
		if err := s.layers.Unmount(ctx, dir); err != nil {
			log.G(ctx).WithError(err).WithField("dir", dir).Warn("unmount abandoned layer")
		}
		if errdefs.IsAlreadyExists(err) {
			return nil // a concurrent Prepare committed it first
		}
		return fmt.Errorf("commit %s: %w", target, err)
	}
	committed = true
	log.G(ctx).WithFields(log.Fields{"target": target, "diffID": src.DiffID}).Info("mounted layer lazily")
	return nil
}

// ensureMounted makes sure the layer of a committed lazy snapshot is mounted before it is
// handed out again: from the layers stored on this node, or, if that fails (the mount at start
// failed, the stored layer is gone), by fetching the layer again.
func (s *Snapshotter) ensureMounted(ctx context.Context, info snapshots.Info, labels map[string]string) {
	dir, diffID := info.Labels[upperdirLabel], digest.Digest(info.Labels[LabelDiffID])
	lowers, err := s.lowerDirs(ctx, info.Parent)
	if err == nil {
		err = s.layers.Restore(ctx, dir, diffID, lowers)
	}
	if err == nil {
		return
	}
	entry := log.G(ctx).WithFields(log.Fields{"snapshot": info.Name, "diffID": diffID})
	src, rerr := s.resolver.ResolveLayer(ctx, info.Name, labels)
	if rerr == nil && src.DiffID == diffID {
		lctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		if err = s.layers.Mount(lctx, dir, src, lowers); err == nil {
			entry.Info("lazily mounted layer fetched and mounted again")
			return
		}
	}
	entry.WithError(err).Error("lazily mounted layer is not mounted and cannot be fetched again; containers on it will miss its files")
}

// lowerDirs returns the directories of parent and its ancestors, parent first.
func (s *Snapshotter) lowerDirs(ctx context.Context, parent string) ([]string, error) {
	var dirs []string
	for p := parent; p != ""; {
		info, err := s.Snapshotter.Stat(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("parent %s: %w", p, err)
		}
		dirs = append(dirs, info.Labels[upperdirLabel])
		p = info.Parent
	}
	return dirs, nil
}

func (s *Snapshotter) upperdir(ctx context.Context, key string) (string, error) {
	info, err := s.Snapshotter.Stat(ctx, key)
	if err != nil {
		return "", err
	}
	dir := info.Labels[upperdirLabel]
	if dir == "" {
		return "", fmt.Errorf("snapshot %s: the overlay snapshotter reported no directory", key)
	}
	return dir, nil
}

// restoreMounts mounts again, after a restart, every lazily mounted layer committed before.
func (s *Snapshotter) restoreMounts(ctx context.Context) error {
	var remote []snapshots.Info
	parents := map[string]string{}
	if err := s.Snapshotter.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		parents[info.Name] = info.Parent
		if info.Labels[LabelRemote] == "p2p" && info.Kind == snapshots.KindCommitted {
			remote = append(remote, info)
		}
		return nil
	}); err != nil && !errdefs.IsNotFound(err) { // a new store has no snapshots bucket yet
		return fmt.Errorf("list snapshots: %w", err)
	}
	// Parents first: a layer's implicit directories take their attributes from the layers
	// below, which must be mounted by then.
	depth := func(name string) int {
		n := 0
		for p := parents[name]; p != ""; p = parents[p] {
			n++
		}
		return n
	}
	slices.SortFunc(remote, func(a, b snapshots.Info) int { return depth(a.Name) - depth(b.Name) })
	if len(remote) > 0 && s.layers == nil {
		return fmt.Errorf("%d snapshots are lazily mounted layers, but lazy layers are disabled", len(remote))
	}
	for _, info := range remote {
		diffID := digest.Digest(info.Labels[LabelDiffID])
		lowers, err := s.lowerDirs(ctx, info.Parent)
		if err == nil {
			err = s.layers.Restore(ctx, info.Labels[upperdirLabel], diffID, lowers)
		}
		if err != nil {
			// The snapshot stays; containers on it fail to read, and removing the image
			// removes it.
			log.G(ctx).WithError(err).WithFields(log.Fields{"snapshot": info.Name, "diffID": diffID}).Error("cannot mount lazily mounted layer again")
		}
	}
	return nil
}
