package blockcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

const testBlock = layer.MinBlockSize

func key(i int) layer.BlockKey {
	return layer.BlockKey{Task: "sha256:0000000000000000000000000000000000000000000000000000000000000000", Index: i}
}

// content is the deterministic content of block i.
func content(i int) []byte {
	b := make([]byte, testBlock-i%7)
	for j := range b {
		b[j] = byte(i*31 + j)
	}
	return b
}

// countingFiller fills blocks with content(i) and counts its calls.
type countingFiller struct{ calls atomic.Int64 }

func (f *countingFiller) FillBlock(_ context.Context, k layer.BlockKey, buf []byte) (int, error) {
	f.calls.Add(1)
	return copy(buf, content(k.Index)), nil
}

// gatedFiller blocks every fill until the test releases it with a result.
type gatedFiller struct {
	started chan layer.BlockKey
	release chan error
	calls   atomic.Int64
}

func newGatedFiller() *gatedFiller {
	return &gatedFiller{started: make(chan layer.BlockKey, 16), release: make(chan error)}
}

func (f *gatedFiller) FillBlock(ctx context.Context, k layer.BlockKey, buf []byte) (int, error) {
	f.calls.Add(1)
	f.started <- k
	select {
	case err := <-f.release:
		if err != nil {
			return 0, err
		}
		return copy(buf, content(k.Index)), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func newCache(t testing.TB, blocks int) *Cache {
	t.Helper()
	c, err := New(int64(blocks)*testBlock, WithBlockSize(testBlock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustGet(t testing.TB, c *Cache, i int, f Filler) *Block {
	t.Helper()
	b, err := c.Get(context.Background(), key(i), f)
	if err != nil {
		t.Fatalf("Get(%d): %v", i, err)
	}
	if !bytes.Equal(b.Bytes(), content(i)) {
		t.Fatalf("Get(%d): wrong content", i)
	}
	return b
}

// waitFor polls a condition on the cache's own counters; it is how a test knows that
// goroutines have reached a wait, not part of the cache.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int64
		block int
	}{
		{"zero limit", 0, testBlock},
		{"tiny block", 1 << 20, 512},
		{"huge block", 1 << 30, layer.MaxBlockSize * 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.limit, WithBlockSize(tc.block)); err == nil {
				t.Fatal("New accepted a bad configuration")
			}
		})
	}
}

func TestHitAfterFill(t *testing.T) {
	c := newCache(t, 4)
	f := &countingFiller{}
	mustGet(t, c, 1, f).Release()
	mustGet(t, c, 1, f).Release()
	if got := f.calls.Load(); got != 1 {
		t.Fatalf("filler calls: got %d, want 1", got)
	}
	s := c.Stats()
	if s.Hits != 1 || s.Misses != 1 || s.Fills != 1 || s.Blocks != 1 || s.BytesHeld != testBlock {
		t.Fatalf("stats: got %+v", s)
	}
}

func TestLookupNeverFills(t *testing.T) {
	c := newCache(t, 4)
	if _, err := c.Lookup(context.Background(), key(1)); !errors.Is(err, ErrNotCached) {
		t.Fatalf("Lookup of an absent block: got %v, want ErrNotCached", err)
	}
	mustGet(t, c, 1, &countingFiller{}).Release()
	b, err := c.Lookup(context.Background(), key(1))
	if err != nil {
		t.Fatal(err)
	}
	b.Release()
}

func TestFilling(t *testing.T) {
	c := newCache(t, 4)
	if c.Filling(key(1)) {
		t.Fatal("an absent block: got filling, want not")
	}
	w, err := c.Begin(context.Background(), key(1))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Filling(key(1)) {
		t.Fatal("a block begun: got not filling, want filling")
	}
	if err := w.Commit(copy(w.Buffer(), content(1))); err != nil {
		t.Fatal(err)
	}
	if c.Filling(key(1)) {
		t.Fatal("a committed block: got filling, want not")
	}
}

// TestWaitersWakeOnFill is the pipeline property: readers of a block in flight, including
// Lookup (a peer serving a child), block until the fill completes and then get its bytes,
// with one fetch for all of them.
func TestWaitersWakeOnFill(t *testing.T) {
	c := newCache(t, 4)
	f := newGatedFiller()
	const readers = 8
	results := make(chan error, readers)
	for range readers {
		go func() {
			b, err := c.Get(context.Background(), key(3), f)
			if err == nil {
				if !bytes.Equal(b.Bytes(), content(3)) {
					err = errors.New("wrong content")
				}
				b.Release()
			}
			results <- err
		}()
	}
	<-f.started
	waitFor(t, "all readers to wait", func() bool { return c.Stats().InflightWaits == readers-1 })
	lookup := make(chan error, 1)
	go func() {
		b, err := c.Lookup(context.Background(), key(3))
		if err == nil {
			b.Release()
		}
		lookup <- err
	}()
	waitFor(t, "lookup to wait", func() bool { return c.Stats().InflightWaits == readers })
	select {
	case err := <-results:
		t.Fatalf("a reader returned before the fill completed: %v", err)
	default:
	}
	f.release <- nil
	for range readers {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-lookup; err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if got := f.calls.Load(); got != 1 {
		t.Fatalf("filler calls: got %d, want 1 (single flight)", got)
	}
}

var errUpstream = errors.New("upstream broke")

func TestWaitersWakeOnFailureAndNextCallerRetries(t *testing.T) {
	c := newCache(t, 4)
	f := newGatedFiller()
	const readers = 4
	results := make(chan error, readers)
	for range readers {
		go func() {
			b, err := c.Get(context.Background(), key(5), f)
			if err == nil {
				b.Release()
			}
			results <- err
		}()
	}
	<-f.started
	waitFor(t, "readers to wait", func() bool { return c.Stats().InflightWaits == readers-1 })
	f.release <- errUpstream
	for range readers {
		if err := <-results; !errors.Is(err, errUpstream) {
			t.Fatalf("got %v, want the fill's error", err)
		}
	}
	c.mu.Lock()
	left := len(c.entries)
	c.mu.Unlock()
	if left != 0 || c.Stats().BytesHeld != 0 {
		t.Fatalf("a failed fill left %d entries and %d bytes behind", left, c.Stats().BytesHeld)
	}
	mustGet(t, c, 5, &countingFiller{}).Release()
}

func TestCancelledWaiterLeavesFillRunning(t *testing.T) {
	c := newCache(t, 4)
	f := newGatedFiller()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, key(7), f)
		done <- err
	}()
	<-f.started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	f.release <- nil // the fill goes on without its first reader
	waitFor(t, "the fill to commit", func() bool { return c.Stats().Fills == 1 })
	mustGet(t, c, 7, f).Release()
	if got := f.calls.Load(); got != 1 {
		t.Fatalf("filler calls: got %d, want 1", got)
	}
}

func TestDeadlineWhileWaiting(t *testing.T) {
	c := newCache(t, 4)
	f := newGatedFiller()
	go func() {
		if b, err := c.Get(context.Background(), key(1), f); err == nil {
			b.Release()
		}
	}()
	<-f.started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Lookup(ctx, key(1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	f.release <- nil
}

func TestFIFOEviction(t *testing.T) {
	c := newCache(t, 3)
	f := &countingFiller{}
	for i := 1; i <= 3; i++ {
		mustGet(t, c, i, f).Release()
	}
	mustGet(t, c, 1, f).Release() // a hit does not make block 1 younger: FIFO, not LRU
	for _, tc := range []struct{ insert, evicted int }{{4, 1}, {5, 2}, {6, 3}} {
		mustGet(t, c, tc.insert, f).Release()
		if _, err := c.Lookup(context.Background(), key(tc.evicted)); !errors.Is(err, ErrNotCached) {
			t.Fatalf("after inserting %d: block %d still cached", tc.insert, tc.evicted)
		}
	}
	for i := 4; i <= 6; i++ {
		b, err := c.Lookup(context.Background(), key(i))
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		b.Release()
	}
	if s := c.Stats(); s.Evictions != 3 || s.Blocks != 3 {
		t.Fatalf("stats: %+v", s)
	}
}

func TestPinnedBlockIsNotEvictedNorReused(t *testing.T) {
	c := newCache(t, 2)
	f := &countingFiller{}
	pinned := mustGet(t, c, 1, f)
	for i := 2; i < 20; i++ {
		mustGet(t, c, i, f).Release()
	}
	if !bytes.Equal(pinned.Bytes(), content(1)) {
		t.Fatal("pinned block changed under its reader")
	}
	b, err := c.Lookup(context.Background(), key(1))
	if err != nil {
		t.Fatalf("pinned block was evicted: %v", err)
	}
	b.Release()
	pinned.Release()
	pinned.Release() // a second release does nothing
	if held := c.Stats().BytesHeld; held > 2*testBlock {
		t.Fatalf("held %d bytes, bound is %d", held, 2*testBlock)
	}
}

func TestRemovePinnedBlock(t *testing.T) {
	c := newCache(t, 4)
	b := mustGet(t, c, 1, &countingFiller{})
	if !c.Remove(key(1)) {
		t.Fatal("Remove found nothing")
	}
	if !bytes.Equal(b.Bytes(), content(1)) {
		t.Fatal("removed block unreadable by its holder")
	}
	if held := c.Stats().BytesHeld; held != testBlock {
		t.Fatalf("a pinned removed block must stay counted: held %d", held)
	}
	b.Release()
	if held := c.Stats().BytesHeld; held != 0 {
		t.Fatalf("release of a removed block did not free it: held %d", held)
	}
	if c.Remove(key(1)) {
		t.Fatal("Remove of an absent block reported success")
	}
}

func TestFillWaitsForRoomWhenAllPinned(t *testing.T) {
	c := newCache(t, 1)
	f := &countingFiller{}
	pinned := mustGet(t, c, 1, f)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Get(ctx, key(2), f); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want to wait for room until the deadline", err)
	}
	got := make(chan error, 1)
	go func() {
		b, err := c.Get(context.Background(), key(2), f)
		if err == nil {
			b.Release()
		}
		got <- err
	}()
	waitFor(t, "the fill to wait for room", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.roomWaits == 1
	})
	pinned.Release()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if held := c.Stats().BytesHeld; held != testBlock {
		t.Fatalf("held %d, want one block", held)
	}
}

func TestWriter(t *testing.T) {
	c := newCache(t, 4)
	w, err := c.Begin(context.Background(), key(9))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Begin(context.Background(), key(9)); !errors.Is(err, ErrInFlight) {
		t.Fatalf("second Begin: got %v, want ErrInFlight", err)
	}
	got := make(chan []byte, 1)
	go func() {
		b, err := c.Lookup(context.Background(), key(9))
		if err != nil {
			got <- nil
			return
		}
		got <- bytes.Clone(b.Bytes())
		b.Release()
	}()
	waitFor(t, "lookup to wait", func() bool { return c.Stats().InflightWaits == 1 })
	n := copy(w.Buffer(), content(9))
	if err := w.Commit(n); err != nil {
		t.Fatal(err)
	}
	w.Abort(errUpstream) // after Commit: no effect
	if b := <-got; !bytes.Equal(b, content(9)) {
		t.Fatal("waiter got wrong bytes")
	}

	w, err = c.Begin(context.Background(), key(10))
	if err != nil {
		t.Fatal(err)
	}
	fail := make(chan error, 1)
	go func() { _, err := c.Lookup(context.Background(), key(10)); fail <- err }()
	waitFor(t, "lookup to wait", func() bool { return c.Stats().InflightWaits == 2 })
	w.Abort(errUpstream)
	if err := <-fail; !errors.Is(err, errUpstream) {
		t.Fatalf("got %v, want the abort error", err)
	}
}

func TestReadAt(t *testing.T) {
	c := newCache(t, 4)
	f := &countingFiller{}
	for _, tc := range []struct{ off, n, want int }{
		{0, 10, 10}, {100, 50, 50}, {len(content(2)) - 5, 50, 5}, {len(content(2)), 10, 0},
	} {
		p := make([]byte, tc.n)
		n, err := c.ReadAt(context.Background(), key(2), f, p, tc.off)
		if err != nil || n != tc.want || !bytes.Equal(p[:n], content(2)[tc.off:tc.off+n]) {
			t.Fatalf("ReadAt(off %d, len %d): n=%d err=%v, want n=%d", tc.off, tc.n, n, err, tc.want)
		}
	}
	if _, err := c.ReadAt(context.Background(), key(2), f, make([]byte, 1), testBlock+1); err == nil {
		t.Fatal("ReadAt past the block's end succeeded")
	}
}

func TestCloseCancelsFills(t *testing.T) {
	c, err := New(4*testBlock, WithBlockSize(testBlock))
	if err != nil {
		t.Fatal(err)
	}
	f := newGatedFiller()
	done := make(chan error, 1)
	go func() { _, err := c.Get(context.Background(), key(1), f); done <- err }()
	<-f.started
	c.Close()
	if err := <-done; err == nil {
		t.Fatal("a fill survived Close")
	}
	if _, err := c.Get(context.Background(), key(1), f); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: got %v, want ErrClosed", err)
	}
}

// TestStress runs many goroutines over more keys than the cache holds, with random failures
// and cancellations. It checks that every block read has the right content, that no block is
// ever filled twice at once, that the bound holds, and that nothing is left behind.
func TestStress(t *testing.T) {
	const (
		capacity   = 8
		keys       = 32
		goroutines = 16
		iterations = 400
	)
	c := newCache(t, capacity)
	var inFlight [keys]atomic.Int32
	var overlap atomic.Bool
	f := FillerFunc(func(ctx context.Context, k layer.BlockKey, buf []byte) (int, error) {
		if inFlight[k.Index].Add(1) > 1 {
			overlap.Store(true)
		}
		defer inFlight[k.Index].Add(-1)
		if rand.IntN(20) == 0 {
			return 0, errUpstream
		}
		if rand.IntN(4) == 0 {
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		}
		return copy(buf, content(k.Index)), nil
	})
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range iterations {
				i := rand.IntN(keys)
				ctx, cancel := context.WithCancel(context.Background())
				if rand.IntN(10) == 0 {
					cancel()
				}
				b, err := c.Get(ctx, key(i), f)
				cancel()
				if err != nil {
					if !errors.Is(err, errUpstream) && !errors.Is(err, context.Canceled) {
						errs <- err
						return
					}
					continue
				}
				if !bytes.Equal(b.Bytes(), content(i)) {
					errs <- fmt.Errorf("block %d: wrong content", i)
				}
				if st := c.Stats(); st.BytesHeld+st.BytesSpare > capacity*testBlock+testBlock {
					errs <- fmt.Errorf("held %d and spare %d bytes, bound %d plus one block", st.BytesHeld, st.BytesSpare, capacity*testBlock)
				}
				b.Release()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if overlap.Load() {
		t.Fatal("a block was filled twice at once")
	}
	c.Close()
	s := c.Stats()
	c.mu.Lock()
	left := len(c.entries)
	c.mu.Unlock()
	if s.BytesHeld != 0 || left != 0 {
		t.Fatalf("after Close: %d bytes held, %d entries", s.BytesHeld, left)
	}
	t.Logf("stats: %+v", s)
}

func TestReadStreamAt(t *testing.T) {
	c := newCache(t, 8)
	stream := make([]byte, 3*testBlock+100)
	for i := range stream {
		stream[i] = byte(i * 7)
	}
	f := FillerFunc(func(_ context.Context, k layer.BlockKey, buf []byte) (int, error) {
		start := k.Index * testBlock
		if start >= len(stream) {
			return 0, nil
		}
		return copy(buf, stream[start:min(start+testBlock, len(stream))]), nil
	})
	task := key(0).Task
	for _, tc := range []struct {
		off  int64
		n    int
		want int
	}{
		{0, len(stream), len(stream)},
		{testBlock - 3, 10, 10},
		{2*testBlock + 5, testBlock + 95, testBlock + 95},
		{3*testBlock + 90, 50, 10},
	} {
		p := make([]byte, tc.n)
		n, err := c.ReadStreamAt(context.Background(), task, f, p, tc.off)
		if err != nil || n != tc.want || !bytes.Equal(p[:n], stream[tc.off:tc.off+int64(n)]) {
			t.Errorf("ReadStreamAt(off %d, len %d) = %d, %v; want %d bytes of the stream", tc.off, tc.n, n, err, tc.want)
		}
	}
}

// TestChurnReusesBuffers: once full, a cache evicting one block for every new one reuses the
// evicted buffers instead of allocating new ones.
func TestChurnReusesBuffers(t *testing.T) {
	c := newCache(t, 4)
	f := FillerFunc(func(_ context.Context, k layer.BlockKey, buf []byte) (int, error) {
		for j := range buf {
			buf[j] = byte(k.Index + j)
		}
		return len(buf), nil
	})
	get := func(i int) {
		b, err := c.Get(context.Background(), key(i), f)
		if err != nil {
			t.Fatal(err)
		}
		b.Release()
	}
	for i := range 8 {
		get(i)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const misses = 200
	for i := 8; i < 8+misses; i++ {
		get(i)
	}
	runtime.ReadMemStats(&after)
	if perMiss := (after.TotalAlloc - before.TotalAlloc) / misses; perMiss >= testBlock/2 {
		t.Fatalf("%d bytes allocated per miss: buffers are not reused", perMiss)
	}
	if st := c.Stats(); st.BytesHeld+st.BytesSpare > 4*testBlock {
		t.Fatalf("held %d + spare %d bytes over the %d-byte bound", st.BytesHeld, st.BytesSpare, 4*testBlock)
	}
}
