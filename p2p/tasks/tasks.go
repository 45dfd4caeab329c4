package tasks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/p2p/wire"
)

// Registry is the record. It is safe for concurrent use.
type Registry struct {
	cache *blockcache.Cache

	now   func() time.Time
	mu    sync.Mutex
	tasks map[layer.TaskID]*task
	added chan struct{} // closed and replaced when a task is added
}

type task struct {
	receiving bool        // blocks not held yet may still land
	producer  bool        // this node's seed pass produces the task's digests
	relaying  bool        // this node passes on digests it got from a producer
	held      []bool      // by block index; grows as blocks land
	arriving  map[int]int // requests out to parents, by block index (see Arriving)
	source    bool        // this node read the task from its registry (a seed pass)
	served    []copies    // by block index, for a source: copies served lately
	digests   []layer.BlockDigest
	complete  bool              // digests is the whole, verified table
	refill    blockcache.Filler // refills evicted blocks, or nil
	index     []byte            // the encoded layer index, once known
	fullTable bool              // digests is the whole table, from the index
	changed   chan struct{}     // closed and replaced on every change
}

// unknownTaskGrace is how long a request for a task this node does not know waits for it to
// appear: a seed is asked for a task the moment the scheduler sent it, perhaps before the
// seed has read that message.
const unknownTaskGrace = 5 * time.Second

// notYetWait is how long a request for a block this node is receiving, but not receiving
// now, waits for a request for it to go out to a parent (once out, the request waits for the
// block to land). A seed's pass produces blocks in order, so a request to it waits as long
// as the requester allows. A peer fetches a window of blocks in the order its own parents
// make best, and asks its parents for only a few at a time: a block it has not asked for
// may be far off, and the requester does better to ask someone else soon. The short wait
// covers a child in a tree a step ahead of its only parent.
const notYetWait = 100 * time.Millisecond

// queuedWait is how long a request for a block this node has begun to fetch, but not asked
// a parent for yet, waits for that request to go out. A fetch waits for a request slot at
// its parent, the lowest block first, so the block children ask for is asked for soon: in a
// chain, a child a step behind its parent asks for what the parent has queued, and answering
// "not found" after notYetWait cost it a backoff at every hop.
const queuedWait = time.Second

// sourceCopies is how many copies of a block a seed serves within copiesWindow while its
// pass over the registry blob runs; a request for more is answered busy, so the requester
// takes the block from a peer that has it. During the pass the seed's uplink is the scarcest
// there is: every block it sends twice to peers that could have traded it is a block less of
// the layer it sends at all (BitTorrent's super-seeding). Two, so that both children of a
// binary tree's root get each block. The window is short because blocks flow only down the
// scheduler's DAG: the copies may have gone to peers that cannot pass them to the requester.
// After the pass the seed is one uplink among many and serves what it is asked.
const (
	sourceCopies = 2
	copiesWindow = time.Second
)

// copies counts the copies of a block served since a moment.
type copies struct {
	n     int
	since time.Time
}

// New returns an empty record of blocks kept in cache.
func New(cache *blockcache.Cache) *Registry {
	return &Registry{cache: cache, now: time.Now, tasks: make(map[layer.TaskID]*task), added: make(chan struct{})}
}

func (r *Registry) taskLocked(id layer.TaskID) *task {
	t := r.tasks[id]
	if t == nil {
		t = &task{changed: make(chan struct{})}
		r.tasks[id] = t
		close(r.added)
		r.added = make(chan struct{})
	}
	return t
}

// lookup returns task id, waiting up to unknownTaskGrace (and ctx) for it to appear. It
// returns with r.mu held and a nil task if it did not.
func (r *Registry) lookup(ctx context.Context, id layer.TaskID) *task {
	var deadline <-chan time.Time
	for {
		r.mu.Lock()
		if t := r.tasks[id]; t != nil {
			return t
		}
		added := r.added
		r.mu.Unlock()
		if deadline == nil {
			timer := time.NewTimer(unknownTaskGrace)
			defer timer.Stop()
			deadline = timer.C
		}
		select {
		case <-added:
		case <-deadline:
			r.mu.Lock()
			return nil
		case <-ctx.Done():
			r.mu.Lock()
			return nil
		}
	}
}

func (t *task) signal() {
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *task) setHeld(i int) {
	if i >= len(t.held) {
		t.held = append(t.held, make([]bool, i+1-len(t.held))...)
	}
	t.held[i] = true
}

// Expect records that this node is receiving id.
func (r *Registry) Expect(id layer.TaskID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.taskLocked(id)
	t.receiving = true
	t.signal()
}

// StartPass records that this node's seed pass is producing id, block by block with digests.
func (r *Registry) StartPass(id layer.TaskID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.taskLocked(id)
	t.receiving, t.producer, t.source = true, true, true
	t.signal()
}

// Landed records that block i of id is verified and about to enter the cache.
func (r *Registry) Landed(id layer.TaskID, i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.taskLocked(id)
	t.setHeld(i)
	delete(t.arriving, i)
	t.signal()
}

// Arriving records that a request for block i of id went out to a parent (on), or ended
// without the block (off). Children asking for a block wait for it while it is arriving, up
// to queuedWait while it waits for a request slot, and notYetWait otherwise: a child that
// waited on a block nobody was fetching kept its own request slot, and its children, idle.
func (r *Registry) Arriving(id layer.TaskID, i int, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.taskLocked(id)
	switch {
	case on:
		if t.arriving == nil {
			t.arriving = make(map[int]int)
		}
		t.arriving[i]++
	case t.arriving[i] > 1:
		t.arriving[i]--
	default:
		delete(t.arriving, i)
	}
	t.signal()
}

// Produced records block i of id, with its digest, from a seed's pass: blocks come in order.
func (r *Registry) Produced(id layer.TaskID, i int, d layer.BlockDigest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.taskLocked(id)
	if t.complete || t.fullTable {
		t.setHeld(i)
		t.signal()
		return nil
	}
	if i != len(t.digests) {
		return fmt.Errorf("task %s: block %d produced after %d", id, i, len(t.digests))
	}
	t.digests = append(t.digests, d)
	t.receiving, t.producer = true, true
	t.setHeld(i)
	t.signal()
	return nil
}

// Complete records that id's whole stream verified with block table table; refill, if not
// nil, fills blocks evicted from the cache.
func (r *Registry) Complete(id layer.TaskID, table layer.BlockTable, refill blockcache.Filler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.taskLocked(id)
	t.digests = table.Digests
	t.complete, t.receiving, t.producer, t.refill = true, false, false, refill
	if refill != nil {
		t.held = make([]bool, len(table.Digests))
		for i := range t.held {
			t.held[i] = true
		}
	}
	t.signal()
}

// OnDemand records that this node is the origin of id, a blob read at random (an eStargz or
// zstd:chunked layer): it holds every one of the blob's blocks blocks, reading each it has
// not cached with fill (a Range request to the registry) when a peer asks. It vouches for no
// digests: the blob's readers check the chunks the blocks hold against the layer's TOC.
func (r *Registry) OnDemand(id layer.TaskID, blocks int, fill blockcache.Filler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.taskLocked(id)
	t.receiving, t.refill = false, fill
	t.held = make([]bool, blocks)
	for i := range t.held {
		t.held[i] = true
	}
	t.signal()
}

// LearnDigests records digests of id's blocks from index from on, as a producer published
// them, so that this node passes them on to its own children while the producer's pass
// runs; total, if positive, is the task's block count, now known.
func (r *Registry) LearnDigests(id layer.TaskID, from int, ds []layer.BlockDigest, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.taskLocked(id)
	if t.complete || t.fullTable || t.producer || from != len(t.digests) {
		return
	}
	t.digests = append(t.digests, ds...)
	t.relaying = true
	if total > 0 && len(t.digests) == total {
		t.fullTable = true
	}
	t.signal()
}

// SetIndex records id's encoded layer index, which this node then serves with the block
// digests it holds: its seed pass produced it, or it came from a parent. An index that does
// not decode as one of id is ignored.
func (r *Registry) SetIndex(id layer.TaskID, encoded []byte) {
	x, err := layer.Unmarshal(encoded)
	if err != nil || x.Task() != id {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.taskLocked(id)
	t.index = encoded
	if !t.complete {
		t.digests, t.fullTable = x.Blocks.Digests, true
	}
	t.signal()
}

// Index implements peer.Holder.
func (r *Registry) Index(ctx context.Context, id layer.TaskID) ([]byte, error) {
	for {
		t := r.lookup(ctx, id)
		if t == nil || t.index == nil && !t.producer {
			r.mu.Unlock()
			return nil, fmt.Errorf("index of %s: %w", id, peer.ErrNotHeld)
		}
		if t.index != nil {
			x := t.index
			r.mu.Unlock()
			return x, nil
		}
		changed := t.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("index of %s not produced in time: %w", id, ctx.Err())
		}
	}
}

// Abandon records that id stopped arriving (a failed pass or download); its blocks that are
// still cached stay served only if the task completed before.
func (r *Registry) Abandon(id layer.TaskID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.tasks[id]; t != nil && !t.complete {
		t.signal()
		delete(r.tasks, id)
	}
}

// Forget drops id from the record.
func (r *Registry) Forget(id layer.TaskID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.tasks[id]; t != nil {
		t.signal()
		delete(r.tasks, id)
	}
}

// CompleteTable returns the complete block table of id, if this node has it.
func (r *Registry) CompleteTable(id layer.TaskID) ([]layer.BlockDigest, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.tasks[id]; t != nil && t.complete {
		return t.digests, true
	}
	return nil, false
}

// Block implements peer.Holder.
func (r *Registry) Block(ctx context.Context, id layer.TaskID, i int) (*blockcache.Block, error) {
	key := layer.BlockKey{Task: id, Index: i}
	// Set once a peer has been asked for a block it has not begun, or has queued.
	var notYet, queued <-chan time.Time
	for {
		t := r.lookup(ctx, id)
		if t == nil {
			r.mu.Unlock()
			return nil, fmt.Errorf("task %s: %w", id, peer.ErrNotHeld)
		}
		if t.complete && i >= len(t.digests) {
			r.mu.Unlock()
			return nil, fmt.Errorf("task %s has %d blocks, not %d: %w", id, len(t.digests), i+1, peer.ErrNotHeld)
		}
		held := i < len(t.held) && t.held[i]
		refill, receiving, changed := t.refill, t.receiving, t.changed
		producer, arriving := t.producer, t.arriving[i] > 0
		if held && t.source && !t.complete {
			if i >= len(t.served) {
				t.served = append(t.served, make([]copies, i+1-len(t.served))...)
			}
			c, now := &t.served[i], r.now()
			if now.Sub(c.since) >= copiesWindow {
				c.n, c.since = 0, now
			}
			if c.n >= sourceCopies {
				r.mu.Unlock()
				return nil, fmt.Errorf("block %s: a seed serves %d copies in %v: %w", key, sourceCopies, copiesWindow, peer.ErrBusy)
			}
			c.n++
		}
		r.mu.Unlock()

		if held {
			b, err := r.cache.Lookup(ctx, key) // waits for the fill that is committing it
			if err == nil {
				return b, nil
			}
			if !errors.Is(err, blockcache.ErrNotCached) {
				return nil, err
			}
			if refill != nil {
				return r.cache.Get(ctx, key, refill)
			}
			r.evicted(id, i)
			return nil, fmt.Errorf("block %s was evicted: %w", key, peer.ErrNotHeld)
		}
		if !receiving {
			if b, err := r.cache.Lookup(ctx, key); err == nil { // a fill may be in flight
				return b, nil
			} else if !errors.Is(err, blockcache.ErrNotCached) {
				return nil, err
			}
			return nil, fmt.Errorf("block %s: %w", key, peer.ErrNotHeld)
		}
		if producer {
			// The pass produces blocks in order: one not landed may be committing now.
			if b, err := r.cache.Lookup(ctx, key); err == nil {
				return b, nil
			} else if !errors.Is(err, blockcache.ErrNotCached) {
				return nil, err
			}
		} else if arriving {
			notYet, queued = nil, nil // wait for it to land, however long it was not arriving before
		} else if r.cache.Filling(key) {
			if queued == nil {
				timer := time.NewTimer(queuedWait)
				defer timer.Stop()
				queued = timer.C
			}
		} else if notYet == nil {
			timer := time.NewTimer(notYetWait)
			defer timer.Stop()
			notYet = timer.C
		}
		select {
		case <-changed:
		case <-notYet:
			return nil, fmt.Errorf("block %s: not being fetched: %w", key, peer.ErrNotHeld)
		case <-queued:
			return nil, fmt.Errorf("block %s: not asked of a parent within %v: %w", key, queuedWait, peer.ErrNotHeld)
		case <-ctx.Done():
			return nil, fmt.Errorf("block %s not received in time: %w", key, ctx.Err())
		}
	}
}

func (r *Registry) evicted(id layer.TaskID, i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.tasks[id]; t != nil && i < len(t.held) {
		t.held[i] = false
	}
}

// Table implements peer.Holder: digests from a seed's pass or of a complete task.
func (r *Registry) Table(ctx context.Context, id layer.TaskID, from int) (wire.TablePart, error) {
	for {
		t := r.lookup(ctx, id)
		if t == nil {
			r.mu.Unlock()
			return wire.TablePart{}, fmt.Errorf("digests of %s: %w", id, peer.ErrNotHeld)
		}
		if t.complete || t.fullTable || len(t.digests) > from {
			part := wire.TablePart{From: from, Complete: t.complete || t.fullTable}
			if part.Complete {
				part.Total = len(t.digests)
			}
			if from < len(t.digests) {
				part.Digests = t.digests[from:min(len(t.digests), from+wire.MaxTableDigests)]
			}
			r.mu.Unlock()
			return part, nil
		}
		if !t.producer && !t.relaying {
			r.mu.Unlock()
			return wire.TablePart{}, fmt.Errorf("digests of %s: this node has neither the index nor a pass producing it: %w", id, peer.ErrNotHeld)
		}
		changed := t.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return wire.TablePart{}, fmt.Errorf("digests of %s from %d not produced in time: %w", id, from, ctx.Err())
		}
	}
}

// Held implements peer.HeldReporter: the blocks of id this node has received or produced
// and not lost (a complete task with a refill holds them all).
func (r *Registry) Held(id layer.TaskID) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tasks[id]
	if t == nil {
		return nil, fmt.Errorf("task %s: %w", id, peer.ErrNotHeld)
	}
	bits := make([]byte, (len(t.held)+7)/8)
	for i, h := range t.held {
		if h {
			bits[i/8] |= 1 << (i % 8)
		}
	}
	return bits, nil
}

var (
	_ peer.Holder       = (*Registry)(nil)
	_ peer.HeldReporter = (*Registry)(nil)
)
