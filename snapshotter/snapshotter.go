package snapshotter

import (
	"context"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

// Labels the snapshotter reads and writes.
const (
	// LabelTargetRef names the committed snapshot an unpacker is preparing (a chain ID).
	LabelTargetRef = "containerd.io/snapshot.ref"
	// LabelRemote marks a snapshot whose layer is mounted lazily; its value is "p2p".
	LabelRemote = "containerd.io/snapshot/remote"
	// LabelDiffID records the diffID of a lazily mounted layer.
	LabelDiffID = "containerd.io/snapshot/p2p.diffid"

	upperdirLabel = "containerd.io/snapshot/overlay.upperdir"
)

// Snapshotter is the "p2p" snapshotter: containerd's overlayfs snapshotter, plus layers
// mounted lazily from FUSE when their source is known (see the package doc).
type Snapshotter struct {
	snapshots.Snapshotter // overlay, with the upperdir label

	layers   LayerMounter // nil: lazy layers disabled
	resolver LayerResolver
	timeout  time.Duration
	outcome  func(string) // told how each layer containerd prepares is served, or nil
	// toldUnknown is set once a layer of unknown source was logged as a warning, with the
	// settings that would have told the daemon; later ones are logged at debug level.
	toldUnknown atomic.Bool
}

// unknownSourceHelp names the settings that tell the daemon where a layer comes from.
const unknownSourceHelp = "no containerd.io/snapshot/cri.* labels and no record from the registry mirror: " +
	"for Kubernetes set disable_snapshot_annotations = false under [plugins.\"io.containerd.cri.v1.images\"] " +
	"(or, pulling through the transfer service, enable_remote_snapshot_annotations = \"true\" under [proxy_plugins.p2p.exports]); " +
	"for nerdctl and ctr pull through the mirror (hosts.toml naming mirror.address); " +
	"this warning is given once, later layers of unknown source are logged at debug level"

// LayerMounter mounts lazily pulled layers on directories. fusemanager.Mounter (in this
// process) and fusemanager.Client (in a FUSE manager process that outlives the daemon)
// satisfy it. Each method is idempotent.
type LayerMounter interface {
	// Mount mounts the layer src names at dir, fetching it first if this node does not
	// hold it. lowerDirs are the directories of the snapshots below, parent first: a
	// directory the layer leaves implicit takes its attributes from them.
	Mount(ctx context.Context, dir string, src seed.Source, lowerDirs []string) error
	// Restore makes sure the stored layer diffID is mounted at dir, as after a restart.
	Restore(ctx context.Context, dir string, diffID digest.Digest, lowerDirs []string) error
	// Unmount unmounts the layer at dir.
	Unmount(ctx context.Context, dir string) error
}

// LayerResolver tells where the layer of a snapshot being prepared comes from, from the
// target chain ID and the labels of the Prepare call. It returns an error wrapping
// errdefs.ErrNotFound when it does not know.
type LayerResolver interface {
	ResolveLayer(ctx context.Context, chainID string, labels map[string]string) (seed.Source, error)
}

// Option configures a Snapshotter.
type Option func(*Snapshotter)

// WithLazyLayers enables lazily mounted layers: layers the resolver knows are mounted by
// layers instead of being unpacked, waiting at most timeout for a layer's first pass.
func WithLazyLayers(layers LayerMounter, resolver LayerResolver, timeout time.Duration) Option {
	return func(s *Snapshotter) {
		s.layers, s.resolver, s.timeout = layers, resolver, timeout
	}
}

// What happened to a layer containerd prepared, as WithLayerOutcomes reports it and package
// snapshotter/metrics counts it.
const (
	OutcomeLazy     = "lazy"     // mounted lazily: containerd fetched nothing
	OutcomeFallback = "fallback" // the lazy path failed: containerd unpacked it
	OutcomeUnknown  = "unknown"  // the daemon did not know where it came from: containerd unpacked it
)

// WithLayerOutcomes calls observe for each layer containerd prepares with what happened to
// it (OutcomeLazy, OutcomeFallback or OutcomeUnknown).
func WithLayerOutcomes(observe func(outcome string)) Option {
	return func(s *Snapshotter) { s.outcome = observe }
}

// New opens (or creates) the snapshotter's state under root. Lazily mounted layers committed
// before are mounted again.
func New(ctx context.Context, root string, opts ...Option) (*Snapshotter, error) {
	ov, err := overlay.NewSnapshotter(root, overlay.AsynchronousRemove, overlay.WithUpperdirLabel)
	if err != nil {
		return nil, fmt.Errorf("open overlay snapshots under %s: %w", root, err)
	}
	s := &Snapshotter{Snapshotter: ov}
	for _, o := range opts {
		o(s)
	}
	if err := s.restoreMounts(ctx); err != nil {
		ov.Close()
		return nil, err
	}
	return s, nil
}

// Prepare creates an active snapshot, or, when the unpacker prepares a layer this node can
// mount lazily, mounts it, commits it under its chain ID and returns ErrAlreadyExists: then
// containerd never downloads that layer's blob. Any failure of the lazy path falls back to a
// normal snapshot.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return nil, err
		}
	}
	if target, ok := base.Labels[LabelTargetRef]; ok && s.layers != nil {
		err := s.prepareLazy(ctx, key, parent, target, base.Labels, opts)
		if err == nil {
			s.observe(OutcomeLazy)
			return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err() // the caller went away: nobody wants the fallback
		}
		entry := log.G(ctx).WithFields(log.Fields{"key": key, "target": target})
		if errdefs.IsNotFound(err) {
			s.observe(OutcomeUnknown)
			if s.toldUnknown.CompareAndSwap(false, true) {
				entry.WithError(err).WithField("help", unknownSourceHelp).Warn("layer source unknown; unpacking normally")
			} else {
				entry.WithError(err).Debug("layer source unknown; unpacking normally")
			}
		} else {
			s.observe(OutcomeFallback)
			entry.WithError(err).Warn("lazy mount failed; unpacking normally")
		}
	}
	return s.Snapshotter.Prepare(ctx, key, parent, opts...)
}

func (s *Snapshotter) observe(outcome string) {
	if s.outcome != nil {
		s.outcome(outcome)
	}
}

// Remove removes a snapshot, unmounting its lazily mounted layer first.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	info, err := s.Snapshotter.Stat(ctx, key)
	if err != nil {
		return err
	}
	if info.Labels[LabelRemote] == "p2p" && s.layers != nil {
		if err := s.layers.Unmount(ctx, info.Labels[upperdirLabel]); err != nil {
			return fmt.Errorf("remove %s: %w", key, err)
		}
	}
	return s.Snapshotter.Remove(ctx, key)
}

// Close closes the metadata store. Lazily mounted layers stay mounted: they belong to the
// LayerMounter.
func (s *Snapshotter) Close() error {
	return s.Snapshotter.Close()
}

// Stat returns the info of a snapshot. The overlay snapshotter's upperdir label, which this
// package uses internally, is not shown.
func (s *Snapshotter) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	info, err := s.Snapshotter.Stat(ctx, key)
	return withoutUpperdir(info), err
}

// Update updates a snapshot's info, as Stat shows it.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	info, err := s.Snapshotter.Update(ctx, info, fieldpaths...)
	return withoutUpperdir(info), err
}

// Walk calls fn for each snapshot matching filters, with its info as Stat shows it.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.Snapshotter.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		return fn(ctx, withoutUpperdir(info))
	}, filters...)
}

func withoutUpperdir(info snapshots.Info) snapshots.Info {
	if _, ok := info.Labels[upperdirLabel]; ok {
		info.Labels = maps.Clone(info.Labels)
		delete(info.Labels, upperdirLabel)
	}
	return info
}
