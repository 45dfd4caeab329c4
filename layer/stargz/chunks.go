package stargz

import (
	"sync"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// chunkKey names a chunk in the blob: the compressed stream it is in and where in it.
type chunkKey struct{ offset, inner int64 }

// chunkCache keeps the last chunks read, verified, so that the kernel's reads of one chunk a
// page run at a time fetch and decompress it once; and it lets concurrent readers of a chunk
// share one fetch. It holds at most maxBytes of chunks, dropping the oldest first.
type chunkCache struct {
	maxBytes int64

	mu       sync.Mutex
	held     map[chunkKey][]byte
	order    []chunkKey // oldest first
	bytes    int64
	inFlight map[chunkKey]*chunkFetch
}

type chunkFetch struct {
	done  chan struct{}
	chunk []byte
	err   error
}

func newChunkCache(maxBytes int64) *chunkCache {
	return &chunkCache{maxBytes: maxBytes, held: make(map[chunkKey][]byte), inFlight: make(map[chunkKey]*chunkFetch)}
}

// get returns chunk ce, from the cache, from a fetch under way, or from fetch.
func (c *chunkCache) get(ce *estargz.TOCEntry, fetch func() ([]byte, error)) ([]byte, error) {
	key := chunkKey{ce.Offset, ce.InnerOffset}
	c.mu.Lock()
	if b, ok := c.held[key]; ok {
		c.mu.Unlock()
		return b, nil
	}
	if f, ok := c.inFlight[key]; ok {
		c.mu.Unlock()
		<-f.done
		return f.chunk, f.err
	}
	f := &chunkFetch{done: make(chan struct{})}
	c.inFlight[key] = f
	c.mu.Unlock()

	f.chunk, f.err = fetch()
	c.mu.Lock()
	delete(c.inFlight, key)
	if f.err == nil && int64(len(f.chunk)) <= c.maxBytes {
		for c.bytes+int64(len(f.chunk)) > c.maxBytes && len(c.order) > 0 {
			old := c.order[0]
			c.order = c.order[1:]
			c.bytes -= int64(len(c.held[old]))
			delete(c.held, old)
		}
		c.held[key] = f.chunk
		c.order = append(c.order, key)
		c.bytes += int64(len(f.chunk))
	}
	c.mu.Unlock()
	close(f.done)
	return f.chunk, f.err
}
