package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/ingest"
)

// seed runs the streaming pass of src and stores the layer.
func (s *Store) seed(ctx context.Context, src Source) (_ *Layer, retErr error) {
	task := layer.TaskIDFromDigest(src.DiffID)
	logger := log.G(ctx).WithFields(log.Fields{"task": task, "blob": src.Blob.Digest, "host": src.Host, "repository": src.Repository})
	start := time.Now()

	tmp, err := os.MkdirTemp(s.dir, ".seeding-")
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", task, err)
	}
	defer os.RemoveAll(tmp) // after the rename below, only an empty name is left to remove
	stream, err := os.Create(filepath.Join(tmp, "stream"))
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", task, err)
	}
	defer stream.Close()

	blob, err := s.blobs.OpenBlob(ctx, src.Host, src.Repository, src.Blob)
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", task, err)
	}
	defer blob.Close()

	sink := &passSink{cache: s.cache, task: task, stream: stream, observer: s.observer}
	s.observer.StartPass(task)
	defer func() {
		if retErr != nil {
			sink.dropBlocks() // blocks of a stream that did not verify must not stay readable
			s.observer.Abandon(task)
		}
	}()
	x, err := ingest.Build(ctx, blob, ingest.Options{
		BlockSize: int64(s.cache.BlockSize()),
		DiffID:    src.DiffID,
		Sink:      sink,
	})
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", task, err)
	}
	// The pass stops at the end of the tar stream; read the blob to its end so that its
	// reader checks the compressed digest.
	if _, err := io.Copy(io.Discard, blob); err != nil {
		return nil, fmt.Errorf("seed %s: blob %s: %w", task, src.Blob.Digest, err)
	}
	if err := s.commit(tmp, stream, x); err != nil {
		return nil, fmt.Errorf("seed %s: %w", task, err)
	}
	l, err := s.Open(task)
	if err != nil {
		return nil, err
	}
	d := time.Since(start)
	logger.WithFields(log.Fields{
		"bytes": x.Blocks.Size, "blocks": x.Blocks.Count(), "entries": len(x.Entries),
		"duration": d, "MBps": int(float64(x.Blocks.Size) / 1e6 / d.Seconds()),
	}).Info("seeded layer")
	return l, nil
}

// commit makes a verified pass durable: the stream and then the index, whose presence marks
// the layer complete, and finally the directory under its task name.
func (s *Store) commit(tmp string, stream *os.File, x *layer.Index) error {
	if err := stream.Sync(); err != nil {
		return err
	}
	enc, err := x.Marshal()
	if err != nil {
		return err
	}
	if err := writeFileSync(filepath.Join(tmp, "index"), enc); err != nil {
		return err
	}
	final := s.layerDir(x.Task())
	if err := os.RemoveAll(final); err != nil { // an unusable earlier copy
		return err
	}
	return os.Rename(tmp, final)
}

func writeFileSync(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// passSink writes each block of the pass to the stream file and into the cache.
type passSink struct {
	cache    *blockcache.Cache
	task     layer.TaskID
	stream   *os.File
	observer Observer
	blocks   int
}

func (p *passSink) WriteBlock(ctx context.Context, i int, data []byte, d layer.BlockDigest) error {
	if _, err := p.stream.Write(data); err != nil {
		return fmt.Errorf("write stream file: %w", err)
	}
	p.blocks = i + 1
	w, err := p.cache.Begin(ctx, layer.BlockKey{Task: p.task, Index: i})
	switch {
	case errors.Is(err, blockcache.ErrInFlight):
		// resident already, or being filled from the stream file
	case err != nil:
		return err
	default:
		if err := w.Commit(copy(w.Buffer(), data)); err != nil {
			return err
		}
	}
	return p.observer.Produced(p.task, i, d)
}

func (p *passSink) dropBlocks() {
	for i := range p.blocks {
		p.cache.Remove(layer.BlockKey{Task: p.task, Index: i})
	}
}

var _ ingest.BlockSink = (*passSink)(nil)
