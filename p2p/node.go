package p2p

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/fetch"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/p2p/stream"
	"github.com/p2pimage/p2p-snapshotter/p2p/tasks"
)

// Directive is what the scheduler tells a peer to do for a task.
type Directive int

const (
	// FetchFromParents: fetch from the candidate parents.
	FetchFromParents Directive = iota + 1
	// BackToSource: read the registry; this node becomes a source for the task.
	BackToSource
)

// Registration is the scheduler's answer to a peer joining a task.
type Registration struct {
	Directive Directive
	Parents   []fetch.Parent
}

// Scheduler decides who fetches from whom: a client of p2p-scheduler, or the embedded one.
// Its methods may be called concurrently.
type Scheduler interface {
	// Register joins this node to the task of layer src. blockSize is this node's. A
	// private repository's layer (see WithRegistryAccess) joins the repository's private
	// task, with a proof that this node may read the repository.
	Register(ctx context.Context, src seed.Source, blockSize int64, private bool) (Registration, error)
	// Parents returns candidate parents of task other than those in exclude.
	fetch.ParentSource
	// BlockFetched and BlockFailed report each fetch, for the scheduler's view of parents.
	fetch.Reporter
	// Holding tells the scheduler this node now holds the whole task (it can serve it and
	// vouch for it), or is seeding it.
	Holding(ctx context.Context, task layer.TaskID, size int64) error
}

// bandWindows is how many windows ahead of its reader a Warm may fetch out of order (see
// rarestFirst); heldInterval how often it asks its parents which blocks they hold.
const (
	bandWindows  = 4
	heldInterval = 100 * time.Millisecond
)

// Node is this node's P2P side. It is safe for concurrent use.
type Node struct {
	cache    *blockcache.Cache
	registry *tasks.Registry
	seeds    *seed.Store
	sched    Scheduler
	client   *peer.Client
	window   int

	ranges BlobRanges // reads blobs at random (Blob); nil if this node does not
	stargz bool       // eStargz layers are mounted from their TOC (WithStargzLayers)
	// clientOpts configure the peer client (WithPeerTLS).
	clientOpts []peer.ClientOption
	// observe is told how long each block fetched took and where it came from, or nil.
	observe func(source string, took time.Duration)
	// access tells private repositories' layers from public ones (WithRegistryAccess);
	// peerTLS is set when the node names itself to peers with a certificate (WithPeerTLS).
	access  RegistryAccess
	peerTLS bool
	// admitting asks the scheduler once for concurrent Admit calls about one peer and task.
	admitting singleflight.Group

	mu     sync.Mutex
	layers map[layer.TaskID]*seed.Layer // layers read from peers, one fetcher each
	blobs  map[layer.TaskID]*blobTask   // blobs read at random (Blob)
	// private holds the tasks of private repositories' layers (see Admit), and admitted
	// the answers about who may read them, until when.
	private  map[layer.TaskID]privacy
	admitted map[admission]admitAnswer
}

// NodeOption configures a Node.
type NodeOption func(*Node)

// Sources of a block, as WithFetchObserver names them.
const (
	SourcePeer     = "peer"
	SourceSeed     = "seed"     // a parent reading the registry
	SourceRegistry = "registry" // this node reading the registry, a range of a blob
)

// WithFetchObserver calls observe for each block this node fetches from a parent, and each
// range of a blob it reads from the registry, with where it came from and how long it took.
func WithFetchObserver(observe func(source string, took time.Duration)) NodeOption {
	return func(nd *Node) { nd.observe = observe }
}

// fetchOptions are the options of every fetcher of this node.
func (n *Node) fetchOptions(more ...fetch.Option) []fetch.Option {
	opts := []fetch.Option{fetch.WithLanding(n.registry), fetch.WithReporter(n.sched)}
	if n.observe != nil {
		opts = append(opts, fetch.WithObserver(func(p fetch.Parent, took time.Duration) {
			src := SourcePeer
			if p.Source {
				src = SourceSeed
			}
			n.observe(src, took)
		}))
	}
	return append(opts, more...)
}

// WithWindow sets how many blocks Warm keeps in flight (default 16).
func WithWindow(n int) NodeOption { return func(nd *Node) { nd.window = max(n, 1) } }

// NewNode returns a node. registry must be the observer of seeds (seed.WithObserver), and
// the holder the node's block server serves. sched may be nil: every layer is then read
// from its registry.
func NewNode(cache *blockcache.Cache, registry *tasks.Registry, seeds *seed.Store, sched Scheduler, opts ...NodeOption) *Node {
	n := &Node{cache: cache, registry: registry, seeds: seeds, sched: sched, window: 16,
		layers: make(map[layer.TaskID]*seed.Layer), blobs: make(map[layer.TaskID]*blobTask),
		private: make(map[layer.TaskID]privacy), admitted: make(map[admission]admitAnswer)}
	for _, o := range opts {
		o(n)
	}
	n.client = peer.NewClient(n.clientOpts...)
	return n
}

// WithPeerTLS has the node speak TLS with cfg to its parents (package tlsfiles makes a
// mutual-TLS one); its own block server must then serve TLS too.
func WithPeerTLS(cfg *tls.Config) NodeOption {
	return func(nd *Node) {
		nd.clientOpts = append(nd.clientOpts, peer.WithClientTLS(cfg))
		nd.peerTLS = true
	}
}

// DownloadRate is the rate at which this node has been receiving blocks from peers, bytes/s.
func (n *Node) DownloadRate() int64 { return n.client.DownloadRate() }

// DownloadedBytes is how many bytes of blocks this node has received from peers.
func (n *Node) DownloadedBytes() int64 { return n.client.DownloadedBytes() }

// Close closes the node's connections to peers.
func (n *Node) Close() error { return n.client.Close() }

// indexWait bounds how long a node looks for a layer's index among its parents; a parent
// asked for it may wait parentIndexWait for an index its seed pass is still producing.
const (
	indexWait       = 5 * time.Minute
	parentIndexWait = 30 * time.Second
)

// Open returns a layer this node holds on disk (a layer it seeded), or one it reads from
// peers already; otherwise an error wrapping os.ErrNotExist, as seed.Store.Open.
func (n *Node) Open(task layer.TaskID) (*seed.Layer, error) {
	n.mu.Lock()
	l := n.layers[task]
	n.mu.Unlock()
	if l != nil {
		return l, nil
	}
	return n.seeds.Open(task)
}

// Layer returns the layer src names: held on disk, seeded now from the registry, or read from
// parents on demand, as the scheduler says.
func (n *Node) Layer(ctx context.Context, src seed.Source) (*seed.Layer, error) {
	task := layer.TaskIDFromDigest(src.DiffID)
	shared, private := n.shared(ctx, src) // before a stored layer is served again
	if l, err := n.Open(task); err == nil {
		return l, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).WithField("task", task).Warn("stored layer unusable; fetching it again")
	}
	if !shared {
		return n.seed(ctx, src, false)
	}
	reg, err := n.sched.Register(ctx, src, int64(n.cache.BlockSize()), private)
	if err != nil {
		return nil, fmt.Errorf("layer %s: register with the scheduler: %w", task, err)
	}
	if reg.Directive == BackToSource {
		return n.seed(ctx, src, true)
	}
	x, err := n.indexFromParents(ctx, task, reg.Parents)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", task, err)
	}
	return n.peerLayer(task, x)
}

// peerLayer returns the layer with index x whose blocks come from parents: the one this
// node reads already, or a new one.
func (n *Node) peerLayer(task layer.TaskID, x *layer.Index) (*seed.Layer, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l := n.layers[task]; l != nil {
		return l, nil
	}
	f, err := fetch.New(n.client, fetch.Task{ID: task, Size: x.Blocks.Size, BlockSize: x.Blocks.BlockSize, Digests: x.Blocks.Digests}, n.sched,
		n.fetchOptions()...)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", task, err)
	}
	if _, complete := n.registry.CompleteTable(task); !complete {
		n.registry.Expect(task)
	}
	if enc, err := x.Marshal(); err == nil {
		n.registry.SetIndex(task, enc) // its children may ask this node for it
	}
	l := seed.NewLayer(x, n.cache, f)
	n.layers[task] = l
	return l, nil
}

// seed reads the layer from its registry, telling the scheduler this node is its source
// when tell is set.
func (n *Node) seed(ctx context.Context, src seed.Source, tell bool) (*seed.Layer, error) {
	l, err := n.seeds.Layer(ctx, src)
	if err != nil {
		return nil, err
	}
	if tell {
		if err := n.sched.Holding(ctx, l.Index.Task(), l.Index.Blocks.Size); err != nil {
			log.G(ctx).WithError(err).WithField("task", l.Index.Task()).Warn("cannot tell the scheduler this node holds a layer")
		}
	}
	return l, nil
}

// indexFromParents gets task's index from the parents given, and then from the ones the
// scheduler names, until one has it or indexWait passed: a parent may itself be waiting for
// the index when asked.
func (n *Node) indexFromParents(ctx context.Context, task layer.TaskID, parents []fetch.Parent) (*layer.Index, error) {
	ctx, cancel := context.WithTimeout(ctx, indexWait)
	defer cancel()
	backoff := 50 * time.Millisecond
	failed := map[string]bool{}
	for {
		x, err := n.index(ctx, task, parents, failed, parentIndexWait)
		if err == nil {
			return x, nil
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
		// Parents that failed are left out: the scheduler may not know yet that they died.
		exclude := make([]string, 0, len(failed))
		for id := range failed {
			exclude = append(exclude, id)
		}
		if more, perr := n.sched.Parents(ctx, task, exclude); perr == nil {
			parents = mergeParents(more, parents)
		}
		if len(failed) > 16 {
			clear(failed) // they may have recovered
		}
	}
}

// mergeParents returns the parents of a and then those of b not in a, by id.
func mergeParents(a, b []fetch.Parent) []fetch.Parent {
	out := slices.Clone(a)
	for _, p := range b {
		if !slices.ContainsFunc(out, func(q fetch.Parent) bool { return q.ID == p.ID }) {
			out = append(out, p)
		}
	}
	return out
}

// index gets task's index from a parent that vouches for it, trying each in turn.
// A parent may wait up to wait for an index its pass is still producing.
func (n *Node) index(ctx context.Context, task layer.TaskID, parents []fetch.Parent, failed map[string]bool, wait time.Duration) (*layer.Index, error) {
	var errs []error
	for _, p := range parents {
		if !p.Vouches || failed[p.ID] {
			continue
		}
		enc, _, err := n.client.Index(ctx, p.Addr, task, wait)
		if err == nil {
			var x *layer.Index
			if x, err = layer.Unmarshal(enc); err == nil {
				switch {
				case x.Task() != task:
					err = fmt.Errorf("index is of %s", x.Task())
				case x.Blocks.BlockSize != int64(n.cache.BlockSize()):
					err = fmt.Errorf("index has %d-byte blocks, this node uses %d", x.Blocks.BlockSize, n.cache.BlockSize())
				default:
					return x, nil
				}
			}
		}
		errs = append(errs, fmt.Errorf("parent %s: %w", p.Addr, err))
		if !errors.Is(err, peer.ErrNotFound) && !errors.Is(err, peer.ErrForbidden) {
			failed[p.ID] = true // unreachable, or it sent something wrong
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, errors.New("no parent vouches for the layer index")
	}
	return nil, fmt.Errorf("layer index: %w", errors.Join(errs...))
}

// Warm fetches the whole layer src names into the cache and checks it against its diffID;
// from then on this node serves it and vouches for it (until its blocks are evicted). A
// layer held on disk is warm already. When no parent has the layer's index yet (its seed's
// pass is still running), Warm does not wait for it: it fetches blocks as the pass produces
// them, pipelined behind the seed, and takes the index at the end.
func (n *Node) Warm(ctx context.Context, src seed.Source) error {
	task := layer.TaskIDFromDigest(src.DiffID)
	if _, ok := n.registry.CompleteTable(task); ok {
		return nil
	}
	shared, private := n.shared(ctx, src)
	if _, err := n.seeds.Open(task); err == nil || !shared {
		_, err := n.Layer(ctx, src)
		return err
	}
	reg, err := n.sched.Register(ctx, src, int64(n.cache.BlockSize()), private)
	if err != nil {
		return fmt.Errorf("layer %s: register with the scheduler: %w", task, err)
	}
	if reg.Directive == BackToSource {
		_, err := n.seed(ctx, src, true)
		return err
	}
	start := time.Now()
	var (
		table layer.BlockTable
		known []fetch.Parent // the parents the blocks came from
	)
	if x, err := n.index(ctx, task, reg.Parents, map[string]bool{}, 0); err == nil {
		l, err := n.peerLayer(task, x)
		if err != nil {
			return err
		}
		_, err = stream.Copy(ctx, io.Discard, n.cache, stream.Task{ID: task, Size: l.Index.Blocks.Size, Digest: digest.Digest(task)}, l,
			stream.WithWindow(n.window), stream.WithVerified(func(t layer.BlockTable) { table = t }))
		if err != nil {
			return fmt.Errorf("warm layer %s: %w", task, err)
		}
	} else if table, known, err = n.warmPipelined(ctx, task); err != nil {
		n.registry.Abandon(task)
		return fmt.Errorf("warm layer %s: %w", task, err)
	}
	n.registry.Complete(task, table, nil)
	d := time.Since(start)
	log.G(ctx).WithFields(log.Fields{"task": task, "bytes": table.Size, "duration": d,
		"MBps": int(float64(table.Size) / 1e6 / max(d.Seconds(), 1e-9))}).Info("warmed layer from peers")
	// The parents the blocks came from are alive, and hold the index or soon will; the
	// registration's may have died since, and the scheduler names no parents for a peer
	// that holds the whole task.
	if x, err := n.indexFromParents(ctx, task, mergeParents(known, reg.Parents)); err == nil && slices.Equal(x.Blocks.Digests, table.Digests) {
		// This node serves the index, and Layer finds the layer without asking parents
		// for it again (the scheduler names none to a peer that holds the task).
		if _, err := n.peerLayer(task, x); err != nil {
			log.G(ctx).WithError(err).WithField("task", task).Warn("cannot keep a warmed layer's index")
		}
	} else if err == nil {
		log.G(ctx).WithField("task", task).Warn("a parent's layer index does not match the verified layer; not serving it")
	}
	if err := n.sched.Holding(ctx, task, table.Size); err != nil {
		log.G(ctx).WithError(err).WithField("task", task).Warn("cannot tell the scheduler this node holds a layer")
	}
	return nil
}

// warmPipelined fetches task while its size is not known yet, n.window blocks at a time in
// the order rarestFirst chooses within a band ahead of the reader, each checked against the
// digest its producer published; the stream ends at a short block or where the producer
// says. It reads the blocks front to back, checks the whole against the task's digest and
// returns its block table.
func (n *Node) warmPipelined(ctx context.Context, task layer.TaskID) (_ layer.BlockTable, known []fetch.Parent, _ error) {
	bs := int64(n.cache.BlockSize())
	f, err := fetch.New(n.client, fetch.Task{ID: task, Size: -1, BlockSize: bs}, n.sched,
		n.fetchOptions()...)
	if err != nil {
		return layer.BlockTable{}, nil, err
	}
	defer func() { known = f.Known() }()
	n.registry.Expect(task)
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	var (
		mu       sync.Mutex // guards order, reader and inflight
		order    = newRarestFirst(bandWindows*n.window, rand.Uint64())
		reader   int // the block the reader is at
		inflight int
		launch   func()
	)
	launch = func() {
		mu.Lock()
		defer mu.Unlock()
		for inflight < n.window && pctx.Err() == nil {
			// A primary parent is followed as a tree's single parent is.
			i, ok := order.next(reader, f.Total(), f.Holders, f.Parents() > 1 && !f.HasPrimary())
			if !ok {
				return
			}
			inflight++
			wg.Go(func() {
				if b, err := n.cache.Get(pctx, layer.BlockKey{Task: task, Index: i}, f); err == nil {
					b.Release()
				} // a failed block is fetched again when the reader gets to it
				mu.Lock()
				inflight--
				mu.Unlock()
				launch()
			})
		}
	}
	wg.Go(func() { // what the parents hold decides the order
		tick := time.NewTicker(heldInterval)
		defer tick.Stop()
		for {
			f.UpdateHeld(pctx)
			launch()
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	table := layer.BlockTable{BlockSize: bs}
	hash := digest.Canonical.Digester()
	for i := 0; ; i++ {
		if t := f.Total(); t >= 0 && i >= t {
			break
		}
		mu.Lock()
		reader = i
		mu.Unlock()
		launch()
		key := layer.BlockKey{Task: task, Index: i}
		b, err := n.cache.Get(ctx, key, f)
		if errors.Is(err, fetch.ErrPastEnd) {
			break
		}
		if err != nil {
			return table, nil, fmt.Errorf("block %d: %w", i, err)
		}
		data := b.Bytes()
		hash.Hash().Write(data)
		table.Digests = append(table.Digests, layer.DigestBlock(data))
		table.Size += int64(len(data))
		short := int64(len(data)) < bs
		b.Release()
		if short {
			break
		}
	}
	if got := hash.Digest(); got != task.Digest() {
		for i := range table.Digests {
			n.cache.Remove(layer.BlockKey{Task: task, Index: i})
		}
		return table, nil, fmt.Errorf("stream has digest %s, want %s: %w", got, task.Digest(), layer.ErrDigestMismatch)
	}
	return table, nil, nil
}

// SeedLayer makes this node a source of the layer src names: it reads it from its registry
// now, unless it holds it already; peers fetch its blocks while the pass runs. A seed host
// does this for each layer the scheduler sends it. For a blob read at random
// (src.RandomAccess) the node becomes the blob's origin (see Blob) and reads nothing yet.
func (n *Node) SeedLayer(ctx context.Context, src seed.Source) error {
	if _, private := n.shared(ctx, src); private {
		return fmt.Errorf("layer %s: a seed reads no private repository's layer for others", src.Task())
	}
	if src.RandomAccess {
		return n.seedBlob(ctx, src)
	}
	_, err := n.seed(ctx, src, true)
	return err
}

// Stream writes the uncompressed stream (the tar) of the layer src names to w, front to back,
// in stream mode: blocks come through the cache a window at a time, from peers or this
// node's own copy, and the whole is checked against the diffID before its last block is
// written. With src.RandomAccess it writes the blob as stored instead (see StreamBlob). It
// returns the bytes written.
func (n *Node) Stream(ctx context.Context, w io.Writer, src seed.Source) (int64, error) {
	if src.RandomAccess {
		return n.StreamBlob(ctx, w, src)
	}
	l, err := n.Layer(ctx, src)
	if err != nil {
		return 0, err
	}
	task := l.Index.Task()
	written, err := stream.Copy(ctx, w, n.cache, stream.Task{ID: task, Size: l.Index.Blocks.Size, Digest: digest.Digest(task)}, l,
		stream.WithWindow(n.window))
	if err != nil {
		return written, fmt.Errorf("stream layer %s: %w", task, err)
	}
	return written, nil
}
