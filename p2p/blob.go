package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/fetch"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/p2p/stream"
)

// BlobRanges reads ranges of registry blobs with this node's own credentials.
// registry.Client satisfies it.
type BlobRanges interface {
	ReadBlobRange(ctx context.Context, host, repository string, dgst digest.Digest, offset, length int64) (io.ReadCloser, error)
}

// WithBlobRanges lets the node read blobs at random from their registries (Blob).
func WithBlobRanges(r BlobRanges) NodeOption { return func(nd *Node) { nd.ranges = r } }

// blobTask is this node's part in a blob task: the blob's bytes as stored, cut into the
// cache's blocks, which carry no digests (see Blob).
type blobTask struct {
	task layer.TaskID
	size int64
	// origin reads the blob's ranges from its registry; fetcher, nil on the blob's origin
	// node, fills blocks from parents.
	origin  *originFill
	fetcher *fetch.Fetcher

	mu sync.Mutex
	// distrusted holds the blocks a reader rejected: they are filled from the registry from
	// then on, never from a parent again.
	distrusted map[int]bool
	// parentsFailed is when parents last failed to deliver a block in time; for
	// blobParentPause after it, blocks come from the registry.
	parentsFailed time.Time
	// heldAsked is when the parents were last asked which blocks they hold.
	heldAsked time.Time
}

// Blob returns a reader of the blob src names, its bytes as stored in the registry: an
// eStargz or zstd:chunked layer, read at random. The blob is a task of its own, named by its
// digest and cut into the blocks of any other task, so peers serve its ranges as they serve
// blocks of a layer's stream. The blocks carry no digests: the reader's caller checks what it
// reads (each chunk against the layer's TOC) and calls Reject when a range fails.
//
// The scheduler decides where the blocks come from. On the blob's origin node (sent back to
// source, seeding it, or with no scheduler) a read takes exactly the range it asks from the
// registry, unless cached, and a peer asking for a block gets it read from the registry
// once; elsewhere a read takes the blocks from parents, and from the registry only what no
// parent could deliver or a reader rejected. A scheduler that cannot be reached makes this
// node the origin. Reads use ctx, so the reader is usable as long as ctx is.
func (n *Node) Blob(ctx context.Context, src seed.Source) (*BlobReader, error) {
	src.RandomAccess = true
	if err := src.Blob.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("blob %q: %w", src.Blob.Digest, err)
	}
	if src.Blob.Size <= 0 {
		return nil, fmt.Errorf("blob %s: size %d", src.Blob.Digest, src.Blob.Size)
	}
	if n.ranges == nil {
		return nil, fmt.Errorf("blob %s: this node reads no registry ranges (WithBlobRanges)", src.Blob.Digest)
	}
	task := src.Task()
	n.mu.Lock()
	bt := n.blobs[task]
	n.mu.Unlock()
	if bt != nil {
		return &BlobReader{ctx: ctx, node: n, bt: bt}, nil
	}
	var reg Registration
	shared, private := n.shared(ctx, src)
	if shared {
		var err error
		if reg, err = n.sched.Register(ctx, src, int64(n.cache.BlockSize()), private); err != nil {
			log.G(ctx).WithError(err).WithField("task", task).Warn("cannot register a blob with the scheduler; reading it from its registry")
			shared = false
		}
	}
	if !shared || reg.Directive != FetchFromParents {
		bt = n.blobOrigin(ctx, src, shared)
	} else {
		var err error
		if bt, err = n.blobFromParents(src); err != nil {
			return nil, err
		}
	}
	return &BlobReader{ctx: ctx, node: n, bt: bt}, nil
}

// StreamBlob writes the blob src names, as stored in its registry (compressed, for most
// layers), to w front to back in stream mode: its blocks come through the cache a window at a
// time, from parents, or from the registry on the blob's origin, and the whole is checked
// against the blob digest before its last block is written. Blocks from parents carry no
// digests: if the whole does not match, the error wraps layer.ErrDigestMismatch and every
// block of the blob is read from the registry from then on, so a second try succeeds.
func (n *Node) StreamBlob(ctx context.Context, w io.Writer, src seed.Source) (int64, error) {
	r, err := n.Blob(ctx, src)
	if err != nil {
		return 0, err
	}
	bt := r.bt
	var fill blockcache.Filler = bt.origin
	if bt.fetcher != nil {
		fill = bt
	}
	written, err := stream.Copy(ctx, w, n.cache, stream.Task{ID: bt.task, Size: bt.size, Digest: src.Blob.Digest}, fill, stream.WithWindow(n.window))
	if errors.Is(err, layer.ErrDigestMismatch) {
		bt.mu.Lock()
		for i := range layer.BlockCount(bt.size, int64(n.cache.BlockSize())) {
			bt.distrusted[i] = true
		}
		bt.mu.Unlock()
	}
	if err != nil {
		return written, fmt.Errorf("stream blob %s: %w", src.Blob.Digest, err)
	}
	return written, nil
}

// blobOrigin makes this node the origin of the blob src names: it serves every block,
// reading what it has not cached from the registry when asked. With tell, it tells the
// scheduler so.
func (n *Node) blobOrigin(ctx context.Context, src seed.Source, tell bool) *blobTask {
	task := src.Task()
	n.mu.Lock()
	bt := n.blobs[task]
	if bt == nil || bt.fetcher != nil {
		bt = &blobTask{task: task, size: src.Blob.Size, origin: n.originFill(src, false), distrusted: make(map[int]bool)}
		n.blobs[task] = bt
	}
	n.mu.Unlock()
	n.registry.OnDemand(task, layer.BlockCount(bt.size, int64(n.cache.BlockSize())), bt.origin)
	if tell {
		if err := n.sched.Holding(ctx, task, bt.size); err != nil {
			log.G(ctx).WithError(err).WithField("task", task).Warn("cannot tell the scheduler this node is a blob's origin")
		}
	}
	return bt
}

// blobFromParents returns the blob src names read from parents: the one this node reads
// already, or a new one.
func (n *Node) blobFromParents(src seed.Source) (*blobTask, error) {
	task := src.Task()
	n.mu.Lock()
	defer n.mu.Unlock()
	if bt := n.blobs[task]; bt != nil {
		return bt, nil
	}
	f, err := fetch.New(n.client, fetch.Task{ID: task, Size: src.Blob.Size, BlockSize: int64(n.cache.BlockSize()), ReaderVerifies: true}, randomAccess{n.sched},
		n.fetchOptions(fetch.WithNoParentTimeout(blobParentWait))...)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", src.Blob.Digest, err)
	}
	n.registry.Expect(task)
	bt := &blobTask{task: task, size: src.Blob.Size, origin: n.originFill(src, true), fetcher: f, distrusted: make(map[int]bool)}
	n.blobs[task] = bt
	return bt, nil
}

// seedBlob makes this node the origin of the blob src names, as a seed the scheduler sent it.
func (n *Node) seedBlob(ctx context.Context, src seed.Source) error {
	if n.ranges == nil {
		return fmt.Errorf("blob %s: this node reads no registry ranges (WithBlobRanges)", src.Blob.Digest)
	}
	if err := src.Blob.Digest.Validate(); err != nil || src.Blob.Size <= 0 {
		return fmt.Errorf("blob %q of size %d: not a blob to seed", src.Blob.Digest, src.Blob.Size)
	}
	n.blobOrigin(ctx, src, true)
	return nil
}

// blobParentWait bounds how long a block of a blob waits for a usable parent that has it,
// and blobParentBudget all its requests to parents, before it is read from the registry
// instead: unlike a block of a layer's stream, a range of a blob is always at hand there.
// After such a failure the blob's blocks come from the registry for blobParentPause, so that
// a read that spans many blocks pays the budget once, not once a block, while the scheduler
// finds new parents.
const (
	blobParentWait   = 2 * time.Second
	blobParentBudget = 5 * time.Second
	blobParentPause  = 10 * time.Second
)

// FillBlock implements blockcache.Filler on a node that is not the blob's origin: the block
// from parents, or from the registry if none delivered it in time or a reader rejected it.
func (bt *blobTask) FillBlock(ctx context.Context, key layer.BlockKey, buf []byte) (int, error) {
	bt.mu.Lock()
	fromParents := !bt.distrusted[key.Index] && time.Since(bt.parentsFailed) >= blobParentPause
	askHeld := fromParents && time.Since(bt.heldAsked) >= blobHeldInterval
	if askHeld {
		bt.heldAsked = time.Now()
	}
	bt.mu.Unlock()
	if askHeld {
		hctx, cancel := context.WithTimeout(ctx, blobHeldWait)
		bt.fetcher.UpdateHeld(hctx)
		cancel()
	}
	if fromParents {
		pctx, cancel := context.WithTimeout(ctx, blobParentBudget)
		n, err := bt.fetcher.FillBlock(pctx, key, buf)
		cancel()
		if err == nil || ctx.Err() != nil {
			return n, err
		}
		bt.mu.Lock()
		bt.parentsFailed = time.Now()
		bt.mu.Unlock()
		log.G(ctx).WithError(err).WithFields(log.Fields{"task": bt.task, "block": key.Index, "pause": blobParentPause}).Warn("no parent delivered a blob's block; reading the blob from the registry for a while")
	}
	bt.fetcher.FilledElsewhere(key.Index) // a parent that sent it before is not to blame now
	return bt.origin.FillBlock(ctx, key, buf)
}

// blobHeldInterval is how often, at most, a blob's reader asks its parents which blocks they
// hold, waiting blobHeldWait at most: a blob is read at random, and a parent asked for a
// block it lacks costs the read a round trip and notYetWait.
const (
	blobHeldInterval = time.Second
	blobHeldWait     = 250 * time.Millisecond
)

// randomAccess passes on the scheduler's parents for a blob without the mark of a primary
// parent: a primary is asked for every block in order, as a pipeline is fed, while a blob is
// read at random, and a parent that holds a block is the one to ask.
type randomAccess struct{ fetch.ParentSource }

func (r randomAccess) Parents(ctx context.Context, task layer.TaskID, exclude []string) ([]fetch.Parent, error) {
	ps, err := r.ParentSource.Parents(ctx, task, exclude)
	for i := range ps {
		ps[i].Primary = false
	}
	return ps, err
}

// originFill reads ranges and whole blocks of one blob from its registry.
type originFill struct {
	ranges           BlobRanges
	host, repository string
	dgst             digest.Digest
	size, blockSize  int64
	// landing, if set, learns of each block filled, so that this node's children may ask it
	// for the block (on a node that is not the origin, whose every block is held anyway).
	landing interface{ Landed(layer.TaskID, int) }
	// observe, if set, is told how long each read took.
	observe func(source string, took time.Duration)
}

func (n *Node) originFill(src seed.Source, tellLanding bool) *originFill {
	o := &originFill{ranges: n.ranges, host: src.Host, repository: src.Repository, dgst: src.Blob.Digest, size: src.Blob.Size,
		blockSize: int64(n.cache.BlockSize()), observe: n.observe}
	if tellLanding {
		o.landing = n.registry
	}
	return o
}

// readAt reads p, which lies within the blob, from offset off: one Range request.
func (o *originFill) readAt(ctx context.Context, p []byte, off int64) error {
	start := time.Now()
	rc, err := o.ranges.ReadBlobRange(ctx, o.host, o.repository, o.dgst, off, int64(len(p)))
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, p); err != nil {
		return fmt.Errorf("blob %s at %d: %w", o.dgst, off, err)
	}
	if o.observe != nil {
		o.observe(SourceRegistry, time.Since(start))
	}
	return nil
}

// FillBlock implements blockcache.Filler: the block read from the registry.
func (o *originFill) FillBlock(ctx context.Context, key layer.BlockKey, buf []byte) (int, error) {
	off := int64(key.Index) * o.blockSize
	n := min(o.blockSize, o.size-off)
	if key.Index < 0 || n <= 0 || int64(len(buf)) < n {
		return 0, fmt.Errorf("block %d of the %d-byte blob %s: out of range", key.Index, o.size, o.dgst)
	}
	if err := o.readAt(ctx, buf[:n], off); err != nil {
		return 0, fmt.Errorf("block %d: %w", key.Index, err)
	}
	if o.landing != nil {
		o.landing.Landed(key.Task, key.Index)
	}
	return int(n), nil
}

// BlobReader reads a blob at random (see Node.Blob). It is safe for concurrent use.
type BlobReader struct {
	ctx  context.Context
	node *Node
	bt   *blobTask
}

// Size returns the blob's length in bytes.
func (r *BlobReader) Size() int64 { return r.bt.size }

// ReadAt implements io.ReaderAt. The bytes are the registry's or a peer's, unchecked: see
// Reject.
func (r *BlobReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blob %s: negative offset %d", r.bt.task, off)
	}
	if off >= r.bt.size {
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), r.bt.size-off)]
	var err error
	if r.bt.fetcher == nil {
		err = r.readOrigin(want, off)
	} else {
		err = r.readBlocks(want, off)
	}
	if err != nil {
		return 0, err
	}
	if len(want) < len(p) {
		return len(want), io.EOF
	}
	return len(p), nil
}

// readOrigin reads p at off on the origin node: from cached blocks if every one it spans is
// cached (a peer asked for them), otherwise exactly that range from the registry, as a
// reader with no peers would.
func (r *BlobReader) readOrigin(p []byte, off int64) error {
	bs := int64(r.node.cache.BlockSize())
	var blocks []*blockcache.Block
	defer func() {
		for _, b := range blocks {
			b.Release()
		}
	}()
	for i := off / bs; i <= (off+int64(len(p))-1)/bs; i++ {
		b, err := r.node.cache.Lookup(r.ctx, layer.BlockKey{Task: r.bt.task, Index: int(i)})
		if err != nil {
			return r.bt.origin.readAt(r.ctx, p, off)
		}
		blocks = append(blocks, b)
	}
	for _, b := range blocks {
		start := int64(b.Key().Index) * bs
		lo, hi := max(off, start), min(off+int64(len(p)), start+int64(len(b.Bytes())))
		copy(p[lo-off:hi-off], b.Bytes()[lo-start:hi-start])
	}
	return nil
}

// readBlocks reads p at off through the cache, block by block: from parents, or from the
// registry for a block none could deliver or a reader rejected.
func (r *BlobReader) readBlocks(p []byte, off int64) error {
	bs := int64(r.node.cache.BlockSize())
	for done := 0; done < len(p); {
		pos := off + int64(done)
		i := int(pos / bs)
		b, err := r.node.cache.Get(r.ctx, layer.BlockKey{Task: r.bt.task, Index: i}, r.bt)
		if err != nil {
			return fmt.Errorf("blob %s: %w", r.bt.task, err)
		}
		data := b.Bytes()
		c := 0
		if in := pos - int64(i)*bs; in < int64(len(data)) {
			c = copy(p[done:], data[in:])
		}
		b.Release()
		if c == 0 {
			return fmt.Errorf("blob %s: block %d holds %d bytes: %w", r.bt.task, i, len(data), io.ErrUnexpectedEOF)
		}
		done += c
	}
	return nil
}

// Reject tells the reader that the bytes it read at [off, off+n) failed their check (a
// chunk's digest): the blocks holding them are dropped from the cache, the parents that sent
// them set aside for the blob, and later reads of them go to the registry.
func (r *BlobReader) Reject(off, n int64) {
	bs := int64(r.node.cache.BlockSize())
	if off < 0 || n <= 0 || off >= r.bt.size {
		return
	}
	for i := off / bs; i <= (min(off+n, r.bt.size)-1)/bs; i++ {
		r.bt.mu.Lock()
		r.bt.distrusted[int(i)] = true
		r.bt.mu.Unlock()
		r.node.cache.Remove(layer.BlockKey{Task: r.bt.task, Index: int(i)})
		if r.bt.fetcher == nil {
			continue
		}
		if parent := r.bt.fetcher.Reject(int(i), layer.ErrDigestMismatch); parent != "" {
			log.G(r.ctx).WithFields(log.Fields{"task": r.bt.task, "block": i, "parent": parent}).Warn("a parent sent a blob's block that failed its check; it is set aside for the blob")
		}
	}
}

var _ io.ReaderAt = (*BlobReader)(nil)
