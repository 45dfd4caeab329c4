package stream

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
)

const blockSize = 4 << 10

// source fills blocks from data and counts fills and the most running at once.
type source struct {
	data []byte

	fills, running, maxRunning atomic.Int64
}

func (s *source) FillBlock(_ context.Context, key layer.BlockKey, buf []byte) (int, error) {
	s.fills.Add(1)
	n := s.running.Add(1)
	defer s.running.Add(-1)
	for {
		m := s.maxRunning.Load()
		if n <= m || s.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	off := key.Index * blockSize
	return copy(buf, s.data[off:min(off+blockSize, len(s.data))]), nil
}

func newCache(t *testing.T, blocks int) *blockcache.Cache {
	t.Helper()
	c, err := blockcache.New(int64(blocks*blockSize), blockcache.WithBlockSize(blockSize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestCopy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int
		window int
		cache  int // blocks
	}{
		{"empty", 0, DefaultWindow, 4},
		{"one byte", 1, DefaultWindow, 4},
		{"one short block", blockSize - 1, DefaultWindow, 4},
		{"one full block", blockSize, DefaultWindow, 4},
		{"several blocks", 3*blockSize + 7, DefaultWindow, 16},
		{"no window", 5*blockSize + 1, 0, 4},
		{"window larger than cache", 40*blockSize + 3, 16, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randomBytes(tc.size)
			src := &source{data: data}
			cache := newCache(t, tc.cache)
			var table layer.BlockTable
			task := Task{ID: layer.TaskID(digest.FromBytes(data)), Size: int64(len(data)), Digest: digest.FromBytes(data)}
			var out bytes.Buffer
			n, err := Copy(t.Context(), &out, cache, task, src, WithWindow(tc.window), WithVerified(func(bt layer.BlockTable) { table = bt }))
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("got %d bytes (%d written), want %d equal bytes", out.Len(), n, len(data))
			}
			if got, want := table.Count(), layer.BlockCount(int64(len(data)), blockSize); got != want || len(table.Digests) != want {
				t.Fatalf("verified table has %d blocks and %d digests, want %d", got, len(table.Digests), want)
			}
			for i := range table.Count() {
				off, l := table.Range(i)
				if err := table.Verify(i, data[off:off+l]); err != nil {
					t.Fatal(err)
				}
			}
			if got := int(src.maxRunning.Load()); got > tc.window+1 {
				t.Errorf("got %d fills at once, want at most window+1 = %d", got, tc.window+1)
			}
		})
	}
}

func TestCopyRefusesWrongDigest(t *testing.T) {
	data := randomBytes(3*blockSize + 100)
	src := &source{data: data}
	cache := newCache(t, 16)
	task := Task{ID: "sha256:" + layer.TaskID(bytes.Repeat([]byte("ab"), 32)), Size: int64(len(data)), Digest: digest.FromString("something else")}
	var out bytes.Buffer
	verified := false
	n, err := Copy(t.Context(), &out, cache, task, src, WithVerified(func(layer.BlockTable) { verified = true }))
	if !errors.Is(err, layer.ErrDigestMismatch) {
		t.Fatalf("got error %v, want one wrapping ErrDigestMismatch", err)
	}
	if want := int64(3 * blockSize); n != want || out.Len() != int(want) {
		t.Fatalf("wrote %d bytes, want %d: everything but the last block", n, want)
	}
	if verified {
		t.Error("a stream that did not match was reported verified")
	}
	for i := range 4 {
		if b, err := cache.Lookup(t.Context(), layer.BlockKey{Task: task.ID, Index: i}); err == nil {
			b.Release()
			t.Errorf("block %d of a stream that failed verification is still cached", i)
		}
	}
}

func TestCopyRefusesShortBlock(t *testing.T) {
	data := randomBytes(2 * blockSize)
	short := blockcache.FillerFunc(func(_ context.Context, key layer.BlockKey, buf []byte) (int, error) {
		return copy(buf, data[:blockSize/2]), nil
	})
	cache := newCache(t, 4)
	_, err := Copy(t.Context(), &bytes.Buffer{}, cache, Task{ID: "sha256:" + layer.TaskID(bytes.Repeat([]byte("cd"), 32)), Size: int64(len(data))}, short)
	if !errors.Is(err, layer.ErrDigestMismatch) {
		t.Fatalf("got error %v, want one wrapping ErrDigestMismatch", err)
	}
}

func TestConcurrentCopiesFillEachBlockOnce(t *testing.T) {
	data := randomBytes(20*blockSize + 5)
	src := &source{data: data}
	cache := newCache(t, 32)
	task := Task{ID: layer.TaskID(digest.FromBytes(data)), Size: int64(len(data)), Digest: digest.FromBytes(data)}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var out bytes.Buffer
			if _, err := Copy(t.Context(), &out, cache, task, src); err != nil {
				t.Error(err)
			} else if !bytes.Equal(out.Bytes(), data) {
				t.Error("wrong bytes")
			}
		})
	}
	wg.Wait()
	if got, want := src.fills.Load(), int64(21); got != want {
		t.Errorf("got %d fills, want %d: one per block", got, want)
	}
}

func TestCopyStopsWhenCancelled(t *testing.T) {
	data := randomBytes(4 * blockSize)
	gate := make(chan struct{})
	slow := blockcache.FillerFunc(func(ctx context.Context, key layer.BlockKey, buf []byte) (int, error) {
		if key.Index == 2 {
			select {
			case <-gate:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		off := key.Index * blockSize
		return copy(buf, data[off:off+blockSize]), nil
	})
	cache := newCache(t, 8)
	ctx, cancel := context.WithCancel(t.Context())
	w := &cancelAfter{n: 2 * blockSize, cancel: cancel}
	_, err := Copy(ctx, w, cache, Task{ID: layer.TaskID(digest.FromBytes(data)), Size: int64(len(data))}, slow)
	close(gate)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got error %v, want context.Canceled", err)
	}
}

// cancelAfter cancels once n bytes were written to it.
type cancelAfter struct {
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.n -= len(p)
	if c.n <= 0 {
		c.cancel()
	}
	return len(p), nil
}
