package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler/selection"
)

// Progress is a peer's open progress stream (SyncProgress). Report applies the peer's
// reports; one goroutine calls Next and sends what it returns; Close ends the stream from the
// peer's side. Report and Next may run concurrently.
type Progress struct {
	s      *Scheduler
	peerID string
	taskID string
	box    *mailbox[*schedulerv1.SchedulerCommand]
}

// OpenProgress opens a peer's progress stream with its first report, which names the peer
// and should carry its held bitmap. A stream already open for the peer ends (io.EOF on its
// Next). A command decided while no stream was open is delivered first.
func (s *Scheduler) OpenProgress(ctx context.Context, first *schedulerv1.ProgressReport) (*Progress, error) {
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	p, err := s.peer(first.GetPeerId(), first.GetTaskId())
	if err != nil {
		return nil, err
	}
	if p.session != nil {
		p.session.box.close(nil)
	}
	pr := &Progress{s: s, peerID: p.id, taskID: p.task.id, box: newMailbox[*schedulerv1.SchedulerCommand](true, 1)}
	p.session = pr
	p.registered = true // a seed acted on its SeedTask
	if p.pending != nil {
		pr.box.put(p.pending)
		p.pending = nil
	}
	if err := s.apply(ctx, p, first); err != nil {
		pr.box.close(err)
		if p.session == pr {
			p.session = nil
		}
		return nil, err
	}
	return pr, nil
}

// Report applies one report of the peer. It fails with NotFound once the peer is gone (the
// peer registers again), and with FailedPrecondition when a newer stream replaced this one.
func (pr *Progress) Report(ctx context.Context, r *schedulerv1.ProgressReport) error {
	s := pr.s
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if r.GetPeerId() != pr.peerID || r.GetTaskId() != pr.taskID {
		return fmt.Errorf("report for peer %q task %q on the stream of peer %s task %s: %w", r.GetPeerId(), r.GetTaskId(), pr.peerID, pr.taskID, errdefs.ErrInvalidArgument)
	}
	p, ok := s.peers[pr.peerID]
	if !ok {
		return fmt.Errorf("peer %s: %w", pr.peerID, errdefs.ErrNotFound)
	}
	if p.session != pr {
		return fmt.Errorf("peer %s: %w: %w", pr.peerID, errSuperseded, errdefs.ErrFailedPrecondition)
	}
	return s.apply(ctx, p, r)
}

// Next waits for the scheduler's next command to the peer. It returns io.EOF when the
// scheduler ended the stream normally (the peer left the task, finished failing, or a newer
// stream replaced this one), NotFound when the peer or its host was removed, ErrClosed when the
// scheduler closed, and ctx's error when ctx ends first.
func (pr *Progress) Next(ctx context.Context) (*schedulerv1.SchedulerCommand, error) {
	return pr.box.next(ctx)
}

// Close ends the stream from the peer's side. The peer stays in its task; commands decided
// for it wait for its next stream.
func (pr *Progress) Close() {
	s := pr.s
	s.mu.Lock()
	defer s.mu.Unlock()
	pr.box.close(nil)
	if p, ok := s.peers[pr.peerID]; ok && p.session == pr {
		p.session = nil
	}
}

// apply applies report r of peer p. The caller holds mu.
func (s *Scheduler) apply(ctx context.Context, p *peer, r *schedulerv1.ProgressReport) error {
	t := p.task
	switch rep := r.Report.(type) {
	case nil:
		return nil
	case *schedulerv1.ProgressReport_HeldBitmap:
		if len(rep.HeldBitmap) > maxBlockCount/8 {
			return fmt.Errorf("held bitmap of %d bytes: %w", len(rep.HeldBitmap), errdefs.ErrInvalidArgument)
		}
		had := p.heldCount
		t.change(p, func() {
			p.held = append(p.held[:0], rep.HeldBitmap...)
			p.trim()
		})
		if had == 0 && p.heldCount > 0 {
			s.gained(ctx, t)
		}
	case *schedulerv1.ProgressReport_NewBlocks:
		nb := rep.NewBlocks
		limit := uint32(maxBlockCount)
		if t.blockCount > 0 {
			limit = t.blockCount
		}
		for _, i := range nb.Indexes {
			if i >= limit {
				return fmt.Errorf("block %d: the task has %d: %w", i, limit, errdefs.ErrInvalidArgument)
			}
		}
		had := p.heldCount
		t.change(p, func() {
			for _, i := range nb.Indexes {
				if !p.held.Has(int(i)) {
					p.held.Set(int(i))
					p.heldCount++
				}
			}
		})
		if parent := s.parentOf(p, nb.ParentPeerId); parent != nil {
			var n uint64
			for _, i := range nb.Indexes {
				n += t.blockBytes(i)
			}
			if p.in == nil {
				p.in = make(map[string]*flow)
			}
			f := p.in[parent.id]
			if f == nil {
				f = new(flow)
				p.in[parent.id] = f
			}
			f.add(n, s.opts.clock.Now())
			wasBad := s.bad(parent)
			parent.failures = 0
			if n := len(nb.Indexes); n > 0 && nb.FetchDurationUs > 0 {
				parent.durations.Add(time.Duration(nb.FetchDurationUs/uint64(n))*time.Microsecond, s.opts.clock.Now())
			}
			if !wasBad && s.bad(parent) && t.mode != ModeTree { // see decide: trees keep slow parents
				log.G(ctx).WithFields(log.Fields{"task": t.id, "peer": parent.id, "mean": parent.durations.Mean()}).Info("parent slow: reparenting its children")
				s.wentBad(ctx, parent)
			}
		}
		if had == 0 && p.heldCount > 0 {
			s.gained(ctx, t)
		}
	case *schedulerv1.ProgressReport_BlockFailure:
		bf := rep.BlockFailure
		parent := s.parentOf(p, bf.ParentPeerId)
		if parent == nil {
			return nil
		}
		wasBad := s.bad(parent)
		switch bf.Reason {
		case schedulerv1.FailureReason_FAILURE_REASON_DIGEST_MISMATCH:
			parent.corrupt = true
		case schedulerv1.FailureReason_FAILURE_REASON_BUSY:
		case schedulerv1.FailureReason_FAILURE_REASON_NOT_FOUND:
			if parent.held.Has(int(bf.Index)) {
				t.change(parent, func() {
					parent.held.Clear(int(bf.Index))
					parent.heldCount--
				})
			}
		default: // timeout, connection, unspecified
			parent.failures++
		}
		if !wasBad && s.bad(parent) {
			log.G(ctx).WithFields(log.Fields{"task": t.id, "peer": parent.id, "reason": bf.Reason}).Info("parent bad: reparenting its children")
			s.wentBad(ctx, parent)
		}
	case *schedulerv1.ProgressReport_Finished:
		f := rep.Finished
		if f.TaskSize > 0 {
			count, err := blockCount(f.TaskSize, t.blockSize, f.BlockCount)
			if err != nil {
				return err
			}
			if err := s.learnSize(t, f.TaskSize, count); err != nil {
				return err
			}
		}
		t.change(p, func() { p.finished = true })
		log.G(ctx).WithFields(log.Fields{"task": t.id, "peer": p.id}).Debug("peer finished")
		s.parentsFor(p, 0, nil) // a provider: drops its parents
		s.gained(ctx, t)
	case *schedulerv1.ProgressReport_Failed:
		log.G(ctx).WithFields(log.Fields{"task": t.id, "peer": p.id, "message": rep.Failed.GetMessage()}).Info("peer gave up the task")
		s.removePeer(ctx, p, nil, true)
	}
	return nil
}

// gained is called when a peer of t reported its first blocks or finished: it may now serve
// peers that found no parent, or be the provider the task lacked. The caller holds mu.
func (s *Scheduler) gained(ctx context.Context, t *task) {
	s.ensureProvider(ctx, t, nil)
	s.kick(t)
}

// parentOf returns the peer id names if it is a peer of p's task other than p, else nil.
// The caller holds mu.
func (s *Scheduler) parentOf(p *peer, id string) *peer {
	if id == "" || id == p.id {
		return nil
	}
	if parent, ok := s.peers[id]; ok && parent.task == p.task {
		return parent
	}
	return nil
}

// bad reports whether c is a parent to replace: corrupt, failing or slow. The caller holds mu.
func (s *Scheduler) bad(c *peer) bool {
	return s.filter.Bad(&selection.Candidate{Corrupt: c.corrupt, Failures: c.failures, Slow: s.slow(c)})
}

// slow reports whether c's block times mark it slow. A source never is: it goes at its
// registry's pace, no one else has the blocks it is reading yet, and its children's block
// times grow with their number. The caller holds mu.
func (s *Scheduler) slow(c *peer) bool {
	return !c.source && c.durations.Slow(s.opts.clock.Now())
}

// wentBad gives new parents to the children of a parent that just went bad, and, if it was
// the task's last good provider (a corrupt peer claiming to hold the task, say), finds the
// task a new one. The caller holds mu.
func (s *Scheduler) wentBad(ctx context.Context, c *peer) {
	t := c.task
	if c.provider() && !s.hasGoodProvider(t) {
		log.G(ctx).WithFields(log.Fields{"task": t.id, "peer": c.id}).Info("the task's last good provider went bad: finding another")
		s.addProvider(ctx, t, nil)
	}
	var children []*peer
	switch t.mode {
	case ModeTree:
		children = t.tree.Children(nil, c)
	case ModeDAG:
		for _, n := range c.node.Children() {
			children = append(children, n.Value)
		}
	}
	for _, ch := range children {
		s.reparent(ch)
	}
}

// hasGoodProvider reports whether a provider of t is not bad. The caller holds mu.
func (s *Scheduler) hasGoodProvider(t *task) bool {
	for _, p := range t.peers {
		if p.provider() && !s.bad(p) {
			return true
		}
	}
	return false
}

// trim drops bits at or beyond the task's block count, when known, and recounts.
func (p *peer) trim() {
	if n := int(p.task.blockCount); n > 0 {
		if nb := (n + 7) / 8; len(p.held) > nb {
			p.held = p.held[:nb]
		}
		if r := n % 8; r != 0 && len(p.held) == (n+7)/8 {
			p.held[len(p.held)-1] &= byte(1<<r) - 1
		}
	}
	p.heldCount = p.held.Count()
}
