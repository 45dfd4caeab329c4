package fetch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/p2p/wire"
)

// Parent is a peer that holds, or is receiving, the task.
type Parent struct {
	// ID names the peer (the scheduler's peer id); Addr is its block service host:port.
	ID, Addr string
	// Vouches says the parent can serve the task's digests: a seed, or a peer that holds
	// the whole verified task.
	Vouches bool
	// Primary marks the parent to ask for every block, and wait for, while it is usable;
	// the others stand by (the scheduler chains a DAG's peers through their primaries).
	Primary bool
	// Source marks a parent that reads the task from its registry: a seed, or a peer sent
	// back to the source.
	Source bool
}

// ParentSource supplies candidate parents for a task: the scheduler, or a fixed list.
type ParentSource interface {
	// Parents returns candidates other than those in exclude (set aside as failed).
	Parents(ctx context.Context, task layer.TaskID, exclude []string) ([]Parent, error)
}

// Reason classifies a failed block request, as reported.
type Reason int

const (
	ReasonDigestMismatch Reason = iota + 1
	ReasonTimeout
	ReasonConnection
	ReasonBusy
	ReasonNotFound
	// ReasonForbidden: the task is private and the parent does not know this node may read
	// it (yet, or any more: its proof of access expired).
	ReasonForbidden
)

// Reporter learns of each block fetched and each failure, e.g. to tell the scheduler.
type Reporter interface {
	BlockFetched(task layer.TaskID, index int, parentID string, took time.Duration)
	BlockFailed(task layer.TaskID, index int, parentID string, reason Reason, err error)
}

// Landing is told of each request for a block going out to a parent and ending without it,
// of each verified block before the cache commits it, and of the digests learnt from
// producers, to pass them on (tasks.Registry).
type Landing interface {
	Arriving(task layer.TaskID, index int, on bool)
	Landed(task layer.TaskID, index int)
	LearnDigests(task layer.TaskID, from int, ds []layer.BlockDigest, total int)
}

// Task is what a Fetcher fetches.
type Task struct {
	ID layer.TaskID
	// Size is the stream's length, or -1 while no one knows it: a seed's pass still running
	// (the digests then say where the stream ends; see Total).
	Size      int64
	BlockSize int64
	// Digests, if known (this node's complete record), verify blocks without asking.
	Digests []layer.BlockDigest
	// ReaderVerifies says the task's blocks have no digests to check them by: whoever reads
	// them checks what they hold (an eStargz blob's chunks against its TOC) and calls Reject
	// for a block that fails. The fetcher then asks no parent for digests. Size must be
	// known.
	ReaderVerifies bool
}

// Tuning bounds, overridable by options.
const (
	// DefaultWait is how long a parent may wait for a block it is still receiving.
	DefaultWait = 5 * time.Second
	// minRate is the slowest transfer tolerated before a parent counts as stalled.
	minRate = 256 << 10
	// cooldown sets aside a parent that failed or stalled.
	cooldown = 3 * time.Second
	// forbiddenBackoff sets aside a parent that refused a private task, long enough for a
	// new proof of access to reach the scheduler.
	forbiddenBackoff = time.Second
	// busyBackoff sets aside a parent that answered busy.
	busyBackoff = 100 * time.Millisecond
	// notFoundBackoff sets aside, for one block, a parent that did not have it.
	notFoundBackoff = 300 * time.Millisecond
	// initialRate is assumed of a parent not measured yet, so new parents get tried.
	initialRate = 50 << 20
	// maxAttempts bounds the requests for one block.
	maxAttempts = 64
	// noParentTimeout bounds how long a block waits for any parent to be usable.
	noParentTimeout = time.Minute
	// lackRefreshInterval spaces the requests for more parents made because every parent
	// lacked a block.
	lackRefreshInterval = time.Second
	// primaryLacks is how many times in a row the primary parent may lack a block before it
	// is asked of the others: a primary a step behind gets the block soon, and its uplink
	// is the one its child should use.
	primaryLacks = 3
)

// MaxPerParent bounds the requests in flight to one parent. A parent sends what it is asked
// for at once, sharing its uplink: sixteen blocks asked together each take sixteen times as
// long to complete, and a block is passed on only once complete, so every hop of a tree would
// add that much delay. Two keep the parent's uplink busy (the next request is out while a
// block is sent) and let each block pass on in about two block times, which a chain of
// primaries (scheduler/chain.go) pays once per peer (docs/benchmarks.md).
const MaxPerParent = 2

// ErrNoParent means no parent could deliver a block.
var ErrNoParent = errors.New("no parent could deliver the block")

// Fetcher fills blocks of one task from parents. It is safe for concurrent use.
type Fetcher struct {
	client   *peer.Client
	task     Task
	parents  ParentSource
	reporter Reporter
	observe  func(Parent, time.Duration)
	landing  Landing
	wait     time.Duration
	noParent time.Duration
	now      func() time.Time

	mu    sync.Mutex
	rng   *rand.Rand
	known map[string]*parentState
	freed chan struct{} // closed and replaced when a request ends or a queued block leaves
	// queued holds the blocks waiting for a request slot at a parent (every parent they may
	// ask has MaxPerParent in flight), each with the parents it lacked; see choose.
	queued map[int]lacks
	// primary is the parent to ask first, if the ParentSource named one.
	primary *parentState
	// lackRefreshed is when a block that every parent lacked last asked for more parents.
	lackRefreshed time.Time
	// sentBy is the parent each block came from, for Reject, when the reader verifies.
	sentBy  map[int]*parentState
	digests []layer.BlockDigest // verified digests known, a prefix of the table
	total   int                 // blocks in the task; -1 while unknown
	tableMu sync.Mutex          // one digest request at a time
}

type parentState struct {
	Parent
	rate      float64 // bytes/s we measured, EWMA
	freeSlots int
	inflight  int
	bad       bool      // sent a corrupt block: never again for this task
	until     time.Time // set aside until then
	unreached bool      // set aside because it could not be reached, stalled, or lacked a block
	held      []byte    // the blocks it held when last asked (UpdateHeld), nil if not known

	noDigestsUntil time.Time // it had no digests to give; not asked for them until then
}

// Option configures a Fetcher.
type Option func(*Fetcher)

// WithReporter reports fetches and failures to r.
func WithReporter(r Reporter) Option { return func(f *Fetcher) { f.reporter = r } }

// WithLanding tells l of each verified block.
func WithLanding(l Landing) Option { return func(f *Fetcher) { f.landing = l } }

// WithObserver calls observe for each block fetched, with the parent it came from and the
// time its transfer took (metrics of fetch latency by source).
func WithObserver(observe func(p Parent, took time.Duration)) Option {
	return func(f *Fetcher) { f.observe = observe }
}

// WithWait sets how long a parent may wait for a block it is still receiving.
func WithWait(d time.Duration) Option { return func(f *Fetcher) { f.wait = d } }

// WithNoParentTimeout sets how long a block waits for a usable parent, and for one that has
// it, before FillBlock gives up (default one minute): shorter for a task whose blocks the
// caller can read elsewhere.
func WithNoParentTimeout(d time.Duration) Option { return func(f *Fetcher) { f.noParent = d } }

// New returns a Fetcher of task from the parents src supplies, over client.
func New(client *peer.Client, task Task, src ParentSource, opts ...Option) (*Fetcher, error) {
	if err := task.ID.Validate(); err != nil {
		return nil, fmt.Errorf("fetcher: %w", err)
	}
	total := layer.BlockCount(task.Size, task.BlockSize)
	if task.Size < 0 {
		total = -1
	}
	if task.Size < -1 || task.BlockSize < layer.MinBlockSize || task.BlockSize > layer.MaxBlockSize {
		return nil, fmt.Errorf("fetcher %s: size %d in blocks of %d", task.ID, task.Size, task.BlockSize)
	}
	if task.Digests != nil && len(task.Digests) != total {
		return nil, fmt.Errorf("fetcher %s: %d digests for %d blocks", task.ID, len(task.Digests), total)
	}
	if task.ReaderVerifies && task.Size < 0 {
		return nil, fmt.Errorf("fetcher %s: blocks its reader verifies need a known size", task.ID)
	}
	f := &Fetcher{
		client: client, task: task, parents: src, wait: DefaultWait, noParent: noParentTimeout, now: time.Now,
		rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), known: make(map[string]*parentState), freed: make(chan struct{}),
		queued:  make(map[int]lacks),
		digests: task.Digests, total: total, sentBy: make(map[int]*parentState),
	}
	for _, o := range opts {
		o(f)
	}
	return f, nil
}

// ErrPastEnd is returned for a block past the end of the stream.
var ErrPastEnd = errors.New("block past the end of the stream")

// Total returns the number of blocks in the task, or -1 while it is not known.
func (f *Fetcher) Total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.total
}

// FillBlock implements blockcache.Filler.
func (f *Fetcher) FillBlock(ctx context.Context, key layer.BlockKey, buf []byte) (int, error) {
	if total := f.Total(); key.Task != f.task.ID || key.Index < 0 || total >= 0 && key.Index >= total {
		return 0, fmt.Errorf("fetch %s: not a block of %s (%d blocks): %w", key, f.task.ID, total, ErrPastEnd)
	}
	var digest layer.BlockDigest
	if !f.task.ReaderVerifies {
		d, err := f.digest(ctx, key.Index)
		if err != nil {
			return 0, fmt.Errorf("fetch %s: %w", key, err)
		}
		digest = d
	}
	// With the size unknown, a block is at most a whole block; its digest checks its length.
	want := f.task.BlockSize
	if f.task.Size >= 0 {
		want = min(f.task.BlockSize, f.task.Size-int64(key.Index)*f.task.BlockSize)
	}
	if int64(len(buf)) < want {
		return 0, fmt.Errorf("fetch %s: buffer of %d bytes for a %d-byte block", key, len(buf), want)
	}
	var (
		lastErr error
		// Parents that are busy or do not hold the block yet are not failing: such answers
		// count against a time limit, not against maxAttempts.
		giveUp = f.now().Add(f.noParent)
		// lacked sets aside, for this block only, the parents that did not have it.
		lacked = make(lacks)
	)
	for attempt := 0; attempt < maxAttempts; {
		chose := f.now()
		p, err := f.choose(ctx, key.Index, lacked)
		if d := f.now().Sub(chose); d > 200*time.Millisecond && err == nil {
			log.G(ctx).WithFields(log.Fields{"task": f.task.ID, "block": key.Index, "parent": p.Addr, "waited": d}).Debug("waited for a parent")
		}
		if err != nil {
			if lastErr != nil {
				err = fmt.Errorf("%w (last failure: %w)", err, lastErr)
			}
			return 0, fmt.Errorf("fetch %s: %w", key, err)
		}
		if f.landing != nil {
			f.landing.Arriving(f.task.ID, key.Index, true)
		}
		n, err := f.fetchFrom(ctx, p, key.Index, buf[:want])
		if err == nil && !f.task.ReaderVerifies && layer.DigestBlock(buf[:n]) != digest {
			err = fmt.Errorf("block %d from %s: %w", key.Index, p.Addr, layer.ErrDigestMismatch)
			f.markBad(p)
			f.report(key.Index, p, ReasonDigestMismatch, err)
			log.G(ctx).WithFields(log.Fields{"task": f.task.ID, "block": key.Index, "parent": p.Addr}).Warn("parent sent a corrupt block; it is set aside for this task")
		}
		if err == nil {
			if f.task.ReaderVerifies {
				f.mu.Lock()
				f.sentBy[key.Index] = p
				f.mu.Unlock()
			}
			if f.landing != nil {
				f.landing.Landed(f.task.ID, key.Index)
			}
			return n, nil
		}
		if f.landing != nil {
			f.landing.Arriving(f.task.ID, key.Index, false)
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("fetch %s: %w", key, ctx.Err())
		}
		lastErr = err
		log.G(ctx).WithFields(log.Fields{"task": f.task.ID, "block": key.Index, "parent": p.Addr}).WithError(err).Debug("block request failed")
		if errors.Is(err, peer.ErrNotFound) {
			l := lacked[p]
			l.until, l.n = f.now().Add(notFoundBackoff), l.n+1
			lacked[p] = l
		}
		if !errors.Is(err, peer.ErrBusy) && !errors.Is(err, peer.ErrNotFound) {
			attempt++
		} else if f.now().After(giveUp) {
			return 0, fmt.Errorf("fetch %s: %w for %v: %w", key, ErrNoParent, f.noParent, lastErr)
		}
	}
	return 0, fmt.Errorf("fetch %s: %w after %d attempts: %w", key, ErrNoParent, maxAttempts, lastErr)
}

// fetchFrom asks p for block i, within a bounded time, and records how it went.
func (f *Fetcher) fetchFrom(ctx context.Context, p *parentState, i int, buf []byte) (int, error) {
	limit := f.wait + time.Duration(float64(len(buf))/minRate*float64(time.Second)) + time.Second
	rctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	// took is the transfer alone: a parent that waited for a block it was still receiving
	// is not slow, it is pipelining, and neither its measured rate nor the scheduler's
	// slow-parent rule should count the wait.
	n, st, took, err := f.client.BlockTimed(rctx, p.Addr, f.task.ID, i, f.wait, buf)
	f.mu.Lock()
	p.freeSlots = st.FreeSlots
	f.mu.Unlock()

	want := len(buf)
	if f.task.Size < 0 {
		want = n // checked by the digest
	}
	reason := f.record(ctx, p, n, want, took, &err)
	if reason != 0 {
		f.report(i, p, reason, err)
		return 0, err
	}
	if f.reporter != nil {
		f.reporter.BlockFetched(f.task.ID, i, p.ID, took)
	}
	if f.observe != nil {
		f.observe(p.Parent, took)
	}
	return n, nil
}

// record updates what is known of p after a request that took took and ended with *err,
// and classifies a failure (0 for none). A short block becomes a failure.
func (f *Fetcher) record(ctx context.Context, p *parentState, n, want int, took time.Duration, err *error) Reason {
	f.mu.Lock()
	defer f.mu.Unlock()
	p.inflight--
	f.signalLocked()
	now := f.now()
	switch {
	case *err == nil && n != want:
		*err = fmt.Errorf("block from %s: %d bytes, want %d: %w", p.Addr, n, want, layer.ErrDigestMismatch)
		p.bad = true
		return ReasonDigestMismatch
	case *err == nil:
		if secs := took.Seconds(); secs > 0 {
			p.rate = 0.7*p.rate + 0.3*float64(n)/secs
		}
		return 0
	case errors.Is(*err, peer.ErrBusy):
		p.until, p.unreached = now.Add(busyBackoff), false
		return ReasonBusy
	case errors.Is(*err, peer.ErrForbidden):
		p.until, p.unreached = now.Add(forbiddenBackoff), false
		return ReasonForbidden
	case errors.Is(*err, peer.ErrNotFound):
		// It does not hold the block (evicted, or not received yet): FillBlock tries others
		// for this block; it stays usable for the others, and a candidate when asking the
		// scheduler for more: a parent a little behind is normal in a pipeline.
		return ReasonNotFound
	case ctx.Err() == nil && errors.Is(*err, context.DeadlineExceeded):
		p.until, p.unreached = now.Add(cooldown), true
		p.rate /= 2
		f.client.Forget(p.Addr)
		return ReasonTimeout
	default:
		p.until, p.unreached = now.Add(cooldown), true
		f.client.Forget(p.Addr)
		return ReasonConnection
	}
}

func (f *Fetcher) report(i int, p *parentState, r Reason, err error) {
	if f.reporter != nil {
		f.reporter.BlockFailed(f.task.ID, i, p.ID, r, err)
	}
}

// FilledElsewhere tells the fetcher that block i was filled by someone else this time (the
// registry), so that a Reject of it blames no parent.
func (f *Fetcher) FilledElsewhere(i int) {
	f.mu.Lock()
	delete(f.sentBy, i)
	f.mu.Unlock()
}

// Reject tells the fetcher that block i, which it filled for a reader that verifies (see
// Task.ReaderVerifies), failed the reader's check: the parent that sent it is set aside for
// the task, as one that sent a block with the wrong digest, and the reporter is told. It
// returns the parent's address, or "" if the fetcher did not fill block i.
func (f *Fetcher) Reject(i int, err error) string {
	f.mu.Lock()
	p := f.sentBy[i]
	delete(f.sentBy, i)
	f.mu.Unlock()
	if p == nil {
		return ""
	}
	f.markBad(p)
	f.report(i, p, ReasonDigestMismatch, fmt.Errorf("block %d from %s: %w", i, p.Addr, err))
	return p.Addr
}

func (f *Fetcher) markBad(p *parentState) {
	f.mu.Lock()
	p.bad = true
	f.mu.Unlock()
}

// choose picks a parent for a request of block i by weighted random, asking the ParentSource
// for more when none is usable, and waiting when there is none (the scheduler may be finding
// the task a new source) or only parents set aside, for up to noParentTimeout.
//
// Blocks waiting for a request slot take them lowest index first. A node fetches more
// blocks at once than its parents take requests, and its children ask it for the blocks it
// has begun: one that lost the race for slots again and again kept them waiting for seconds,
// their own slots held by those requests, and so stalled a whole branch of a tree. Children
// read front to back, so the lowest is the one most likely waited for.
func (f *Fetcher) choose(ctx context.Context, i int, lacked lacks) (*parentState, error) {
	refreshed := false
	backoff := 50 * time.Millisecond
	var giveUp time.Time
	defer f.unqueue(i)
	for {
		f.mu.Lock()
		p, next, full, lackedOnly := f.pickLocked(i, lacked)
		if p != nil && f.yieldsLocked(i, p) {
			p, full = nil, true
		}
		if p != nil {
			p.inflight++
			delete(f.queued, i)
			f.mu.Unlock()
			return p, nil
		}
		if full {
			// Every usable parent has MaxPerParent requests in flight (or its next slot is
			// a lower block's): wait for one to end.
			f.queued[i] = lacked
			freed := f.freed
			f.mu.Unlock()
			select {
			case <-freed:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			continue
		}
		f.mu.Unlock()
		f.unqueue(i)
		if lackedOnly && !f.lackRefreshDue() {
			// Parents that lack this block for now: wait for the first to be asked again
			// rather than ask the scheduler for more on every such block.
			t := time.NewTimer(max(next.Sub(f.now()), time.Millisecond))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
			continue
		}
		if !refreshed || lackedOnly {
			refreshed = true
			if err := f.refresh(ctx); err != nil {
				return nil, err
			}
			continue
		}
		now := f.now()
		if giveUp.IsZero() {
			giveUp = now.Add(f.noParent)
		} else if now.After(giveUp) {
			return nil, ErrNoParent
		}
		wait := backoff
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(now), time.Millisecond))
		}
		backoff = min(2*backoff, 2*time.Second)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		refreshed = false
	}
}

// yieldsLocked reports whether block i should leave parent p's free slot to a lower block
// queued for one that may ask p.
func (f *Fetcher) yieldsLocked(i int, p *parentState) bool {
	now := f.now()
	for j, lacked := range f.queued {
		if j < i && !now.Before(p.until) && !lacked[p].until.After(now) {
			return true
		}
	}
	return false
}

// unqueue takes block i out of the slot queue; if it was there, the blocks behind it look
// again for a slot.
func (f *Fetcher) unqueue(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.queued[i]; ok {
		delete(f.queued, i)
		f.signalLocked()
	}
}

// signalLocked wakes the blocks waiting for a request slot.
func (f *Fetcher) signalLocked() {
	close(f.freed)
	f.freed = make(chan struct{})
}

// lacks records, for one block, the parents that did not have it: until when each is set
// aside for it, and how many times it lacked it.
type lacks map[*parentState]lack

type lack struct {
	until time.Time
	n     int
}

// pickLocked returns a usable parent for block i: the primary parent, if there is one and
// it is usable and has not lacked the block primaryLacks times, waiting for it when it is
// full or lacked the block lately; otherwise one of the others. If there is none, it
// returns when the first parent set aside is usable again (zero if none will be), whether
// that one is set aside only for lacking block i, and whether some parents are usable but
// have MaxPerParent requests in flight. A parent weighs its measured rate shared by its requests in flight,
// much less when it reported no free slot, and much less when its last bitmap lacked block
// i (it may have it since, or be about to: asking it then waits for it).
func (f *Fetcher) pickLocked(i int, lacked lacks) (_ *parentState, next time.Time, full, lackedOnly bool) {
	now := f.now()
	if q := f.primary; q != nil && !q.bad && !now.Before(q.until) && lacked[q].n < primaryLacks {
		switch {
		case lacked[q].until.After(now):
			return nil, lacked[q].until, false, true
		case q.inflight >= MaxPerParent:
			return nil, time.Time{}, true, false
		}
		return q, time.Time{}, false, false
	}
	var (
		total float64
		cands []*parentState
		ws    []float64
	)
	for _, p := range f.known {
		if p.bad {
			continue
		}
		until, forBlock := p.until, false
		if l, ok := lacked[p]; ok && l.until.After(until) {
			until, forBlock = l.until, true
		}
		if now.Before(until) {
			if next.IsZero() || until.Before(next) {
				next, lackedOnly = until, forBlock
			}
			continue
		}
		if p.inflight >= MaxPerParent {
			full = true
			continue
		}
		w := p.rate / float64(1+p.inflight)
		if p.freeSlots == 0 {
			w /= 4 // it reported no free slot last time; it may have one now
		}
		if p.held != nil && !hasBit(p.held, i) {
			w /= 16
		}
		cands = append(cands, p)
		ws = append(ws, w)
		total += w
	}
	if len(cands) == 0 {
		return nil, next, full, lackedOnly
	}
	x := f.rng.Float64() * total
	for i, w := range ws {
		if x < w {
			return cands[i], time.Time{}, false, false
		}
		x -= w
	}
	return cands[len(cands)-1], time.Time{}, false, false
}

// UpdateHeld asks every parent in use which blocks it holds now (wire.OpHeld), for
// pickLocked and Holders. A parent that does not answer keeps what it said before.
func (f *Fetcher) UpdateHeld(ctx context.Context) {
	f.mu.Lock()
	ps := make([]*parentState, 0, len(f.known))
	for _, p := range f.known {
		if !p.bad {
			ps = append(ps, p)
		}
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			bits, _, err := f.client.Held(rctx, p.Addr, f.task.ID)
			if err != nil {
				return
			}
			f.mu.Lock()
			p.held = bits
			f.mu.Unlock()
		})
	}
	wg.Wait()
}

// Holders returns how many usable parents held block i when last asked (UpdateHeld).
func (f *Fetcher) Holders(i int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.known {
		if !p.bad && hasBit(p.held, i) {
			n++
		}
	}
	return n
}

// lackRefreshDue reports whether a block that every parent lacks may ask the ParentSource for
// more parents: at most once per lackRefreshInterval for the whole task.
func (f *Fetcher) lackRefreshDue() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if now.Sub(f.lackRefreshed) < lackRefreshInterval {
		return false
	}
	f.lackRefreshed = now
	return true
}

// HasPrimary reports whether the ParentSource named a primary parent that did not send a
// corrupt block.
func (f *Fetcher) HasPrimary() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.primary != nil && !f.primary.bad
}

// Known returns the parents known that did not send a corrupt block.
func (f *Fetcher) Known() []Parent {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Parent, 0, len(f.known))
	for _, p := range f.known {
		if !p.bad {
			out = append(out, p.Parent)
		}
	}
	return out
}

// Parents returns how many parents are known that did not send a corrupt block.
func (f *Fetcher) Parents() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.known {
		if !p.bad {
			n++
		}
	}
	return n
}

func hasBit(bits []byte, i int) bool {
	return i >= 0 && i/8 < len(bits) && bits[i/8]&(1<<(i%8)) != 0
}

// refresh asks the ParentSource for candidates, excluding bad parents and those set aside
// lately for failing to deliver (the scheduler may not know yet that they died, or that
// they evicted what they held).
func (f *Fetcher) refresh(ctx context.Context) error {
	f.mu.Lock()
	var exclude []string
	now := f.now()
	for id, p := range f.known {
		if p.bad || p.unreached && now.Before(p.until) {
			exclude = append(exclude, id)
		}
	}
	f.mu.Unlock()
	ps, err := f.parents.Parents(ctx, f.task.ID, exclude)
	if err != nil {
		return fmt.Errorf("candidate parents: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// The answer names the primary parent, if any, afresh: the scheduler may have moved it.
	for _, p := range f.known {
		p.Primary = false
	}
	f.primary = nil
	for _, p := range ps {
		st, ok := f.known[p.ID]
		if ok {
			st.Vouches, st.Primary = p.Vouches, p.Primary
			if st.Addr != p.Addr {
				st.Addr, st.until = p.Addr, time.Time{}
			}
		} else {
			st = &parentState{Parent: p, rate: initialRate, freeSlots: 1}
			f.known[p.ID] = st
		}
		if p.Primary && f.primary == nil {
			f.primary = st
		}
	}
	return nil
}

// digest returns the digest of block i, asking parents that vouch for digests as needed.
func (f *Fetcher) digest(ctx context.Context, i int) (layer.BlockDigest, error) {
	for {
		f.mu.Lock()
		if i < len(f.digests) {
			d := f.digests[i]
			f.mu.Unlock()
			return d, nil
		}
		if f.total >= 0 && i >= f.total {
			f.mu.Unlock()
			return layer.BlockDigest{}, fmt.Errorf("block %d of %d: %w", i, f.total, ErrPastEnd)
		}
		f.mu.Unlock()
		if err := f.moreDigests(ctx); err != nil {
			return layer.BlockDigest{}, err
		}
	}
}

// moreDigests extends the known digests from a parent that vouches for them.
func (f *Fetcher) moreDigests(ctx context.Context) error {
	f.tableMu.Lock()
	defer f.tableMu.Unlock()
	var lastErr error
	for range maxAttempts {
		f.mu.Lock()
		from, total := len(f.digests), f.total
		var vouchers []*parentState
		for _, p := range f.known {
			if p.Vouches && !p.bad && !f.now().Before(p.until) && !f.now().Before(p.noDigestsUntil) {
				vouchers = append(vouchers, p)
			}
		}
		f.mu.Unlock()
		if total >= 0 && from >= total {
			return nil // another caller got them meanwhile
		}
		if len(vouchers) == 0 {
			if err := f.refresh(ctx); err != nil {
				return err
			}
			f.mu.Lock()
			for _, p := range f.known {
				if p.Vouches && !p.bad {
					vouchers = append(vouchers, p)
				}
			}
			f.mu.Unlock()
			if len(vouchers) == 0 {
				return fmt.Errorf("no parent vouches for the digests of %s: %w", f.task.ID, ErrNoParent)
			}
		}
		p := vouchers[f.randN(len(vouchers))]
		rctx, cancel := context.WithTimeout(ctx, f.wait+10*time.Second)
		part, _, err := f.client.Table(rctx, p.Addr, f.task.ID, from, f.wait)
		cancel()
		if err == nil {
			err = f.acceptDigests(part, from)
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lastErr = err
		f.mu.Lock()
		if errors.Is(err, peer.ErrNotFound) {
			// It has no digests to give (it is receiving the task too), but may serve blocks.
			p.noDigestsUntil = f.now().Add(time.Second)
		} else {
			p.until = f.now().Add(cooldown)
		}
		f.mu.Unlock()
		if len(vouchers) == 1 {
			// The only one asked: wait a little before asking again.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return fmt.Errorf("digests of %s: %w", f.task.ID, lastErr)
}

func (f *Fetcher) acceptDigests(part wire.TablePart, from int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	total := f.total
	if part.Complete && part.Total > 0 && total < 0 {
		total = part.Total // the stream's end is known now
	}
	if part.Total != 0 && total >= 0 && part.Total != total {
		return fmt.Errorf("parent says %s has %d blocks, want %d", f.task.ID, part.Total, total)
	}
	if total >= 0 && from+len(part.Digests) > total {
		return fmt.Errorf("parent sent %d digests from %d of %d blocks", len(part.Digests), from, total)
	}
	if len(part.Digests) == 0 && !(part.Complete && total >= 0 && from >= total) {
		return fmt.Errorf("parent sent no digests from %d", from)
	}
	f.total = total
	if len(f.digests) == from {
		f.digests = append(f.digests, part.Digests...)
		if f.landing != nil {
			f.landing.LearnDigests(f.task.ID, from, part.Digests, total)
		}
	}
	return nil
}

func (f *Fetcher) randN(n int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.IntN(n)
}

var _ blockcache.Filler = (*Fetcher)(nil)
