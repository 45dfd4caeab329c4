package p2p_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/fetch"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/p2p/tasks"
	"github.com/p2pimage/p2p-snapshotter/p2p/wire"
)

const testBlockSize = 64 << 10

// memRanges is a registry holding one blob, counting the bytes it serves.
type memRanges struct {
	blob   []byte
	served atomic.Int64
}

func (m *memRanges) ReadBlobRange(_ context.Context, _, _ string, _ digest.Digest, off, n int64) (io.ReadCloser, error) {
	if off < 0 || off+n > int64(len(m.blob)) {
		return nil, errors.New("range outside the blob")
	}
	m.served.Add(n)
	return io.NopCloser(bytes.NewReader(m.blob[off : off+n])), nil
}

// staticScheduler gives every registration one directive and one list of parents.
type staticScheduler struct {
	directive p2p.Directive
	holding   atomic.Int64 // Holding calls
	// registered counts Register calls, private those of private layers.
	registered, private atomic.Int64
	mu                  sync.Mutex
	parents             []fetch.Parent
}

func (s *staticScheduler) Register(_ context.Context, _ seed.Source, _ int64, private bool) (p2p.Registration, error) {
	s.registered.Add(1)
	if private {
		s.private.Add(1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return p2p.Registration{Directive: s.directive, Parents: slices.Clone(s.parents)}, nil
}

func (s *staticScheduler) Parents(context.Context, layer.TaskID, []string) ([]fetch.Parent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.parents), nil
}

func (s *staticScheduler) BlockFetched(layer.TaskID, int, string, time.Duration)      {}
func (s *staticScheduler) BlockFailed(layer.TaskID, int, string, fetch.Reason, error) {}

func (s *staticScheduler) Holding(context.Context, layer.TaskID, int64) error {
	s.holding.Add(1)
	return nil
}

func newScheduler(d p2p.Directive) *staticScheduler { return &staticScheduler{directive: d} }

// add names n a parent, the primary one if primary.
func (s *staticScheduler) add(id string, n *testNode, primary bool) *staticScheduler {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parents = append(s.parents, fetch.Parent{ID: id, Addr: n.addr, Primary: primary})
	return s
}

// read reads size bytes of r at off.
func read(t *testing.T, r io.ReaderAt, off, size int) []byte {
	t.Helper()
	p := make([]byte, size)
	if _, err := r.ReadAt(p, int64(off)); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read %d bytes at %d: %v", size, off, err)
	}
	return p
}

// testNode is a node with a block server on loopback and a registry of its own.
type testNode struct {
	*p2p.Node
	registry *tasks.Registry
	cache    *blockcache.Cache
	ranges   *memRanges
	addr     string
	served   atomic.Int64 // blocks its server handed out
	corrupt  bool         // it flips a byte of every block it serves
	scratch  *blockcache.Cache
}

func newTestNode(t *testing.T, blob []byte, sched p2p.Scheduler, corrupt bool, opts ...p2p.NodeOption) *testNode {
	t.Helper()
	cache, err := blockcache.New(16<<20, blockcache.WithBlockSize(testBlockSize))
	if err != nil {
		t.Fatal(err)
	}
	scratch, err := blockcache.New(4<<20, blockcache.WithBlockSize(testBlockSize))
	if err != nil {
		t.Fatal(err)
	}
	record := tasks.New(cache)
	ranges := &memRanges{blob: blob}
	seeds, err := seed.New(t.TempDir(), cache, ranges, seed.WithObserver(record))
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{registry: record, cache: cache, ranges: ranges, corrupt: corrupt, scratch: scratch}
	if sched == nil {
		sched = newScheduler(p2p.BackToSource)
	}
	n.Node = p2p.NewNode(cache, record, seeds, sched, append([]p2p.NodeOption{p2p.WithBlobRanges(n.ranges)}, opts...)...)
	srv := peer.NewServer(n)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = ln.Addr().String()
	go srv.Serve(context.Background(), ln)
	t.Cleanup(func() {
		srv.Close()
		n.Node.Close()
		seeds.Close()
		scratch.Close()
		cache.Close()
	})
	return n
}

// Block implements peer.Holder: the node's block, corrupted if the node is corrupt.
func (n *testNode) Block(ctx context.Context, id layer.TaskID, i int) (*blockcache.Block, error) {
	b, err := n.registry.Block(ctx, id, i)
	if err != nil || !n.corrupt {
		if err == nil {
			n.served.Add(1)
		}
		return b, err
	}
	defer b.Release()
	data := b.Bytes()
	n.served.Add(1)
	return n.scratch.Get(ctx, layer.BlockKey{Task: id, Index: i}, blockcache.FillerFunc(func(_ context.Context, _ layer.BlockKey, buf []byte) (int, error) {
		c := copy(buf, data)
		buf[c/2] ^= 0x55
		return c, nil
	}))
}

func (n *testNode) Table(ctx context.Context, id layer.TaskID, from int) (wire.TablePart, error) {
	return n.registry.Table(ctx, id, from)
}

func (n *testNode) Index(ctx context.Context, id layer.TaskID) ([]byte, error) {
	return n.registry.Index(ctx, id)
}

func (n *testNode) Held(id layer.TaskID) ([]byte, error) { return n.registry.Held(id) }

func testBlob(size int) ([]byte, seed.Source) {
	blob := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), 7))
	for i := range blob {
		blob[i] = byte(r.Uint32())
	}
	return blob, seed.Source{Host: "registry.test", Repository: "app",
		Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(blob), Size: int64(size)}}
}

// TestBlobRangesComeFromPeers: the origin of a blob reads exactly the ranges it is asked
// from the registry; a peer reads the same ranges from the origin's blocks, and a second
// peer from either, so the registry serves each block the peers read once, besides what the
// origin's own reads took; and a peer serves the blocks it read to a third.
func TestBlobRangesComeFromPeers(t *testing.T) {
	blob, src := testBlob(6*testBlockSize + 1234)
	origin := newTestNode(t, blob, nil, false)
	ro, err := origin.Blob(t.Context(), src)
	if err != nil {
		t.Fatal(err)
	}
	reads := []struct{ off, size int }{{100, 300}, {testBlockSize - 10, 20}, {5*testBlockSize + 1000, 234}}
	for _, rd := range reads {
		if got := read(t, ro, rd.off, rd.size); !bytes.Equal(got, blob[rd.off:rd.off+rd.size]) {
			t.Fatalf("origin: wrong bytes at %d", rd.off)
		}
	}
	if got, want := origin.ranges.served.Load(), int64(300+20+234); got != want {
		t.Fatalf("the origin's reads took %d bytes from the registry; want exactly the %d asked", got, want)
	}

	a := newTestNode(t, blob, newScheduler(p2p.FetchFromParents).add("origin", origin, true), false)
	ra, err := a.Blob(t.Context(), src)
	if err != nil {
		t.Fatal(err)
	}
	for _, rd := range reads {
		if got := read(t, ra, rd.off, rd.size); !bytes.Equal(got, blob[rd.off:rd.off+rd.size]) {
			t.Fatalf("peer: wrong bytes at %d", rd.off)
		}
	}
	if got := a.ranges.served.Load(); got != 0 {
		t.Errorf("the peer read %d bytes from the registry; want none", got)
	}
	// Blocks 0, 1 and 5, each read from the registry once by the origin.
	if got, want := origin.ranges.served.Load()-(300+20+234), int64(3*testBlockSize); got != want {
		t.Errorf("the origin read %d more bytes from the registry for the peer; want its 3 blocks, %d", got, want)
	}

	before := origin.ranges.served.Load()
	b := newTestNode(t, blob, newScheduler(p2p.FetchFromParents).add("a", a, false).add("origin", origin, false), false)
	rb, err := b.Blob(t.Context(), src)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, rb, 0, len(blob)); !bytes.Equal(got, blob) {
		t.Fatal("second peer: wrong bytes")
	}
	if got := b.ranges.served.Load(); got != 0 {
		t.Errorf("the second peer read %d bytes from the registry; want none", got)
	}
	if got, want := origin.ranges.served.Load()-before, int64(3*testBlockSize+1234); got != want {
		t.Errorf("the origin read %d bytes from the registry for the second peer; want the 4 blocks no one had read, %d", got, want)
	}

	// A peer whose only parent is the first peer reads what that peer holds from it.
	c := newTestNode(t, blob, newScheduler(p2p.FetchFromParents).add("a", a, false), false)
	rc, err := c.Blob(t.Context(), src)
	if err != nil {
		t.Fatal(err)
	}
	before, servedByA := origin.ranges.served.Load(), a.served.Load()
	if got := read(t, rc, 0, 2*testBlockSize); !bytes.Equal(got, blob[:2*testBlockSize]) {
		t.Fatal("third peer: wrong bytes")
	}
	if got := a.served.Load() - servedByA; got != 2 {
		t.Errorf("the first peer served %d blocks to the third; want its blocks 0 and 1", got)
	}
	if c.ranges.served.Load() != 0 || origin.ranges.served.Load() != before {
		t.Errorf("the registry served %d bytes to the third peer and %d to the origin; want none", c.ranges.served.Load(), origin.ranges.served.Load()-before)
	}
}

// TestRejectedBlobBlocks: a peer whose only parent corrupts every block reads wrong bytes
// once; Reject drops them, sets the parent aside, and the read comes again from the
// registry; later blocks come from the honest origin, never from the corrupt parent.
func TestRejectedBlobBlocks(t *testing.T) {
	blob, src := testBlob(4 * testBlockSize)
	origin := newTestNode(t, blob, nil, false)
	if err := origin.SeedLayer(t.Context(), seed.Source{Host: src.Host, Repository: src.Repository, Blob: src.Blob, RandomAccess: true}); err != nil {
		t.Fatal(err)
	}
	bad := newTestNode(t, blob, nil, true)
	if _, err := bad.Blob(t.Context(), src); err != nil {
		t.Fatal(err)
	}
	// The corrupt parent is the only one at first; the origin joins after the first read.
	sched := newScheduler(p2p.FetchFromParents).add("bad", bad, false)
	child := newTestNode(t, blob, sched, false)
	r, err := child.Blob(t.Context(), src)
	if err != nil {
		t.Fatal(err)
	}
	mid := testBlockSize/2 - 50 // the corrupt parent flips the middle byte of a block
	if got := read(t, r, mid, 100); bytes.Equal(got, blob[mid:mid+100]) {
		t.Fatal("the corrupt parent's block was intact: was it asked?")
	}
	sched.add("origin", origin, false)
	r.Reject(int64(mid), 100)
	if got := read(t, r, mid, 100); !bytes.Equal(got, blob[mid:mid+100]) {
		t.Fatal("after Reject: still the wrong bytes")
	}
	if got := child.ranges.served.Load(); got != testBlockSize {
		t.Errorf("after Reject the child read %d bytes from the registry; want the rejected block, %d", got, testBlockSize)
	}
	badServed := bad.served.Load()
	if got := read(t, r, testBlockSize, 3*testBlockSize); !bytes.Equal(got, blob[testBlockSize:]) {
		t.Fatal("blocks after the reject: wrong bytes")
	}
	if got := bad.served.Load(); got != badServed {
		t.Errorf("the corrupt parent served %d more blocks after it was rejected; want none", got-badServed)
	}
	if got := child.ranges.served.Load(); got != testBlockSize {
		t.Errorf("the child read %d bytes from the registry; want only the rejected block (%d): the rest from the origin", got, testBlockSize)
	}
}

// TestBlobWithoutParentsReadsTheRegistry: a peer whose parents are all gone reads its blocks
// from the registry: time, not failure.
func TestBlobWithoutParentsReadsTheRegistry(t *testing.T) {
	blob, src := testBlob(2*testBlockSize + 5)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there any more
	sched := newScheduler(p2p.FetchFromParents)
	sched.parents = []fetch.Parent{{ID: "dead", Addr: dead}}
	n := newTestNode(t, blob, sched, false)
	r, err := n.Blob(t.Context(), src)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, r, 0, len(blob)); !bytes.Equal(got, blob) {
		t.Fatal("wrong bytes")
	}
}

// TestStreamBlob: a peer streams a blob as stored, front to back, from its parents, checked
// against the blob digest; blocks from a corrupt parent fail the whole with ErrDigestMismatch,
// and the next try reads the blob from the registry and succeeds.
func TestStreamBlob(t *testing.T) {
	blob, src := testBlob(5*testBlockSize + 77)
	origin := newTestNode(t, blob, nil, false)
	if _, err := origin.Blob(t.Context(), src); err != nil {
		t.Fatal(err)
	}
	peer := newTestNode(t, blob, newScheduler(p2p.FetchFromParents).add("origin", origin, false), false)
	var out bytes.Buffer
	if n, err := peer.StreamBlob(t.Context(), &out, src); err != nil || n != int64(len(blob)) || !bytes.Equal(out.Bytes(), blob) {
		t.Fatalf("got %d bytes, %v; want the blob", n, err)
	}
	if got := peer.ranges.served.Load(); got != 0 {
		t.Errorf("the peer read %d bytes from the registry; want none", got)
	}

	bad := newTestNode(t, blob, nil, true)
	if _, err := bad.Blob(t.Context(), src); err != nil {
		t.Fatal(err)
	}
	victim := newTestNode(t, blob, newScheduler(p2p.FetchFromParents).add("bad", bad, false), false)
	if _, err := victim.StreamBlob(t.Context(), io.Discard, src); !errors.Is(err, layer.ErrDigestMismatch) {
		t.Fatalf("from a corrupt parent: got %v; want ErrDigestMismatch", err)
	}
	out.Reset()
	if _, err := victim.StreamBlob(t.Context(), &out, src); err != nil || !bytes.Equal(out.Bytes(), blob) {
		t.Fatalf("second try: got %v; want the blob, from the registry", err)
	}
	if got := victim.ranges.served.Load(); got != int64(len(blob)) {
		t.Errorf("the second try read %d bytes from the registry; want the blob, %d", got, len(blob))
	}
}
