package stream

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
)

// DefaultWindow is the number of blocks fetched ahead of the one being passed on.
const DefaultWindow = 8

// Task names the stream to copy.
type Task struct {
	ID layer.TaskID
	// Size is the length of the stream in bytes.
	Size int64
	// Digest, if set, is the digest of the whole stream; Copy checks it before it passes on
	// the last block.
	Digest digest.Digest
}

// Option configures Copy.
type Option func(*options)

type options struct {
	window     int
	onVerified func(layer.BlockTable)
}

// WithWindow sets how many blocks are fetched ahead of the one being passed on (default
// DefaultWindow; 0 fetches nothing ahead).
func WithWindow(n int) Option { return func(o *options) { o.window = max(n, 0) } }

// WithVerified calls fn with the stream's block table once the whole stream matched
// Task.Digest.
func WithVerified(fn func(layer.BlockTable)) Option { return func(o *options) { o.onVerified = fn } }

// Copy writes the stream of task to dst, block by block in order, getting each block from
// cache (filled by fill on a miss) while the blocks of the window after it are fetched. It
// returns the number of bytes written. The error wraps layer.ErrDigestMismatch when the
// stream does not match task.Digest; the last block was then not written.
func Copy(ctx context.Context, dst io.Writer, cache *blockcache.Cache, task Task, fill blockcache.Filler, opts ...Option) (int64, error) {
	o := options{window: DefaultWindow}
	for _, opt := range opts {
		opt(&o)
	}
	if task.Size < 0 {
		return 0, fmt.Errorf("stream %s: negative size %d", task.ID, task.Size)
	}
	bs := int64(cache.BlockSize())
	table := layer.BlockTable{BlockSize: bs, Size: task.Size}
	count := table.Count()
	var hash digest.Digester
	if task.Digest != "" {
		if err := task.Digest.Validate(); err != nil {
			return 0, fmt.Errorf("stream %s: %w", task.ID, err)
		}
		hash = task.Digest.Algorithm().Digester()
		if o.onVerified != nil {
			table.Digests = make([]layer.BlockDigest, count)
		}
	}

	ahead := newPrefetcher(ctx, cache, task.ID, fill, o.window, count)
	defer ahead.close()

	var written int64
	for i := range count {
		ahead.advance(i + 1)
		key := layer.BlockKey{Task: task.ID, Index: i}
		b, err := cache.Get(ctx, key, fill)
		if err != nil {
			return written, fmt.Errorf("stream %s: block %d: %w", task.ID, i, err)
		}
		data := b.Bytes()
		if _, want := table.Range(i); int64(len(data)) != want {
			b.Release()
			ahead.close()
			cache.Remove(key)
			return written, fmt.Errorf("stream %s: block %d has %d bytes, want %d: %w", task.ID, i, len(data), want, layer.ErrDigestMismatch)
		}
		if hash != nil {
			hash.Hash().Write(data)
			if table.Digests != nil {
				table.Digests[i] = layer.DigestBlock(data)
			}
			if i == count-1 && hash.Digest() != task.Digest {
				b.Release()
				ahead.close() // its fetches may still pin blocks, which Remove would leave
				dropTask(cache, task.ID, count)
				return written, fmt.Errorf("stream %s: got digest %s, want %s: %w", task.ID, hash.Digest(), task.Digest, layer.ErrDigestMismatch)
			}
		}
		n, err := dst.Write(data)
		b.Release()
		written += int64(n)
		if err != nil {
			return written, fmt.Errorf("stream %s: write block %d: %w", task.ID, i, err)
		}
	}
	if count == 0 && hash != nil && hash.Digest() != task.Digest {
		return 0, fmt.Errorf("stream %s: empty stream has digest %s, want %s: %w", task.ID, hash.Digest(), task.Digest, layer.ErrDigestMismatch)
	}
	if hash != nil && o.onVerified != nil {
		o.onVerified(table)
	}
	return written, nil
}

// dropTask removes every block of a stream that failed verification from the cache.
func dropTask(cache *blockcache.Cache, task layer.TaskID, count int) {
	for i := range count {
		cache.Remove(layer.BlockKey{Task: task, Index: i})
	}
}

// prefetcher fetches the blocks ahead of the one Copy is passing on, at most window at a
// time, and leaves them in the cache unpinned. Its goroutines end when it is closed.
type prefetcher struct {
	ctx    context.Context
	cancel context.CancelFunc
	cache  *blockcache.Cache
	task   layer.TaskID
	fill   blockcache.Filler
	window int
	count  int

	next  int           // next block to fetch ahead
	slots chan struct{} // one per fetch in flight
	wg    sync.WaitGroup
}

func newPrefetcher(ctx context.Context, cache *blockcache.Cache, task layer.TaskID, fill blockcache.Filler, window, count int) *prefetcher {
	ctx, cancel := context.WithCancel(ctx)
	return &prefetcher{ctx: ctx, cancel: cancel, cache: cache, task: task, fill: fill, window: window, count: count, slots: make(chan struct{}, max(window, 1))}
}

// advance starts fetches for blocks up to from+window-1, as far as free slots allow. Blocks
// before from are left to the consumer.
func (p *prefetcher) advance(from int) {
	if p.window == 0 {
		return
	}
	p.next = max(p.next, from)
	for p.next < min(from+p.window, p.count) {
		select {
		case p.slots <- struct{}{}:
		default:
			return // the window's fetches are all in flight; try again at the next block
		}
		key := layer.BlockKey{Task: p.task, Index: p.next}
		p.next++
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.slots }()
			// A failed fetch ahead is not reported: the consumer's own Get of the block
			// starts a new fill and reports its error.
			if b, err := p.cache.Get(p.ctx, key, p.fill); err == nil {
				b.Release()
			}
		}()
	}
}

func (p *prefetcher) close() {
	p.cancel()
	p.wg.Wait()
}
