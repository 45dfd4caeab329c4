package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
)

// BlobOpener opens a blob of a repository; the reader must verify the blob's digest by EOF.
// registry.Client satisfies it.
type BlobOpener interface {
	OpenBlob(ctx context.Context, host, repository string, desc ocispec.Descriptor) (io.ReadCloser, error)
}

// Source says where a layer comes from.
type Source struct {
	Host       string
	Repository string
	// Blob is the layer's descriptor in the manifest (compressed digest, size, media type).
	Blob ocispec.Descriptor
	// DiffID is the digest of the uncompressed stream, from the image config.
	DiffID digest.Digest
	// RandomAccess names the blob itself, its bytes as stored, rather than the layer's
	// uncompressed stream: an eStargz or zstd:chunked layer, read at random with Range
	// requests and checked chunk by chunk against its TOC. No pass reads it, and the Store
	// does not seed it (p2p.Node.Blob reads it).
	RandomAccess bool
}

// Task returns the task src names: the blob's (named by the blob digest) when RandomAccess,
// otherwise the layer's stream (named by its diffID).
func (src Source) Task() layer.TaskID {
	if src.RandomAccess {
		return layer.TaskIDFromDigest(src.Blob.Digest)
	}
	return layer.TaskIDFromDigest(src.DiffID)
}

// Observer learns of each pass as it runs, so that peers can fetch a layer's blocks while
// this node is still seeding it. tasks.Registry satisfies it.
type Observer interface {
	// StartPass: the pass of task begins.
	StartPass(task layer.TaskID)
	// Produced: block i, with digest d, is in the cache; blocks come in order.
	Produced(task layer.TaskID, i int, d layer.BlockDigest) error
	// SetIndex and Complete: the pass verified (or a layer seeded before was opened); refill
	// reads evicted blocks from the stream file.
	SetIndex(task layer.TaskID, encoded []byte)
	Complete(task layer.TaskID, table layer.BlockTable, refill blockcache.Filler)
	// Abandon: the pass failed; its blocks were dropped.
	Abandon(task layer.TaskID)
}

// Option configures a Store.
type Option func(*Store)

// WithObserver tells o of every pass and of every layer opened.
func WithObserver(o Observer) Option { return func(s *Store) { s.observer = o } }

// Store keeps the layers this node has seeded. It is safe for concurrent use; concurrent
// requests for one layer cause one pass.
type Store struct {
	dir      string
	cache    *blockcache.Cache
	blobs    BlobOpener
	observer Observer
	group    singleflight.Group

	mu     sync.Mutex
	layers map[layer.TaskID]*Layer

	closing context.Context // cancelled by Close: every pass ends
	stop    context.CancelFunc
}

// maxPassTime bounds one streaming pass.
const maxPassTime = time.Hour

// New returns a store keeping its layers under dir, serving reads through cache and
// fetching blobs with blobs.
func New(dir string, cache *blockcache.Cache, blobs BlobOpener, opts ...Option) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("seed store: %w", err)
	}
	s := &Store{dir: dir, cache: cache, blobs: blobs, layers: make(map[layer.TaskID]*Layer), observer: nopObserver{}}
	for _, o := range opts {
		o(s)
	}
	s.closing, s.stop = context.WithCancel(context.Background())
	return s, nil
}

// Layer returns the layer src names: open already, from disk, or seeded now from its
// registry. A first call for a layer this node has never seen waits for the whole pass.
func (s *Store) Layer(ctx context.Context, src Source) (*Layer, error) {
	if src.RandomAccess {
		return nil, fmt.Errorf("layer %s: a blob read at random is not seeded with a pass", src.Blob.Digest)
	}
	if err := src.DiffID.Validate(); err != nil {
		return nil, fmt.Errorf("layer %s: diffID: %w", src.Blob.Digest, err)
	}
	if err := ingest.CheckMediaType(src.Blob.MediaType); err != nil {
		return nil, fmt.Errorf("layer %s: %w", src.Blob.Digest, err)
	}
	task := layer.TaskIDFromDigest(src.DiffID)
	// The pass runs for whoever wants the layer, not for the first caller alone: it keeps
	// the first caller's values but not its cancellation, ends with Close or after
	// maxPassTime, and each caller waits for it as long as its own context lets it.
	ch := s.group.DoChan(string(task), func() (any, error) {
		if l, err := s.Open(task); err == nil {
			return l, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			log.G(ctx).WithError(err).WithField("task", task).Warn("stored layer unusable; seeding it again")
		}
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), maxPassTime)
		defer cancel()
		defer context.AfterFunc(s.closing, cancel)()
		return s.seed(pctx, src)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Layer), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("layer %s: %w", task, ctx.Err())
	}
}

// Open returns a layer seeded before, from memory or disk. It returns an error wrapping
// os.ErrNotExist when the store does not hold the layer.
func (s *Store) Open(task layer.TaskID) (*Layer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.layers[task]; ok {
		return l, nil
	}
	l, enc, err := s.load(task)
	if err != nil {
		return nil, err
	}
	s.layers[task] = l
	s.observer.SetIndex(task, enc)
	s.observer.Complete(task, l.Index.Blocks, l)
	return l, nil
}

type nopObserver struct{}

func (nopObserver) StartPass(layer.TaskID)                                     {}
func (nopObserver) Produced(layer.TaskID, int, layer.BlockDigest) error        { return nil }
func (nopObserver) SetIndex(layer.TaskID, []byte)                              {}
func (nopObserver) Complete(layer.TaskID, layer.BlockTable, blockcache.Filler) {}
func (nopObserver) Abandon(layer.TaskID)                                       {}

func (s *Store) layerDir(task layer.TaskID) string {
	return filepath.Join(s.dir, task.Digest().Encoded())
}

func (s *Store) load(task layer.TaskID) (*Layer, []byte, error) {
	dir := s.layerDir(task)
	enc, err := os.ReadFile(filepath.Join(dir, "index"))
	if err != nil {
		return nil, nil, fmt.Errorf("open layer %s: %w", task, err)
	}
	x, err := layer.Unmarshal(enc)
	if err != nil {
		return nil, nil, fmt.Errorf("open layer %s: %w", task, err)
	}
	if x.Task() != task {
		return nil, nil, fmt.Errorf("open layer %s: index is of %s", task, x.Task())
	}
	if x.Blocks.BlockSize != int64(s.cache.BlockSize()) {
		return nil, nil, fmt.Errorf("open layer %s: stored with %d-byte blocks, the cache uses %d", task, x.Blocks.BlockSize, s.cache.BlockSize())
	}
	f, err := os.Open(filepath.Join(dir, "stream"))
	if err != nil {
		return nil, nil, fmt.Errorf("open layer %s: %w", task, err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != x.Blocks.Size {
		f.Close()
		return nil, nil, fmt.Errorf("open layer %s: stream file is not the %d bytes the index says", task, x.Blocks.Size)
	}
	return &Layer{Index: x, cache: s.cache, file: f}, enc, nil
}

// Close closes the store's files. Layers returned before must not be used after.
func (s *Store) Close() error {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for task, l := range s.layers {
		if l.file != nil {
			errs = append(errs, l.file.Close())
		}
		delete(s.layers, task)
	}
	return errors.Join(errs...)
}
