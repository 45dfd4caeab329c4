package fetch_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/fetch"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/p2p/stream"
	"github.com/p2pimage/p2p-snapshotter/p2p/tasks"
)

const blockSize = 64 << 10

// node is one peer: a block cache, its record, and a block server on loopback.
type node struct {
	id       string
	cache    *blockcache.Cache
	registry *tasks.Registry
	server   *peer.Server
	addr     string
}

func newNode(t *testing.T, id string, holder func(*tasks.Registry) peer.Holder) *node {
	t.Helper()
	cache, err := blockcache.New(64<<20, blockcache.WithBlockSize(blockSize))
	if err != nil {
		t.Fatal(err)
	}
	n := &node{id: id, cache: cache, registry: tasks.New(cache)}
	h := peer.Holder(n.registry)
	if holder != nil {
		h = holder(n.registry)
	}
	n.server = peer.NewServer(h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = ln.Addr().String()
	go n.server.Serve(context.Background(), ln)
	t.Cleanup(func() {
		n.server.Close()
		cache.Close()
	})
	return n
}

// testTask is a random stream cut into blocks.
type testTask struct {
	id    layer.TaskID
	data  []byte
	table layer.BlockTable
}

func newTestTask(size int) *testTask {
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), 3))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	table := layer.BlockTable{BlockSize: blockSize, Size: int64(size)}
	for i := range table.Count() {
		off, n := table.Range(i)
		table.Digests = append(table.Digests, layer.DigestBlock(data[off:off+n]))
	}
	return &testTask{id: layer.TaskIDFromDigest(digest.FromBytes(data)), data: data, table: table}
}

func (tt *testTask) block(i int) []byte {
	off, n := tt.table.Range(i)
	return tt.data[off : off+n]
}

// seed plays a seed's streaming pass on n: block by block into the cache with its digest,
// waiting gate(i) before block i, then completes the task with a refill from memory. The
// pass ends before the node's cache closes: a gate must return once t.Context() is done.
func (tt *testTask) seed(t *testing.T, n *node, gate func(i int)) (refills *atomic.Int64) {
	refills = new(atomic.Int64)
	n.registry.StartPass(tt.id)
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		for i := range tt.table.Count() {
			if gate != nil {
				gate(i)
			}
			w, err := n.cache.Begin(context.Background(), layer.BlockKey{Task: tt.id, Index: i})
			if err != nil {
				t.Errorf("seed block %d: %v", i, err)
				return
			}
			w.Commit(copy(w.Buffer(), tt.block(i)))
			n.registry.Produced(tt.id, i, tt.table.Digests[i])
		}
		n.registry.Complete(tt.id, tt.table, blockcache.FillerFunc(func(_ context.Context, k layer.BlockKey, buf []byte) (int, error) {
			refills.Add(1)
			return copy(buf, tt.block(k.Index)), nil
		}))
	}()
	return refills
}

// parents is a fixed ParentSource.
type parents []fetch.Parent

func (ps parents) Parents(_ context.Context, _ layer.TaskID, exclude []string) ([]fetch.Parent, error) {
	var out []fetch.Parent
	for _, p := range ps {
		excluded := false
		for _, e := range exclude {
			excluded = excluded || e == p.ID
		}
		if !excluded {
			out = append(out, p)
		}
	}
	return out, nil
}

// reporter counts failures by reason.
type reporter struct {
	mu       sync.Mutex
	fetched  int
	failures map[fetch.Reason]int
}

func (r *reporter) BlockFetched(layer.TaskID, int, string, time.Duration) {
	r.mu.Lock()
	r.fetched++
	r.mu.Unlock()
}

func (r *reporter) BlockFailed(_ layer.TaskID, _ int, _ string, reason fetch.Reason, _ error) {
	r.mu.Lock()
	if r.failures == nil {
		r.failures = make(map[fetch.Reason]int)
	}
	r.failures[reason]++
	r.mu.Unlock()
}

func (r *reporter) count(reason fetch.Reason) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failures[reason]
}

// download fetches the whole task into n from ps, checks it, and makes n vouch for it.
func download(ctx context.Context, n *node, tt *testTask, ps parents, rep fetch.Reporter) error {
	n.registry.Expect(tt.id)
	opts := []fetch.Option{fetch.WithLanding(n.registry), fetch.WithWait(5 * time.Second)}
	if rep != nil {
		opts = append(opts, fetch.WithReporter(rep))
	}
	f, err := fetch.New(peer.NewClient(), fetch.Task{ID: tt.id, Size: int64(len(tt.data)), BlockSize: blockSize}, ps, opts...)
	if err != nil {
		return err
	}
	h := sha256.New()
	var table layer.BlockTable
	_, err = stream.Copy(ctx, h, n.cache, stream.Task{ID: tt.id, Size: int64(len(tt.data)), Digest: tt.id.Digest()}, f,
		stream.WithWindow(8), stream.WithVerified(func(bt layer.BlockTable) { table = bt }))
	if err != nil {
		n.registry.Abandon(tt.id)
		return err
	}
	if digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)) != tt.id.Digest() {
		return errors.New("downloaded stream does not match")
	}
	n.registry.Complete(tt.id, table, nil)
	return nil
}

func TestEightPeersPipelineFromOneSeed(t *testing.T) {
	tt := newTestTask(8<<20 + 12345)
	seed := newNode(t, "seed", nil)
	// The seed produces one block every 2 ms: children fetch while it is still producing.
	tt.seed(t, seed, func(int) { time.Sleep(2 * time.Millisecond) })
	nodes := make([]*node, 8)
	for i := range nodes {
		nodes[i] = newNode(t, string(rune('a'+i)), nil)
	}
	// A chain of parents: node i asks the seed and the nodes before it.
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		ps := parents{{ID: "seed", Addr: seed.addr, Vouches: true}}
		for _, before := range nodes[:i] {
			ps = append(ps, fetch.Parent{ID: before.id, Addr: before.addr})
		}
		wg.Go(func() { errs[i] = download(t.Context(), n, tt, ps, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
	}
	var fromPeers int64
	for _, n := range nodes {
		fromPeers += n.server.UploadedBytes()
	}
	t.Logf("seed uploaded %d bytes, peers %d bytes, for %d peers × %d bytes", seed.server.UploadedBytes(), fromPeers, len(nodes), len(tt.data))
	if fromPeers == 0 {
		t.Error("no peer served another: every block came from the seed")
	}
}

func TestCorruptParentIsDetectedAndAvoided(t *testing.T) {
	tt := newTestTask(2<<20 + 7)
	seed := newNode(t, "seed", nil)
	tt.seed(t, seed, nil)
	// The corrupt peer holds the task but flips a byte of every block it serves.
	scratch, err := blockcache.New(64<<20, blockcache.WithBlockSize(blockSize))
	if err != nil {
		t.Fatal(err)
	}
	defer scratch.Close()
	bad := newNode(t, "bad", func(r *tasks.Registry) peer.Holder { return &corruptHolder{Registry: r, scratch: scratch} })
	if err := download(t.Context(), bad, tt, parents{{ID: "seed", Addr: seed.addr, Vouches: true}}, nil); err != nil {
		t.Fatal(err)
	}
	child := newNode(t, "child", nil)
	rep := &reporter{}
	if err := download(t.Context(), child, tt, parents{{ID: "bad", Addr: bad.addr}, {ID: "seed", Addr: seed.addr, Vouches: true}}, rep); err != nil {
		t.Fatalf("download with a corrupt parent: %v", err)
	}
	if rep.count(fetch.ReasonDigestMismatch) == 0 {
		t.Fatal("the corrupt parent was never caught: did the child never ask it?")
	}
	// Requests already in flight to it when the first corrupt block arrived are caught too;
	// after that it is never asked again.
	if got, window := rep.count(fetch.ReasonDigestMismatch), 8; got > window+1 {
		t.Errorf("the corrupt parent was caught %d times, want at most the window (%d) plus one: it is set aside after the first", got, window)
	}
}

// corruptHolder serves corrupt copies of its blocks, made in a scratch cache so that its
// own cached blocks stay intact.
type corruptHolder struct {
	*tasks.Registry
	scratch *blockcache.Cache
	seq     atomic.Int64
}

func (c *corruptHolder) Block(ctx context.Context, id layer.TaskID, i int) (*blockcache.Block, error) {
	b, err := c.Registry.Block(ctx, id, i)
	if err != nil {
		return nil, err
	}
	defer b.Release()
	data := b.Bytes()
	key := layer.BlockKey{Task: "sha256:" + layer.TaskID(bytes.Repeat([]byte("e"), 64)), Index: int(c.seq.Add(1))}
	return c.scratch.Get(ctx, key, blockcache.FillerFunc(func(_ context.Context, _ layer.BlockKey, buf []byte) (int, error) {
		n := copy(buf, data)
		buf[n/2] ^= 0x55
		return n, nil
	}))
}

func TestParentKilledMidTransfer(t *testing.T) {
	tt := newTestTask(4<<20 + 1)
	seed := newNode(t, "seed", nil)
	// The seed produces slowly, so the parent is killed while the child still needs it.
	tt.seed(t, seed, func(int) { time.Sleep(3 * time.Millisecond) })
	parent := newNode(t, "parent", nil)
	go download(context.Background(), parent, tt, parents{{ID: "seed", Addr: seed.addr, Vouches: true}}, nil)
	child := newNode(t, "child", nil)
	rep := &reporter{}
	done := make(chan error, 1)
	go func() {
		done <- download(t.Context(), child, tt, parents{{ID: "parent", Addr: parent.addr}, {ID: "seed", Addr: seed.addr, Vouches: true}}, rep)
	}()
	time.Sleep(40 * time.Millisecond)
	parent.server.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("child after its parent died: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("child did not complete within 60 s of its parent's death")
	}
}

func TestInFlightBlockIsServedWithoutRefetch(t *testing.T) {
	tt := newTestTask(4 * blockSize)
	seed := newNode(t, "seed", nil)
	release := make(chan struct{})
	refills := tt.seed(t, seed, func(i int) {
		if i == 2 {
			select { // block 2 is still "downloading" at the seed
			case <-release:
			case <-t.Context().Done():
			}
		}
	})
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, blockSize)
		n, _, err := peer.NewClient().Block(t.Context(), seed.addr, tt.id, 2, 10*time.Second, buf)
		if err == nil && !bytes.Equal(buf[:n], tt.block(2)) {
			err = errors.New("wrong bytes")
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("the request for an in-flight block answered before the block landed: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := refills.Load(); n != 0 {
		t.Errorf("the seed refilled %d blocks; the in-flight block should be served as it landed", n)
	}
}

// countingHolder records the most Block calls it had at once.
type countingHolder struct {
	peer.Holder
	mu        sync.Mutex
	now, most int
}

func (h *countingHolder) Block(ctx context.Context, id layer.TaskID, i int) (*blockcache.Block, error) {
	h.mu.Lock()
	h.now++
	h.most = max(h.most, h.now)
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.now--
		h.mu.Unlock()
	}()
	time.Sleep(10 * time.Millisecond) // so that requests overlap
	return h.Holder.Block(ctx, id, i)
}

func TestRequestsToOneParentAreBounded(t *testing.T) {
	tt := newTestTask(32 * blockSize)
	var counter *countingHolder
	seed := newNode(t, "seed", func(r *tasks.Registry) peer.Holder {
		counter = &countingHolder{Holder: r}
		return counter
	})
	tt.seed(t, seed, nil)
	child := newNode(t, "child", nil)
	child.registry.Expect(tt.id)
	f, err := fetch.New(peer.NewClient(), fetch.Task{ID: tt.id, Size: int64(len(tt.data)), BlockSize: blockSize},
		parents{{ID: "seed", Addr: seed.addr, Vouches: true}}, fetch.WithLanding(child.registry))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range tt.table.Count() { // every block at once
		wg.Go(func() {
			b, err := child.cache.Get(t.Context(), layer.BlockKey{Task: tt.id, Index: i}, f)
			if err != nil {
				t.Errorf("block %d: %v", i, err)
				return
			}
			if !bytes.Equal(b.Bytes(), tt.block(i)) {
				t.Errorf("block %d: wrong bytes", i)
			}
			b.Release()
		})
	}
	wg.Wait()
	if counter.most > fetch.MaxPerParent || counter.most < 2 {
		t.Fatalf("the parent had up to %d requests at once; want 2 to %d", counter.most, fetch.MaxPerParent)
	}
}

// heldBackHolder holds every Block request until the test lets one through, and tells the
// test of each request as it arrives.
type heldBackHolder struct {
	peer.Holder
	arrived chan int      // the index of each request, as it arrives
	release chan struct{} // one token lets one held request through; closed, all
}

func (h *heldBackHolder) Block(ctx context.Context, id layer.TaskID, i int) (*blockcache.Block, error) {
	select {
	case h.arrived <- i:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return h.Holder.Block(ctx, id, i)
}

// waitQueued waits until n blocks of f wait for a request slot.
func waitQueued(t *testing.T, f *fetch.Fetcher, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for got := fetch.QueuedBlocks(f); got != n; got = fetch.QueuedBlocks(f) {
		if time.Now().After(deadline) {
			t.Fatalf("%d blocks wait for a request slot; want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestQueuedBlocksTakeFreedSlotsLowestFirst(t *testing.T) {
	const queued = 3 * fetch.MaxPerParent
	total := queued + fetch.MaxPerParent
	tt := newTestTask(total * blockSize)
	holder := &heldBackHolder{arrived: make(chan int, 4*total), release: make(chan struct{})}
	seed := newNode(t, "seed", func(r *tasks.Registry) peer.Holder {
		holder.Holder = r
		return holder
	})
	tt.seed(t, seed, nil)
	f, err := fetch.New(peer.NewClient(), fetch.Task{ID: tt.id, Size: int64(len(tt.data)), BlockSize: blockSize, Digests: tt.table.Digests},
		parents{{ID: "seed", Addr: seed.addr, Vouches: true}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		errs = make([]error, total)
	)
	fill := func(i int) {
		wg.Go(func() {
			buf := make([]byte, blockSize)
			n, err := f.FillBlock(t.Context(), layer.BlockKey{Task: tt.id, Index: i}, buf)
			if err == nil && !bytes.Equal(buf[:n], tt.block(i)) {
				err = errors.New("wrong bytes")
			}
			errs[i] = err
		})
	}
	releaseAll := sync.OnceFunc(func() { close(holder.release) })
	t.Cleanup(func() {
		releaseAll()
		wg.Wait()
	})
	next := func() int {
		t.Helper()
		select {
		case i := <-holder.arrived:
			return i
		case <-time.After(10 * time.Second):
			t.Fatal("the parent got no request within 10 s")
			return -1
		}
	}

	// The last blocks take every slot at the parent and are held there.
	for i := queued; i < total; i++ {
		fill(i)
	}
	for range fetch.MaxPerParent {
		if i := next(); i < queued {
			t.Fatalf("the parent got block %d first; want one of %d to %d", i, queued, total-1)
		}
	}
	// The others queue for a slot highest first: each waits before a lower one arrives.
	for i := queued - 1; i >= 0; i-- {
		fill(i)
		waitQueued(t, f, queued-i)
	}
	// One slot frees at a time: each goes to the lowest block still queued.
	var got []int
	for range queued {
		select {
		case holder.release <- struct{}{}:
		case <-time.After(10 * time.Second):
			t.Fatal("no request was held at the parent for 10 s")
		}
		got = append(got, next())
	}
	for i, b := range got {
		if b != i {
			t.Fatalf("the parent got the queued blocks in order %v; want 0 to %d in order", got, queued-1)
		}
	}
	releaseAll()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("block %d: %v", i, err)
		}
	}
}

// holdAll makes n hold the whole task, complete, its blocks refilled from memory on request.
func (tt *testTask) holdAll(n *node) {
	n.registry.Complete(tt.id, tt.table, blockcache.FillerFunc(func(_ context.Context, k layer.BlockKey, buf []byte) (int, error) {
		return copy(buf, tt.block(k.Index)), nil
	}))
}

// askedHolder counts the Block requests for each block, and answers "not held" for the
// blocks lacks names.
type askedHolder struct {
	peer.Holder
	lacks func(i int) bool // nil: none

	mu    sync.Mutex
	asked map[int]int
}

func (h *askedHolder) Block(ctx context.Context, id layer.TaskID, i int) (*blockcache.Block, error) {
	h.mu.Lock()
	if h.asked == nil {
		h.asked = make(map[int]int)
	}
	h.asked[i]++
	h.mu.Unlock()
	if h.lacks != nil && h.lacks(i) {
		return nil, fmt.Errorf("block %d: %w", i, peer.ErrNotHeld)
	}
	return h.Holder.Block(ctx, id, i)
}

// times returns how many times block i was asked for.
func (h *askedHolder) times(i int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.asked[i]
}

// total returns how many Block requests arrived.
func (h *askedHolder) total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.asked {
		n += c
	}
	return n
}

// newAskedNode starts a node whose Block requests are counted; lacks as in askedHolder.
func newAskedNode(t *testing.T, id string, lacks func(int) bool) (*node, *askedHolder) {
	t.Helper()
	h := &askedHolder{lacks: lacks}
	n := newNode(t, id, func(r *tasks.Registry) peer.Holder {
		h.Holder = r
		return h
	})
	return n, h
}

// newTaskFetcher returns a Fetcher of tt from ps, with its digests known.
func newTaskFetcher(t *testing.T, tt *testTask, ps parents, opts ...fetch.Option) *fetch.Fetcher {
	t.Helper()
	f, err := fetch.New(peer.NewClient(), fetch.Task{ID: tt.id, Size: int64(len(tt.data)), BlockSize: blockSize, Digests: tt.table.Digests}, ps, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// fillBlocks fetches blocks with f, one after the other or all at once, and checks their bytes.
func fillBlocks(t *testing.T, f *fetch.Fetcher, tt *testTask, blocks []int, concurrent bool) {
	t.Helper()
	fill := func(i int) {
		buf := make([]byte, blockSize)
		n, err := f.FillBlock(t.Context(), layer.BlockKey{Task: tt.id, Index: i}, buf)
		switch {
		case err != nil:
			t.Errorf("block %d: %v", i, err)
		case !bytes.Equal(buf[:n], tt.block(i)):
			t.Errorf("block %d: got %d bytes that differ from the block; want its %d bytes", i, n, len(tt.block(i)))
		}
	}
	if !concurrent {
		for _, i := range blocks {
			fill(i)
		}
		return
	}
	var wg sync.WaitGroup
	for _, i := range blocks {
		wg.Go(func() { fill(i) })
	}
	wg.Wait()
}

func allBlocks(tt *testTask) []int {
	bs := make([]int, tt.table.Count())
	for i := range bs {
		bs[i] = i
	}
	return bs
}

func TestEveryRequestGoesToTheUsablePrimary(t *testing.T) {
	for _, tc := range []struct {
		name         string
		primaryFirst bool // the primary comes first in the ParentSource's answer
		concurrent   bool
	}{
		{"sequential, primary listed first", true, false},
		{"sequential, primary listed second", false, false},
		{"concurrent, primary listed first", true, true},
		{"concurrent, primary listed second", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tt := newTestTask(32 * blockSize)
			primary, primaryAsked := newAskedNode(t, "primary", nil)
			standby, standbyAsked := newAskedNode(t, "standby", nil)
			tt.holdAll(primary)
			tt.holdAll(standby)
			ps := parents{{ID: "primary", Addr: primary.addr, Primary: true}, {ID: "standby", Addr: standby.addr}}
			if !tc.primaryFirst {
				ps[0], ps[1] = ps[1], ps[0]
			}
			f := newTaskFetcher(t, tt, ps)
			fillBlocks(t, f, tt, allBlocks(tt), tc.concurrent)
			for i := range tt.table.Count() {
				if got := primaryAsked.times(i); got != 1 {
					t.Errorf("the primary was asked for block %d %d times; want 1", i, got)
				}
			}
			if got := standbyAsked.total(); got != 0 {
				t.Errorf("the standby was asked for %d blocks; want 0 while the primary serves", got)
			}
		})
	}
}

func TestBlocksComeFromTheStandbyWhenThePrimaryIsUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name string
		// served is whether the primary serves block 0 before it becomes unreachable: its
		// server stops then, and the fetcher holds an idle connection to it.
		served bool
	}{
		{"nothing listens at its address", false},
		{"its server stopped after serving a block", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tt := newTestTask(32 * blockSize)
			standby, standbyAsked := newAskedNode(t, "standby", nil)
			tt.holdAll(standby)
			var (
				primaryAddr string
				stop        func()
			)
			if tc.served {
				primary := newNode(t, "primary", nil)
				tt.holdAll(primary)
				primaryAddr, stop = primary.addr, func() { primary.server.Close() }
			} else {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				primaryAddr = ln.Addr().String()
				ln.Close() // nobody serves the primary's address
			}
			rep := &reporter{}
			f := newTaskFetcher(t, tt, parents{{ID: "primary", Addr: primaryAddr, Primary: true}, {ID: "standby", Addr: standby.addr}}, fetch.WithReporter(rep))
			blocks := allBlocks(tt)
			if tc.served {
				fillBlocks(t, f, tt, blocks[:1], false)
				if got := standbyAsked.total(); got != 0 {
					t.Fatalf("the standby was asked for %d blocks while the primary served; want 0", got)
				}
				stop()
				blocks = blocks[1:]
			}
			fillBlocks(t, f, tt, blocks, true)
			for _, i := range blocks {
				if got := standbyAsked.times(i); got != 1 {
					t.Errorf("the standby was asked for block %d %d times; want 1", i, got)
				}
			}
			if got := rep.count(fetch.ReasonConnection); got == 0 {
				t.Errorf("%d requests to the primary failed to connect; want at least 1: was it never asked?", got)
			}
		})
	}
}

func TestABlockThePrimaryLacksComesFromTheStandby(t *testing.T) {
	for _, tc := range []struct {
		name string
		// primary starts the primary parent: its holder counts the requests for each block.
		primary func(t *testing.T, tt *testTask) (*node, *askedHolder)
		blocks  []int          // fetched at once
		lacking func(int) bool // the blocks the primary lacks
	}{
		{
			name: "it answers not held for one block",
			primary: func(t *testing.T, tt *testTask) (*node, *askedHolder) {
				n, h := newAskedNode(t, "primary", func(i int) bool { return i == 3 })
				tt.holdAll(n)
				return n, h
			},
			blocks:  []int{0, 1, 2, 3, 4, 5, 6, 7},
			lacking: func(i int) bool { return i == 3 },
		},
		{
			// The primary is receiving the task but never gets these blocks: it answers
			// not held after waiting a little for a request for them to go out.
			name: "it is receiving the task but gets none of it",
			primary: func(t *testing.T, tt *testTask) (*node, *askedHolder) {
				n, h := newAskedNode(t, "primary", nil)
				n.registry.Expect(tt.id)
				return n, h
			},
			blocks:  []int{0, 1, 2, 3},
			lacking: func(int) bool { return true },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tt := newTestTask(8 * blockSize)
			primary, primaryAsked := tc.primary(t, tt)
			standby, standbyAsked := newAskedNode(t, "standby", nil)
			tt.holdAll(standby)
			f := newTaskFetcher(t, tt, parents{{ID: "primary", Addr: primary.addr, Primary: true}, {ID: "standby", Addr: standby.addr}})
			fillBlocks(t, f, tt, tc.blocks, true)
			for _, i := range tc.blocks {
				wantPrimary, wantStandby := 1, 0
				if tc.lacking(i) {
					wantPrimary, wantStandby = fetch.PrimaryLacks, 1
				}
				if got := primaryAsked.times(i); got != wantPrimary {
					t.Errorf("the primary was asked for block %d %d times; want %d", i, got, wantPrimary)
				}
				if got := standbyAsked.times(i); got != wantStandby {
					t.Errorf("the standby was asked for block %d %d times; want %d", i, got, wantStandby)
				}
			}
		})
	}
}

func TestHasPrimary(t *testing.T) {
	for _, tc := range []struct {
		name string
		// primary starts the parent listed first; named says the ParentSource names it primary.
		primary func(t *testing.T, tt *testTask) *node
		named   bool
		want    bool
	}{
		{"no primary named", holdingNode, false, false},
		{"a primary named", holdingNode, true, true},
		{"the primary named sent a corrupt block", corruptNode, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tt := newTestTask(4 * blockSize)
			first := tc.primary(t, tt)
			second := holdingNode(t, tt)
			f := newTaskFetcher(t, tt, parents{{ID: "first", Addr: first.addr, Primary: tc.named}, {ID: "second", Addr: second.addr}})
			if f.HasPrimary() {
				t.Error("HasPrimary before any fetch: got true; want false, no parent is known yet")
			}
			fillBlocks(t, f, tt, []int{0}, false)
			if got := f.HasPrimary(); got != tc.want {
				t.Errorf("HasPrimary after a fetch: got %v; want %v", got, tc.want)
			}
		})
	}
}

// holdingNode starts a node that holds the whole task.
func holdingNode(t *testing.T, tt *testTask) *node {
	t.Helper()
	n := newNode(t, "holder", nil)
	tt.holdAll(n)
	return n
}

// corruptNode starts a node that holds the whole task and serves corrupt copies of its blocks.
func corruptNode(t *testing.T, tt *testTask) *node {
	t.Helper()
	scratch, err := blockcache.New(64<<20, blockcache.WithBlockSize(blockSize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scratch.Close() }) // registered first, so run after the node's server closes
	n := newNode(t, "corrupt", func(r *tasks.Registry) peer.Holder { return &corruptHolder{Registry: r, scratch: scratch} })
	tt.holdAll(n)
	return n
}

// TestReaderVerifiesAndRejects: blocks of a blob whose reader checks them (an eStargz blob)
// come from an origin that vouches for no digests; a block the reader rejects sets its
// sender aside, and the block comes again from another parent.
func TestReaderVerifiesAndRejects(t *testing.T) {
	tt := newTestTask(3*blockSize + 99)
	origin := newNode(t, "origin", nil)
	origin.registry.OnDemand(tt.id, tt.table.Count(), blockcache.FillerFunc(func(_ context.Context, k layer.BlockKey, buf []byte) (int, error) {
		return copy(buf, tt.block(k.Index)), nil
	}))
	scratch, err := blockcache.New(8<<20, blockcache.WithBlockSize(blockSize))
	if err != nil {
		t.Fatal(err)
	}
	defer scratch.Close()
	bad := newNode(t, "bad", func(r *tasks.Registry) peer.Holder { return &corruptHolder{Registry: r, scratch: scratch} })
	bad.registry.OnDemand(tt.id, tt.table.Count(), blockcache.FillerFunc(func(_ context.Context, k layer.BlockKey, buf []byte) (int, error) {
		return copy(buf, tt.block(k.Index)), nil
	}))

	child := newNode(t, "child", nil)
	rep := &reporter{}
	f, err := fetch.New(peer.NewClient(), fetch.Task{ID: tt.id, Size: int64(len(tt.data)), BlockSize: blockSize, ReaderVerifies: true},
		parents{{ID: "bad", Addr: bad.addr, Primary: true}, {ID: "origin", Addr: origin.addr}}, fetch.WithReporter(rep))
	if err != nil {
		t.Fatal(err)
	}
	read := func(i int) []byte {
		b, err := child.cache.Get(t.Context(), layer.BlockKey{Task: tt.id, Index: i}, f)
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		defer b.Release()
		return bytes.Clone(b.Bytes())
	}
	if got := read(1); bytes.Equal(got, tt.block(1)) {
		t.Fatal("the primary's block was intact: the test's corrupt parent did not corrupt it")
	}
	if got := f.Reject(1, layer.ErrDigestMismatch); got != bad.addr {
		t.Fatalf("Reject named %q; want the corrupt parent %s", got, bad.addr)
	}
	if got := rep.count(fetch.ReasonDigestMismatch); got != 1 {
		t.Errorf("reported %d corrupt blocks; want 1", got)
	}
	child.cache.Remove(layer.BlockKey{Task: tt.id, Index: 1})
	for i := range tt.table.Count() {
		if got := read(i); !bytes.Equal(got, tt.block(i)) {
			t.Fatalf("block %d after the reject: corrupt; want it from the origin", i)
		}
	}
	if got := f.Reject(1, layer.ErrDigestMismatch); got != origin.addr {
		t.Errorf("Reject of a good block named %q; want the origin %s", got, origin.addr)
	}
	if got := f.Reject(1, layer.ErrDigestMismatch); got != "" {
		t.Errorf("second Reject of the same fill named %q; want none", got)
	}
	// A block a parent sent (the origin, in the loop above), then filled from elsewhere
	// (the registry), blames no parent.
	f.FilledElsewhere(2)
	if got := f.Reject(2, layer.ErrDigestMismatch); got != "" {
		t.Errorf("Reject of a block filled elsewhere named %q; want none", got)
	}
}
