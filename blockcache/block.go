package blockcache

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

// Block is a pinned block. Its bytes stay valid and unchanged until Release.
type Block struct {
	c    *Cache
	e    *entry
	once sync.Once
}

// Key returns the block's key.
func (b *Block) Key() layer.BlockKey { return b.e.key }

// Bytes returns the block's content. The slice must not be modified nor used after Release.
func (b *Block) Bytes() []byte { return b.e.buf[:b.e.n] }

// Release unpins the block. Calling it again does nothing.
func (b *Block) Release() {
	b.once.Do(func() {
		b.c.mu.Lock()
		defer b.c.mu.Unlock()
		b.c.unpinLocked(b.e)
	})
}

// ReadAt copies the bytes of block key from offset off into p, getting the block as Get does.
// It returns the number of bytes copied, which is less than len(p) only at the block's end.
func (c *Cache) ReadAt(ctx context.Context, key layer.BlockKey, f Filler, p []byte, off int) (int, error) {
	b, err := c.Get(ctx, key, f)
	if err != nil {
		return 0, err
	}
	defer b.Release()
	data := b.Bytes()
	if off < 0 || off > len(data) {
		return 0, fmt.Errorf("read block %s at %d: outside its %d bytes", key, off, len(data))
	}
	return copy(p, data[off:]), nil
}

// Writer fills one block from outside the cache: a producer that receives blocks in a stream,
// such as a seed ingesting a layer, makes them visible to waiters one by one. Exactly one of
// Commit or Abort must be called.
type Writer struct {
	c    *Cache
	e    *entry
	once sync.Once
}

// Begin reserves block key for the caller to fill. Readers that ask for the block from now on
// wait for Commit or Abort. It returns ErrInFlight if the block is resident or in flight, and
// waits for room like a fill does.
func (c *Cache) Begin(ctx context.Context, key layer.BlockKey) (*Writer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closed {
			return nil, ErrClosed
		}
		if _, ok := c.entries[key]; ok {
			return nil, fmt.Errorf("begin block %s: %w", key, ErrInFlight)
		}
		ok, err := c.makeRoomLocked(ctx)
		if err != nil {
			return nil, fmt.Errorf("begin block %s: wait for room: %w", key, err)
		}
		if ok {
			return &Writer{c: c, e: c.startLocked(key)}, nil
		}
	}
}

// Buffer returns the block's buffer, of the cache's block size, to write the content into.
func (w *Writer) Buffer() []byte { return w.e.buf }

// Commit makes the first n bytes of the buffer the block's content and wakes its waiters.
// The content must already be verified.
func (w *Writer) Commit(n int) error {
	if n < 0 || n > len(w.e.buf) {
		w.Abort(fmt.Errorf("commit %d bytes of a %d-byte block", n, len(w.e.buf)))
		return fmt.Errorf("commit block %s: %d bytes of a %d-byte buffer", w.e.key, n, len(w.e.buf))
	}
	w.once.Do(func() { w.c.commit(w.e, n) })
	return nil
}

// Abort ends the fill with err, which every waiter receives. Abort after Commit does nothing,
// so `defer w.Abort(err)` is safe.
func (w *Writer) Abort(err error) {
	if err == nil {
		err = errors.New("aborted")
	}
	w.once.Do(func() { w.c.fail(w.e, fmt.Errorf("fill block %s: %w", w.e.key, err)) })
}

// entryList is an intrusive doubly linked list of entries.
type entryList struct {
	head, tail *entry
	len        int
}

func (l *entryList) pushBack(e *entry) {
	e.prev, e.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
	l.len++
}

func (l *entryList) remove(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = nil, nil
	l.len--
}

// ReadStreamAt reads len(p) bytes of task's stream starting at off, block by block, getting
// each block as Get does. The stream must be cut into blocks of the cache's block size. It
// returns fewer bytes than asked only with an error, or at the end of the stream (a short
// last block).
func (c *Cache) ReadStreamAt(ctx context.Context, task layer.TaskID, f Filler, p []byte, off int64) (int, error) {
	bs := int64(c.blockSize)
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		key := layer.BlockKey{Task: task, Index: int(pos / bs)}
		n, err := c.ReadAt(ctx, key, f, p[done:], int(pos%bs))
		done += n
		if err != nil {
			return done, err
		}
		if n == 0 || int(pos%bs)+n < c.blockSize {
			return done, nil // a short block ends the stream
		}
	}
	return done, nil
}
