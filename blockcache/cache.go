package blockcache

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

var (
	// ErrNotCached is returned by Lookup for a block that is neither resident nor in flight.
	ErrNotCached = errors.New("block not cached")
	// ErrInFlight is returned by Begin for a block that is resident or already in flight.
	ErrInFlight = errors.New("block already cached or in flight")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("block cache closed")
)

// Filler fetches blocks on a miss. The cache runs at most one fill per block at a time.
type Filler interface {
	// FillBlock writes the content of block key into buf, whose length is the cache's block
	// size, and returns the number of bytes written. It must verify what it writes: the
	// cache serves it as is.
	FillBlock(ctx context.Context, key layer.BlockKey, buf []byte) (int, error)
}

// FillerFunc adapts a function to Filler.
type FillerFunc func(ctx context.Context, key layer.BlockKey, buf []byte) (int, error)

// FillBlock calls f.
func (f FillerFunc) FillBlock(ctx context.Context, key layer.BlockKey, buf []byte) (int, error) {
	return f(ctx, key, buf)
}

// Stats is a snapshot of the cache's counters.
type Stats struct {
	Hits          uint64 // Get or Lookup found the block resident
	Misses        uint64 // Get or Lookup found nothing
	InflightWaits uint64 // Get or Lookup waited for a fill in flight
	Fills         uint64 // fills committed
	FillErrors    uint64 // fills that failed
	Evictions     uint64 // resident blocks dropped to make room
	Blocks        int    // resident blocks
	BytesHeld     int64  // bytes of block buffers in use: resident, in flight, or pinned
	BytesSpare    int64  // bytes of block buffers kept for reuse
}

// Cache is a bounded in-memory FIFO block cache. It is safe for concurrent use.
type Cache struct {
	blockSize int
	limit     int64

	mu        sync.Mutex
	entries   map[layer.BlockKey]*entry
	fifo      entryList     // resident entries, oldest first
	held      int64         // bytes of buffers in use
	spare     [][]byte      // buffers no longer in use, reused by the next fills
	roomWaits int           // goroutines waiting for room
	room      chan struct{} // closed and replaced when room may have been freed
	closed    bool
	stats     Stats

	fillCtx    context.Context // parent of every fill; cancelled by Close
	cancelFill context.CancelFunc
	fills      sync.WaitGroup
}

type entryState uint8

const (
	stateFilling entryState = iota
	stateReady
	stateFailed
)

type entry struct {
	key   layer.BlockKey
	state entryState
	buf   []byte
	n     int           // content length once ready
	err   error         // why the fill failed
	done  chan struct{} // closed when the fill ends

	refs       int  // pins by Block handles, and by waiters from the commit on
	waiters    int  // goroutines in wait
	resident   bool // in entries and fifo
	prev, next *entry
}

// Option configures a Cache.
type Option func(*Cache)

// WithBlockSize sets the size of every block buffer (default layer.DefaultBlockSize).
func WithBlockSize(n int) Option { return func(c *Cache) { c.blockSize = n } }

// New returns a cache that holds at most limitBytes of blocks (plus one block, see the
// package doc).
func New(limitBytes int64, opts ...Option) (*Cache, error) {
	c := &Cache{
		blockSize: layer.DefaultBlockSize,
		limit:     limitBytes,
		entries:   make(map[layer.BlockKey]*entry),
		room:      make(chan struct{}),
	}
	for _, o := range opts {
		o(c)
	}
	if c.blockSize < layer.MinBlockSize || c.blockSize > layer.MaxBlockSize {
		return nil, fmt.Errorf("block cache: block size %d outside [%d, %d]", c.blockSize, layer.MinBlockSize, layer.MaxBlockSize)
	}
	if c.limit <= 0 {
		return nil, fmt.Errorf("block cache: limit %d bytes must be positive", c.limit)
	}
	c.fillCtx, c.cancelFill = context.WithCancel(context.Background())
	return c, nil
}

// BlockSize returns the size of the cache's block buffers.
func (c *Cache) BlockSize() int { return c.blockSize }

// Stats returns the current counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Blocks, s.BytesHeld, s.BytesSpare = c.fifo.len, c.held, int64(len(c.spare)*c.blockSize)
	return s
}

// Get returns block key, pinned: from the cache, by waiting for a fill in flight, or by
// filling it with f. The caller must Release the block.
func (c *Cache) Get(ctx context.Context, key layer.BlockKey, f Filler) (*Block, error) {
	return c.get(ctx, key, f)
}

// Lookup returns block key, pinned, if it is resident, or waits for it if it is in flight;
// otherwise it returns ErrNotCached. It never starts a fill: a peer answering another peer
// uses it to serve what it has or is receiving.
func (c *Cache) Lookup(ctx context.Context, key layer.BlockKey) (*Block, error) {
	return c.get(ctx, key, nil)
}

// Filling reports whether a fill of block key is in flight.
func (c *Cache) Filling(key layer.BlockKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	return ok && e.state == stateFilling
}

func (c *Cache) get(ctx context.Context, key layer.BlockKey, f Filler) (*Block, error) {
	c.mu.Lock()
	for {
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if e, ok := c.entries[key]; ok {
			if e.state == stateReady {
				c.stats.Hits++
				e.refs++
				c.mu.Unlock()
				return &Block{c: c, e: e}, nil
			}
			c.stats.InflightWaits++
			e.waiters++
			c.mu.Unlock()
			return c.wait(ctx, e)
		}
		if f == nil {
			c.stats.Misses++
			c.mu.Unlock()
			return nil, fmt.Errorf("block %s: %w", key, ErrNotCached)
		}
		ok, err := c.makeRoomLocked(ctx)
		if err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("block %s: wait for room: %w", key, err)
		}
		if ok {
			break
		}
		// The lock was dropped while waiting for room: look again.
	}
	c.stats.Misses++
	e := c.startLocked(key)
	e.waiters = 1
	c.fills.Add(1)
	c.mu.Unlock()

	go c.runFill(valuesFrom{c.fillCtx, ctx}, e, f)
	return c.wait(ctx, e)
}

// valuesFrom is a context with the lifetime of one context and the values of another.
type valuesFrom struct {
	context.Context
	values context.Context
}

func (v valuesFrom) Value(key any) any { return v.values.Value(key) }

// runFill runs a fill started by Get.
func (c *Cache) runFill(ctx context.Context, e *entry, f Filler) {
	defer c.fills.Done()
	n, err := f.FillBlock(ctx, e.key, e.buf)
	if err == nil && (n < 0 || n > len(e.buf)) {
		err = fmt.Errorf("filler returned %d bytes for a %d-byte buffer", n, len(e.buf))
	}
	if err != nil {
		c.fail(e, fmt.Errorf("fill block %s: %w", e.key, err))
		return
	}
	c.commit(e, n)
}

// wait blocks until the fill of e ends or ctx is done. The caller registered itself in
// e.waiters under the lock; commit pins the block once for every registered waiter, so a
// block cannot be evicted between its commit and its waiters' return.
func (c *Cache) wait(ctx context.Context, e *entry) (*Block, error) {
	select {
	case <-e.done:
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e.waiters--
	switch {
	case e.state == stateFailed:
		return nil, e.err
	case e.state == stateFilling:
		return nil, fmt.Errorf("wait for block %s: %w", e.key, ctx.Err())
	case ctx.Err() != nil:
		c.unpinLocked(e)
		return nil, fmt.Errorf("wait for block %s: %w", e.key, ctx.Err())
	}
	return &Block{c: c, e: e}, nil
}

// makeRoomLocked evicts until one more buffer fits. It returns false if it had to wait, and so
// dropped the lock: the caller must look at the map again.
func (c *Cache) makeRoomLocked(ctx context.Context) (bool, error) {
	for c.held > 0 && c.held+int64(c.blockSize) > c.limit {
		if c.evictOneLocked() {
			continue
		}
		room := c.room
		c.roomWaits++
		c.mu.Unlock()
		var err error
		select {
		case <-room:
		case <-ctx.Done():
			err = ctx.Err()
		}
		c.mu.Lock()
		c.roomWaits--
		return false, err
	}
	return true, nil
}

// evictOneLocked drops the oldest unpinned resident block.
func (c *Cache) evictOneLocked() bool {
	for e := c.fifo.head; e != nil; e = e.next {
		if e.refs == 0 {
			c.dropLocked(e)
			c.stats.Evictions++
			return true
		}
	}
	return false
}

// dropLocked removes a resident entry from the map and the FIFO; its buffer is freed now, or
// by the last Release if it is pinned.
func (c *Cache) dropLocked(e *entry) {
	delete(c.entries, e.key)
	c.fifo.remove(e)
	e.resident = false
	if e.refs == 0 {
		c.freeLocked(e)
	}
}

// freeLocked releases e's buffer. It is kept for reuse while the buffers in use and the
// spare ones fit in the bound, so a busy cache allocates nothing and leaves the garbage
// collector nothing to collect.
func (c *Cache) freeLocked(e *entry) {
	c.held -= int64(c.blockSize)
	if c.held+int64(len(c.spare)+1)*int64(c.blockSize) <= max(c.limit, int64(c.blockSize)) {
		c.spare = append(c.spare, e.buf)
	}
	e.buf = nil
	c.signalRoomLocked()
}

func (c *Cache) signalRoomLocked() {
	if c.roomWaits > 0 {
		close(c.room)
		c.room = make(chan struct{})
	}
}

// unpinLocked drops one pin; the last pin of a removed block frees it.
func (c *Cache) unpinLocked(e *entry) {
	e.refs--
	if e.refs > 0 {
		return
	}
	if !e.resident {
		c.freeLocked(e) // removed while pinned
		return
	}
	c.signalRoomLocked() // evictable again
}

func (c *Cache) startLocked(key layer.BlockKey) *entry {
	var buf []byte
	if n := len(c.spare); n > 0 {
		buf, c.spare = c.spare[n-1], c.spare[:n-1]
	} else {
		buf = make([]byte, c.blockSize)
	}
	e := &entry{key: key, buf: buf, done: make(chan struct{})}
	c.entries[key] = e
	c.held += int64(c.blockSize)
	return e
}

func (c *Cache) commit(e *entry, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		c.failLocked(e, ErrClosed)
		return
	}
	e.state, e.n = stateReady, n
	e.refs += e.waiters
	e.resident = true
	c.fifo.pushBack(e)
	c.stats.Fills++
	close(e.done)
}

func (c *Cache) fail(e *entry, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLocked(e, err)
}

func (c *Cache) failLocked(e *entry, err error) {
	e.state, e.err = stateFailed, err
	delete(c.entries, e.key)
	c.stats.FillErrors++
	c.freeLocked(e)
	close(e.done)
}

// Remove drops a resident block, for example one found corrupt by a later check. A pinned
// block stays readable by its holders until they release it. Blocks in flight are left alone.
// It reports whether a block was removed.
func (c *Cache) Remove(key layer.BlockKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || e.state != stateReady {
		return false
	}
	c.dropLocked(e)
	return true
}

// Close cancels the fills in flight, waits for them to end, and drops every block. Blocks
// still pinned stay readable until released.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.signalRoomLocked()
	c.mu.Unlock()
	c.cancelFill()
	c.fills.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.fifo.head != nil {
		c.dropLocked(c.fifo.head)
	}
	c.spare = nil
	return nil
}
