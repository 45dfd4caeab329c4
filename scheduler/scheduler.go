package scheduler

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler/clock"
	"github.com/p2pimage/p2p-snapshotter/scheduler/selection"
)

// ErrClosed is returned by every call after Close, classified as unavailable.
var ErrClosed = fmt.Errorf("scheduler closed: %w", errdefs.ErrUnavailable)

// Scheduler is the scheduler's core: hosts, tasks, peers and their topologies, and every
// decision about them. It is usable in-process (a node daemon with no scheduler configured
// runs one, see DESIGN-NOTES §1); package server serves it over gRPC. Its methods mirror the
// RPCs of schedulerv1.Scheduler, with the same messages, and return errors classified by
// errdefs (ErrNotFound, ErrInvalidArgument, ErrFailedPrecondition, ErrUnavailable), which the
// server maps to status codes.
//
// # Concurrency
//
// All state sits behind one mutex, mu, held for the whole of each call and never across I/O:
// no call blocks, sends, or waits while holding it. Commands for peers and hosts (new parents,
// directive changes, seed tasks) are put, under mu, into each stream's mailbox, which never
// blocks; the goroutine serving the stream takes them out and sends them outside mu (Progress
// and Watch). One lock keeps every decision consistent with the whole graph (no cycle can
// appear between two concurrent decisions) and is cheap enough: a decision samples a bounded
// number of candidates, so holding mu costs microseconds (see the benchmark).
//
// The Scheduler owns one goroutine, the sweeper, which removes hosts that stopped sending
// keepalives and retries peers still waiting for parents, on a ticker from the injected
// clock. Close stops it and waits for it. With WithManualSweep there is none: the caller
// calls Sweep.
type Scheduler struct {
	opts   settings
	filter selection.Filter
	eval   selection.Evaluator

	mu       sync.Mutex
	closed   bool
	hosts    map[string]*host
	seeds    map[string]*host // seed hosts with an open WatchHost stream
	tasks    map[string]*task
	peers    map[string]*peer
	prefetch prefetches
	rng      *mrand.Rand
	idPrefix string
	nextSeq  uint64
	events   events
	proofs   proofs

	stop context.CancelFunc
	done chan struct{}
}

// New returns a running scheduler. Close it when done.
func New(opts ...Option) (*Scheduler, error) {
	o := defaultSettings()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("scheduler options: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	var seed [16]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("seed the scheduler: %w", err)
	}
	rng := mrand.New(mrand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	if o.seeded {
		rng = mrand.New(mrand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15))
	}
	s := &Scheduler{
		opts:     o,
		filter:   selection.Filter{MaxFailures: o.maxFailures},
		eval:     selection.Evaluator{Weights: o.weights, ChildLimit: o.childLimit},
		hosts:    make(map[string]*host),
		seeds:    make(map[string]*host),
		tasks:    make(map[string]*task),
		prefetch: prefetches{byTask: make(map[string]map[string]*schedulerv1.HostPrefetch)},
		peers:    make(map[string]*peer),
		proofs:   proofs{answers: make(map[proofKey]proofAnswer)},
		rng:      rng,
		// Peer ids differ across restarts, so an id a peer kept from a dead scheduler is
		// NOT_FOUND here rather than someone else's.
		idPrefix: hex.EncodeToString(seed[:4]),
		done:     make(chan struct{}),
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	if o.manualSweep {
		close(s.done)
		return s, nil
	}
	ticker := o.clock.NewTicker(o.interval)
	go s.sweeper(ctx, ticker)
	return s, nil
}

// KeepaliveInterval is the interval between keepalives asked of hosts.
func (s *Scheduler) KeepaliveInterval() time.Duration { return s.opts.interval }

// Close stops the sweeper, waits for it, and ends every open stream with ErrClosed. Later
// calls fail with ErrClosed. Close is idempotent.
func (s *Scheduler) Close() error {
	s.stop()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, h := range s.hosts {
		if h.watch != nil {
			h.watch.box.close(ErrClosed)
		}
	}
	for _, p := range s.peers {
		if p.session != nil {
			p.session.box.close(ErrClosed)
		}
	}
	return nil
}

// lock takes mu and fails if the scheduler is closed. On success the caller unlocks.
func (s *Scheduler) lock() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	return nil
}

func (s *Scheduler) sweeper(ctx context.Context, ticker clock.Ticker) {
	defer close(s.done)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
			s.sweep(ctx)
		}
	}
}

// Sweep does at once what the sweeper does every keepalive interval: it removes the hosts
// silent for more than Misses intervals by the scheduler's clock, with their peers, and
// retries the peers waiting for parents. Callers that chose WithManualSweep call it
// themselves; it does nothing after Close.
func (s *Scheduler) Sweep(ctx context.Context) { s.sweep(ctx) }

// sweep removes the hosts silent for more than misses keepalive intervals, with their peers,
// and retries the peers waiting for parents.
func (s *Scheduler) sweep(ctx context.Context) {
	if s.lock() != nil {
		return
	}
	defer s.mu.Unlock()
	now := s.opts.clock.Now()
	deadline := s.opts.interval * time.Duration(s.opts.misses)
	var gone []*host
	for _, h := range s.hosts {
		if now.Sub(h.lastSeen) > deadline {
			gone = append(gone, h)
		}
	}
	slices.SortFunc(gone, func(a, b *host) int { return cmp.Compare(a.id, b.id) })
	for _, h := range gone {
		log.G(ctx).WithFields(log.Fields{"host": h.id, "silent": now.Sub(h.lastSeen)}).Info("host missed its keepalives: removing it and its peers")
		s.events.hostsExpired++
		s.removeHost(ctx, h, fmt.Errorf("host %s missed its keepalives: %w", h.id, errdefs.ErrNotFound))
	}
	s.expireGrants(now)
	for _, t := range s.sortedTasks() {
		s.kick(t)
	}
}

// sortedTasks returns the tasks with starving peers in id order. The caller holds mu.
func (s *Scheduler) sortedTasks() []*task {
	var ts []*task
	for _, t := range s.tasks {
		if len(t.starving) > 0 {
			ts = append(ts, t)
		}
	}
	slices.SortFunc(ts, func(a, b *task) int { return cmp.Compare(a.id, b.id) })
	return ts
}

// newPeerID returns a fresh peer id. The caller holds mu.
func (s *Scheduler) newPeerID() (string, uint64) {
	s.nextSeq++
	return s.idPrefix + "-" + strconv.FormatUint(s.nextSeq, 36), s.nextSeq
}

// events counts what happened since the start. Guarded by mu.
type events struct {
	decisions, sentBackToSource, seedTriggers, reparented, hostsExpired uint64
}

// Stats are the scheduler's state and event counts, for metrics and logs.
type Stats struct {
	// Hosts announced and not removed; Seeds, the seed hosts among them with an open
	// WatchHost stream (those that can be asked to seed).
	Hosts, Seeds int
	// Tasks with at least one peer, and Peers over all tasks (seed peers included).
	Tasks, Peers int
	// Starving is the number of peers waiting for a parent.
	Starving int
	// BackToSource is the number of peers reading their task's source, seeds excluded.
	BackToSource int

	// Counts since the start.

	// Decisions counts parent decisions: one peer's parents chosen, on registration,
	// GetCandidateParents, reparenting, or a retry of a starving peer.
	Decisions uint64
	// SentBackToSource counts peers told to read their task's source themselves because no
	// seed could.
	SentBackToSource uint64
	// SeedTriggers counts seed hosts asked to read a task (a SeedTask decided, not counting
	// the copies sent again when a watch reopens).
	SeedTriggers uint64
	// Reparented counts peers given new parents because a parent left, went bad, or moved in
	// a tree (peers waiting for their first parent not counted).
	Reparented uint64
	// HostsExpired counts hosts removed for missing their keepalives.
	HostsExpired uint64
}

// Stats returns the current counters.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Hosts: len(s.hosts), Seeds: len(s.seeds), Tasks: len(s.tasks), Peers: len(s.peers),
		Decisions:        s.events.decisions,
		SentBackToSource: s.events.sentBackToSource,
		SeedTriggers:     s.events.seedTriggers,
		Reparented:       s.events.reparented,
		HostsExpired:     s.events.hostsExpired,
	}
	for _, t := range s.tasks {
		st.Starving += len(t.starving)
		st.BackToSource += t.backToSource
	}
	return st
}

var errSuperseded = errors.New("superseded by a newer stream")
