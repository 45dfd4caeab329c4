package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/layerfs"
)

// prepareLazy mounts the layer of target lazily and commits it. It returns nil when target
// exists afterwards, committed by this call or by a concurrent one.
func (s *Snapshotter) prepareLazy(ctx context.Context, key, parent, target string, labels map[string]string, opts []snapshots.Opt) (retErr error) {
	if _, err := s.Snapshotter.Stat(ctx, target); err == nil {
		return nil
	}
	src, err := s.resolver.ResolveLayer(ctx, target, labels)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	l, err := s.layers.Layer(lctx, src)
	if err != nil {
		return fmt.Errorf("layer %s: %w", src.DiffID, err)
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
	if err := s.mount(ctx, dir, l); err != nil {
		return err
	}
	commitLabels := maps.Clone(labels)
	commitLabels[LabelRemote] = "p2p"
	commitLabels[LabelDiffID] = src.DiffID.String()
	if err := s.Snapshotter.Commit(ctx, target, key, snapshots.WithLabels(commitLabels)); err != nil {
		s.unmount(dir)
		if errdefs.IsAlreadyExists(err) {
			return nil // a concurrent Prepare committed it first
		}
		return fmt.Errorf("commit %s: %w", target, err)
	}
	committed = true
	log.G(ctx).WithFields(log.Fields{"target": target, "diffID": src.DiffID, "entries": len(l.Index.Entries)}).Info("mounted layer lazily")
	return nil
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

// mount mounts l at dir, replacing a mount a previous run of the daemon may have left there.
func (s *Snapshotter) mount(ctx context.Context, dir string, l *seed.Layer) error {
	detachStale(dir)
	m, err := layerfs.Mount(ctx, dir, l.Index, l, layerfs.WithFSName("p2p:"+l.Index.DiffID.Encoded()[:12]))
	if err != nil {
		return fmt.Errorf("mount layer %s at %s: %w", l.Index.DiffID, dir, err)
	}
	s.mu.Lock()
	s.mounts[dir] = m
	s.mu.Unlock()
	return nil
}

// unmount unmounts the layer mounted at dir; if something still uses it, it is detached and
// goes when its last user does.
func (s *Snapshotter) unmount(dir string) error {
	s.mu.Lock()
	m, ok := s.mounts[dir]
	delete(s.mounts, dir)
	s.mu.Unlock()
	if !ok {
		detachStale(dir)
		return nil
	}
	if err := m.Unmount(); err != nil {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return nil
}

// detachStale lazily unmounts whatever is mounted at dir (a FUSE mount whose server died);
// it does nothing if dir is not a mount point.
func detachStale(dir string) {
	for unix.Unmount(dir, unix.MNT_DETACH) == nil {
	}
}

// restoreMounts mounts again, after a restart, every lazily mounted layer committed before.
func (s *Snapshotter) restoreMounts(ctx context.Context) error {
	var remote []snapshots.Info
	if err := s.Snapshotter.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Labels[LabelRemote] == "p2p" && info.Kind == snapshots.KindCommitted {
			remote = append(remote, info)
		}
		return nil
	}); err != nil && !errdefs.IsNotFound(err) { // a new store has no snapshots bucket yet
		return fmt.Errorf("list snapshots: %w", err)
	}
	if len(remote) > 0 && s.layers == nil {
		return fmt.Errorf("%d snapshots are lazily mounted layers, but lazy layers are disabled", len(remote))
	}
	for _, info := range remote {
		diffID := digest.Digest(info.Labels[LabelDiffID])
		l, err := s.layers.Open(layer.TaskIDFromDigest(diffID))
		if err == nil {
			err = s.mount(ctx, info.Labels[upperdirLabel], l)
		}
		if err != nil {
			// The snapshot stays; containers on it fail to read, and removing the image
			// removes it.
			log.G(ctx).WithError(err).WithFields(log.Fields{"snapshot": info.Name, "diffID": diffID}).Error("cannot mount lazily mounted layer again")
		}
	}
	return nil
}
