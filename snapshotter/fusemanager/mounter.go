package fusemanager

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/stargz"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/layerfs"
)

// LayerStore holds the layers of this node. seed.Store satisfies it.
type LayerStore interface {
	// Layer returns the layer src names, seeding it if this node does not hold it.
	Layer(ctx context.Context, src seed.Source) (*seed.Layer, error)
	// Open returns a layer this node holds, or an error wrapping os.ErrNotExist.
	Open(task layer.TaskID) (*seed.Layer, error)
}

// StargzOpener opens eStargz and zstd:chunked layers from their TOC (p2p.Node satisfies it).
// A layer opened reads with ctx for as long as it is mounted.
type StargzOpener interface {
	OpenStargz(ctx context.Context, src seed.Source, toc digest.Digest) (*stargz.Layer, error)
}

// Mounter mounts layers from a LayerStore over FUSE. It is safe for concurrent use.
type Mounter struct {
	store   LayerStore
	stargz  StargzOpener // nil: every layer through the store
	observe func(op string, took time.Duration)

	mu     sync.Mutex
	mounts map[string]mounted // by directory

	prefetchCtx  context.Context // parent of every prefetch; cancelled by Close
	stopPrefetch context.CancelFunc
	prefetches   sync.WaitGroup
	slots        chan struct{} // one per prefetch running
}

// Prefetches run at most this many at a time (containerd downloads three layers at once),
// each for at most prefetchTimeout.
const (
	maxPrefetches   = 3
	prefetchTimeout = 30 * time.Minute
)

type mounted struct {
	fs     *layerfs.Mounted
	diffID digest.Digest
}

// MounterOption configures a Mounter.
type MounterOption func(*Mounter)

// WithStargz mounts eStargz and zstd:chunked layers from their TOC with o, reading only what
// is read, instead of seeding them with a pass over the whole blob.
func WithStargz(o StargzOpener) MounterOption { return func(m *Mounter) { m.stargz = o } }

// WithOpObserver has every mount report how long each FUSE lookup, read and listing took
// (layerfs.WithOpObserver).
func WithOpObserver(observe func(op string, took time.Duration)) MounterOption {
	return func(m *Mounter) { m.observe = observe }
}

// NewMounter returns a Mounter serving layers of store.
func NewMounter(store LayerStore, opts ...MounterOption) *Mounter {
	m := &Mounter{store: store, mounts: make(map[string]mounted), slots: make(chan struct{}, maxPrefetches)}
	m.prefetchCtx, m.stopPrefetch = context.WithCancel(context.Background())
	for _, o := range opts {
		o(m)
	}
	return m
}

// Prefetch starts fetching the layer src names in the background, so that a Mount of it soon
// after finds it held or joins the fetch under way. It returns at once; ctx only carries
// values (a logger). A failed prefetch is logged, and the Mount fetches the layer itself.
func (m *Mounter) Prefetch(ctx context.Context, src seed.Source) error {
	if _, ok := stargz.TOCDigest(src.Blob); ok && m.stargz != nil {
		return nil // mounted from its TOC: nothing to fetch ahead of the reads
	}
	m.background(ctx, src, func(ctx context.Context) error {
		_, err := m.store.Layer(ctx, src)
		return err
	})
	return nil
}

// Mount mounts the layer src names at dir, seeding it first if this node does not hold it.
// lowerDirs are the directories of the layers below, upper-most first (layerfs.WithLowerDirs).
// Mounting the same layer at the same directory again does nothing.
func (m *Mounter) Mount(ctx context.Context, dir string, src seed.Source, lowerDirs []string) error {
	if m.has(dir, src.DiffID) {
		return nil
	}
	if toc, ok := stargz.TOCDigest(src.Blob); ok && m.stargz != nil {
		err := m.mountStargz(ctx, dir, src, toc, lowerDirs)
		if err == nil {
			return nil
		}
		// The blob is gzip or zstd all the same: one pass over it makes a layer too.
		log.G(ctx).WithError(err).WithField("diffID", src.DiffID).Warn("cannot mount the layer from its TOC; seeding it whole")
	}
	l, err := m.store.Layer(ctx, src)
	if err != nil {
		return err
	}
	return m.mount(ctx, dir, l.Index, l, lowerDirs)
}

// mountStargz mounts the eStargz or zstd:chunked layer src at dir from its TOC, whose digest
// is toc. Its reads last as long as the Mounter.
func (m *Mounter) mountStargz(ctx context.Context, dir string, src seed.Source, toc digest.Digest, lowerDirs []string) error {
	l, err := m.stargz.OpenStargz(m.prefetchCtx, src, toc)
	if err != nil {
		return err
	}
	entries, size, err := l.Entries()
	if err != nil {
		return err
	}
	// The block table gives the size of the files' stream; its blocks have no digests, as
	// layerfs reads through l, which checks every chunk.
	x := &layer.Index{DiffID: src.DiffID, Blocks: layer.BlockTable{BlockSize: layer.DefaultBlockSize, Size: size}, Entries: entries}
	if err := m.mount(ctx, dir, x, l, lowerDirs); err != nil {
		return err
	}
	if _, ok := l.PrefetchEnd(); ok {
		m.background(ctx, src, l.Prefetch) // the files the image's builder marked as read at start
	}
	return nil
}

// background runs fetch in the background, as Prefetch does: at most maxPrefetches at a time,
// each for at most prefetchTimeout, all stopped by Close. A failure is logged.
func (m *Mounter) background(ctx context.Context, src seed.Source, fetch func(context.Context) error) {
	m.prefetches.Add(1)
	go func() {
		defer m.prefetches.Done()
		select {
		case m.slots <- struct{}{}:
		case <-m.prefetchCtx.Done():
			return
		}
		defer func() { <-m.slots }()
		pctx, cancel := context.WithTimeout(m.prefetchCtx, prefetchTimeout)
		defer cancel()
		if err := fetch(pctx); err != nil && m.prefetchCtx.Err() == nil {
			log.G(ctx).WithError(err).WithField("diffID", src.DiffID).Warn("prefetch of a layer failed")
		}
	}()
}

// Restore mounts at dir a layer this node holds already, as after a restart. If that layer
// is mounted there and served, it does nothing.
func (m *Mounter) Restore(ctx context.Context, dir string, diffID digest.Digest, lowerDirs []string) error {
	if m.has(dir, diffID) {
		return nil
	}
	l, err := m.store.Open(layer.TaskIDFromDigest(diffID))
	if err != nil {
		return err
	}
	return m.mount(ctx, dir, l.Index, l, lowerDirs)
}

func (m *Mounter) has(dir string, diffID digest.Digest) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.mounts[dir]
	return ok && cur.diffID == diffID
}

// mount mounts the layer of index x at dir, its files' data read from r.
func (m *Mounter) mount(ctx context.Context, dir string, x *layer.Index, r layerfs.StreamReader, lowerDirs []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.mounts[dir]; ok {
		if cur.diffID == x.DiffID {
			return nil
		}
		return fmt.Errorf("mount layer %s at %s: layer %s is mounted there", x.DiffID, dir, cur.diffID)
	}
	detachStale(dir)
	fs, err := layerfs.Mount(ctx, dir, x, r, layerfs.WithFSName("p2p:"+x.DiffID.Encoded()[:12]), layerfs.WithLowerDirs(lowerDirs),
		layerfs.WithOpObserver(m.observe))
	if err != nil {
		return fmt.Errorf("mount layer %s at %s: %w", x.DiffID, dir, err)
	}
	m.mounts[dir] = mounted{fs: fs, diffID: x.DiffID}
	go m.forgetWhenGone(dir, fs)
	log.G(ctx).WithFields(log.Fields{"dir": dir, "diffID": x.DiffID}).Debug("layer mounted")
	return nil
}

// forgetWhenGone drops the record of a mount once it is gone, whoever unmounted it, so that a
// later Mount or Restore mounts the layer again.
func (m *Mounter) forgetWhenGone(dir string, fs *layerfs.Mounted) {
	fs.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.mounts[dir]; ok && cur.fs == fs {
		delete(m.mounts, dir)
	}
}

// Unmount unmounts the layer at dir. If something still uses it, it is detached and goes when
// its last user does. Unmounting a directory with no layer does nothing.
func (m *Mounter) Unmount(_ context.Context, dir string) error {
	m.mu.Lock()
	cur, ok := m.mounts[dir]
	delete(m.mounts, dir)
	m.mu.Unlock()
	if !ok {
		detachStale(dir)
		return nil
	}
	if err := cur.fs.Unmount(); err != nil {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return nil
}

// Close stops the prefetches and detaches every layer this Mounter serves.
func (m *Mounter) Close() error {
	m.stopPrefetch()
	m.prefetches.Wait()
	m.mu.Lock()
	dirs := make([]string, 0, len(m.mounts))
	for dir := range m.mounts {
		dirs = append(dirs, dir)
	}
	m.mu.Unlock()
	var errs []error
	for _, dir := range dirs {
		errs = append(errs, m.Unmount(context.Background(), dir))
	}
	return errors.Join(errs...)
}

// detachStale lazily unmounts whatever is mounted at dir, such as a FUSE mount whose server
// died; it does nothing if dir is not a mount point.
func detachStale(dir string) {
	for unix.Unmount(dir, unix.MNT_DETACH) == nil {
	}
}
