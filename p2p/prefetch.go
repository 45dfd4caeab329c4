package p2p

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/stargz"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

// WithStargzLayers tells the node that eStargz and zstd:chunked layers are mounted from
// their TOC, reading their blob at random (Blob), rather than seeded with a pass: Prefetch
// then warms blocks of the blob.
func WithStargzLayers() NodeOption { return func(nd *Node) { nd.stargz = true } }

// OpenStargz opens the eStargz or zstd:chunked layer src names, whose TOC has digest toc,
// from its TOC, reading the blob through Blob: from peers, or exactly the ranges asked from
// the registry on the blob's origin (every node, without a scheduler). Its reads last as long
// as ctx. snapshotter/fusemanager mounts such layers with it.
func (n *Node) OpenStargz(ctx context.Context, src seed.Source, toc digest.Digest) (*stargz.Layer, error) {
	r, err := n.Blob(ctx, src)
	if err != nil {
		return nil, err
	}
	l, err := stargz.Open(r, r.Size(), toc)
	if err != nil {
		return nil, fmt.Errorf("stargz layer %s in %s/%s: %w", src.Blob.Digest, src.Host, src.Repository, err)
	}
	return l, nil
}

// Selection says which blocks of a layer Prefetch warms.
type Selection struct {
	// Files are patterns of paths in the layer (path.Match syntax, no leading slash; "dir/**"
	// is everything under dir): the blocks holding those files' data are warmed.
	Files []string
	// All warms the whole layer.
	All bool
}

// Prefetch warms blocks of the layer src names into this node's cache, through the P2P
// network, so that a container reading them later finds them here (and peers can take them
// from here): the blocks holding sel's files; with neither files nor All, the blocks a start
// needs as far as the layer tells: the files before an eStargz layer's prefetch landmark (its
// TOC only when the builder marked none), or the whole layer for a layer that cannot say.
// Whatever it warms, the layer's index or TOC comes first, so a mount after it reads nothing
// more to start. progress, if set, is called as blocks arrive with the bytes warmed and the
// bytes asked for, one call at a time, the bytes warmed never decreasing.
func (n *Node) Prefetch(ctx context.Context, src seed.Source, sel Selection, progress func(done, total int64)) error {
	if progress == nil {
		progress = func(int64, int64) {}
	}
	if toc, ok := stargz.TOCDigest(src.Blob); ok && n.stargz && n.ranges != nil {
		return n.prefetchBlob(ctx, src, toc, sel, progress)
	}
	l, err := n.Layer(ctx, src)
	if err != nil {
		return err
	}
	x := l.Index
	var spans [][2]int64
	if len(sel.Files) == 0 || sel.All {
		spans = [][2]int64{{0, x.Blocks.Size}}
	} else {
		for i := range x.Entries {
			e := &x.Entries[i]
			if !matchAny(sel.Files, e.Name) {
				continue
			}
			if r, err := x.Resolve(e); err == nil && r.Type == layer.TypeRegular && r.Size > 0 {
				spans = append(spans, [2]int64{r.Offset, r.Offset + r.Size})
			}
		}
	}
	bs := x.Blocks.BlockSize
	return warm(ctx, n.window, blockPieces(spans, bs, x.Blocks.Size), progress, func(ctx context.Context, p [2]int64) error {
		buf := make([]byte, p[1]-p[0])
		_, err := l.ReadStreamAt(ctx, buf, p[0])
		return err
	})
}

// prefetchBlob warms blocks of an eStargz or zstd:chunked blob: opening it reads its footer
// and TOC, then the chunks of the files sel names, or those before the landmark.
func (n *Node) prefetchBlob(ctx context.Context, src seed.Source, toc digest.Digest, sel Selection, progress func(done, total int64)) error {
	l, err := n.OpenStargz(ctx, src, toc)
	if err != nil {
		return err
	}
	r, err := n.Blob(ctx, src) // the same blob, opened
	if err != nil {
		return err
	}
	var spans [][2]int64
	switch {
	case sel.All:
		spans = [][2]int64{{0, r.Size()}}
	case len(sel.Files) > 0:
		entries, _, err := l.Entries()
		if err != nil {
			return fmt.Errorf("prefetch %s: %w", src.Blob.Digest, err)
		}
		for _, e := range entries {
			if e.Type == layer.TypeRegular && matchAny(sel.Files, e.Name) {
				spans = append(spans, l.BlobRanges(e.Name)...)
			}
		}
	default:
		if end, ok := l.PrefetchEnd(); ok {
			spans = [][2]int64{{0, end}}
		}
	}
	return warm(ctx, n.window, blockPieces(spans, int64(n.cache.BlockSize()), r.Size()), progress, func(_ context.Context, p [2]int64) error {
		_, err := r.ReadAt(make([]byte, p[1]-p[0]), p[0])
		return err
	})
}

// matchAny reports whether name matches one of patterns: path.Match, or a "dir/**" prefix.
func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		p = strings.TrimPrefix(p, "/")
		if dir, ok := strings.CutSuffix(p, "/**"); ok && (name == dir || strings.HasPrefix(name, dir+"/")) {
			return true
		}
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// blockPieces cuts spans, [start, end) offsets in a size-byte stream, at block boundaries
// and returns the pieces of each block they touch, merged, in order: one piece per block.
func blockPieces(spans [][2]int64, blockSize, size int64) [][2]int64 {
	blocks := map[int64]bool{}
	for _, s := range spans {
		start, end := max(s[0], 0), min(s[1], size)
		for b := start / blockSize; b*blockSize < end; b++ {
			blocks[b] = true
		}
	}
	keys := make([]int64, 0, len(blocks))
	for b := range blocks {
		keys = append(keys, b)
	}
	slices.Sort(keys)
	out := make([][2]int64, 0, len(keys))
	for _, b := range keys {
		out = append(out, [2]int64{b * blockSize, min((b+1)*blockSize, size)})
	}
	return out
}

// warm reads pieces with read, window at a time, reporting progress as each completes. It
// returns the first error, after the reads under way end.
func warm(ctx context.Context, window int, pieces [][2]int64, progress func(done, total int64), read func(context.Context, [2]int64) error) error {
	var total int64
	for _, p := range pieces {
		total += p[1] - p[0]
	}
	progress(0, total)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex // serializes progress, so that done only grows
		done     int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		slots    = make(chan struct{}, max(window, 1))
	)
	for _, p := range pieces {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := read(ctx, p); err != nil {
				errOnce.Do(func() { firstErr = fmt.Errorf("warm [%d, %d): %w", p[0], p[1], err); cancel() })
				return
			}
			mu.Lock()
			done += p[1] - p[0]
			progress(done, total)
			mu.Unlock()
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
