package seed

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
)

// Layer is a layer this node can read: its index, and its stream read through the block
// cache, filled on a miss from the stream file of a layer the node seeded, or by another
// filler (the P2P fetcher) for a layer read from peers.
type Layer struct {
	Index *layer.Index
	cache *blockcache.Cache
	file  *os.File          // the stream file of a seeded layer, or nil
	fill  blockcache.Filler // fills misses of a layer without a stream file
}

// NewLayer returns a layer with index x whose blocks, on a miss, come from fill, which must
// verify them against x's block table.
func NewLayer(x *layer.Index, cache *blockcache.Cache, fill blockcache.Filler) *Layer {
	return &Layer{Index: x, cache: cache, fill: fill}
}

func (l *Layer) filler() blockcache.Filler {
	if l.file != nil {
		return l
	}
	return l.fill
}

// ReadStreamAt reads the layer's uncompressed stream at off through the block cache. It
// reads less than len(p) only at the end of the stream, with io.EOF.
func (l *Layer) ReadStreamAt(ctx context.Context, p []byte, off int64) (int, error) {
	size := l.Index.Blocks.Size
	if off < 0 || off > size {
		return 0, fmt.Errorf("read %s at %d: outside the %d-byte stream", l.Index.Task(), off, size)
	}
	want := p[:min(int64(len(p)), size-off)]
	n, err := l.cache.ReadStreamAt(ctx, l.Index.Task(), l.filler(), want, off)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// FillBlock reads a block from the stream file (or asks the layer's filler) on a cache miss and verifies it against the
// block table before the cache may serve it.
func (l *Layer) FillBlock(ctx context.Context, key layer.BlockKey, buf []byte) (int, error) {
	if key.Task != l.Index.Task() || key.Index < 0 || key.Index >= l.Index.Blocks.Count() {
		return 0, fmt.Errorf("block %s is not a block of layer %s", key, l.Index.Task())
	}
	if l.file == nil {
		return l.fill.FillBlock(ctx, key, buf)
	}
	off, n := l.Index.Blocks.Range(key.Index)
	if _, err := l.file.ReadAt(buf[:n], off); err != nil {
		return 0, fmt.Errorf("read block %d from the stream file: %w", key.Index, err)
	}
	if err := l.Index.Blocks.Verify(key.Index, buf[:n]); err != nil {
		return 0, fmt.Errorf("stream file of %s: %w", l.Index.Task(), err)
	}
	return int(n), nil
}

var _ blockcache.Filler = (*Layer)(nil)
