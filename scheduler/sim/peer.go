package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// What a peer does: join, take the scheduler's commands, transfer blocks and report them,
// ask for parents, finish, leave.

// join registers a new peer of t on a random live host not yet in t, opens its progress
// stream, and draws its fate.
func (w *world) join(t *task) error {
	var h *host
	for range 32 {
		c := w.hosts[w.rng.IntN(w.normal)]
		if !c.dead && !t.hosts[c.idx] {
			h = c
			break
		}
	}
	if h == nil {
		w.pop.JoinsSkipped++
		return nil
	}
	resp, err := w.core.RegisterPeer(w.ctx, &schedulerv1.RegisterPeerRequest{
		HostId: h.id, TaskId: t.id, TaskSize: uint64(t.blocks) * blockSize, BlockSize: blockSize,
		BlockCount: uint32(t.blocks), Source: t.source,
	})
	if err != nil {
		return fmt.Errorf("register %s on %s: %w", h.id, t.id, err)
	}
	p := &peer{id: resp.PeerId, task: t, host: h, joined: w.now, lastGain: w.now, lastAsk: w.now}
	if resp.Directive == schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE {
		p.source = true
		w.pop.SentBack++
	}
	p.setParents(resp.Candidates)
	if err := w.open(p); err != nil {
		return err
	}
	w.pop.Joins++
	// Early leavers and failures happen while a peer would still be downloading.
	r := w.rng.Float64()
	within := time.Duration(t.blocks) * time.Second / 10
	switch {
	case r < w.cfg.LeaveEarly:
		w.schedule(event{at: w.now + w.uniform(time.Second, within), kind: evLeave, peer: p})
	case r < w.cfg.LeaveEarly+w.cfg.Fail:
		w.schedule(event{at: w.now + w.uniform(time.Second, within), kind: evFail, peer: p})
	}
	return nil
}

// open opens p's progress stream with its held bitmap (empty) and makes it a live peer.
func (w *world) open(p *peer) error {
	pr, err := w.core.OpenProgress(w.ctx, &schedulerv1.ProgressReport{
		PeerId: p.id, TaskId: p.task.id,
		Report: &schedulerv1.ProgressReport_HeldBitmap{HeldBitmap: schedulerv1.NewBitmap(p.task.blocks)},
	})
	if err != nil {
		return fmt.Errorf("open progress of %s: %w", p.id, err)
	}
	p.pr = pr
	w.byID[p.id] = p
	p.task.hosts[p.host.idx] = true
	p.host.peers = append(p.host.peers, p)
	w.fetching = append(w.fetching, p)
	return nil
}

// drop forgets p, gone from its task (the caller told the scheduler, or not: a dead host).
func (w *world) drop(p *peer) {
	p.gone = true
	delete(w.byID, p.id)
	p.task.hosts[p.host.idx] = false
	p.pr.Close()
}

// replace schedules a new peer, of a task drawn by popularity, to make up for one that left.
func (w *world) replace() {
	w.schedule(event{at: w.now + w.uniform(0, replaceWithin), kind: evJoin, task: w.tasks[w.drawTask()]})
}

// seedCommands takes the SeedTasks sent to seed host h and starts a seed peer for each.
func (w *world) seedCommands(h *host) error {
	if h.dead || h.watch == nil {
		return nil
	}
	for {
		cmd, err := h.watch.Next(w.empty)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		if err != nil {
			// Ended by the scheduler (too many commands pending): open it again, as a seed
			// daemon does; the pending SeedTasks come again.
			w.pop.WatchReopens++
			if h.watch, err = w.core.WatchHost(w.ctx, &schedulerv1.WatchHostRequest{HostId: h.id}); err != nil {
				return fmt.Errorf("watch %s: %w", h.id, err)
			}
			continue
		}
		st := cmd.GetSeedTask()
		if st == nil || w.byID[st.PeerId] != nil {
			continue
		}
		t := w.byTaskID[st.TaskId]
		if t == nil {
			return fmt.Errorf("seed task for unknown task %s", st.TaskId)
		}
		w.pop.SeedTasks++
		p := &peer{id: st.PeerId, task: t, host: h, source: true, seed: true, joined: w.now, lastGain: w.now, lastAsk: w.now}
		if err := w.open(p); err != nil {
			return err
		}
	}
}

// commands applies what the scheduler sent on p's stream since the last tick.
func (w *world) commands(p *peer) {
	for {
		cmd, err := p.pr.Next(w.empty)
		if errors.Is(err, context.Canceled) {
			return
		}
		if err != nil {
			// The scheduler ended the stream of a live peer: it forgot the peer. Count it
			// (a run should have none) and replace the peer.
			w.pop.StreamsEnded++
			w.drop(p)
			w.replace()
			return
		}
		switch c := cmd.Command.(type) {
		case *schedulerv1.SchedulerCommand_NewParents:
			w.pop.NewParents++
			p.setParents(c.NewParents.Candidates)
		case *schedulerv1.SchedulerCommand_DirectiveChange:
			if c.DirectiveChange.Directive == schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE {
				w.pop.SentBack++
				p.source = true
			}
		}
	}
}

// transfer moves the blocks p gets this tick: from the registry for a source, else from its
// parents in the scheduler's order, each limited by its host's upload and slots; it reports
// each transfer and failure, asks for new parents after a stall, and reports completion.
func (w *world) transfer(p *peer) error {
	t := p.task
	got := false
	if p.source {
		if n := min(w.srcBudget, t.blocks-p.have); n > 0 {
			if err := w.gain(p, nil, n); err != nil {
				return err
			}
			got = true
		}
	} else {
		budget := w.dlBudget
		for _, id := range p.parents {
			if budget == 0 || p.have >= t.blocks {
				break
			}
			par := w.byID[id]
			if par == nil {
				continue // left: the scheduler has reparented p, its command is on the way
			}
			h := par.host
			switch {
			case h.dead:
				if !slices.Contains(p.excluded, id) {
					p.excluded = append(p.excluded, id)
				}
				if err := w.failure(p, id, schedulerv1.FailureReason_FAILURE_REASON_CONNECTION); err != nil {
					return err
				}
				continue
			case par.have <= p.have, h.upLeft == 0:
				continue // nothing new there yet, or no upload left this tick
			case h.served >= h.slots:
				if err := w.failure(p, id, schedulerv1.FailureReason_FAILURE_REASON_BUSY); err != nil {
					return err
				}
				continue
			case w.cfg.Loss > 0 && w.rng.Float64() < w.cfg.Loss:
				if err := w.failure(p, id, schedulerv1.FailureReason_FAILURE_REASON_TIMEOUT); err != nil {
					return err
				}
				continue
			}
			n := min(budget, h.upLeft, par.have-p.have)
			if err := w.gain(p, par, n); err != nil {
				return err
			}
			h.upLeft -= n
			h.uploaded += n
			h.served++
			budget -= n
			got = true
		}
	}
	switch {
	case got:
		p.lastGain = w.now
	case !p.source && w.now-p.lastGain >= w.cfg.Stall && w.now-p.lastAsk >= w.cfg.Stall:
		if err := w.ask(p); err != nil {
			return err
		}
	}
	if p.have >= t.blocks && !p.done {
		return w.finish(p)
	}
	return nil
}

// gain gives p the next n blocks, from parent (nil: the registry), and reports them.
func (w *world) gain(p, parent *peer, n int) error {
	idx := make([]uint32, n)
	for i := range idx {
		idx[i] = uint32(p.have + i)
	}
	p.have += n
	nb := &schedulerv1.NewBlocks{Indexes: idx}
	perBlock := time.Second / sourceRate
	if parent != nil {
		nb.ParentPeerId = parent.id
		perBlock = time.Duration(float64(time.Second) / float64(parent.host.upload) * parent.host.slow)
		w.pop.BlocksFromPeers += int64(n)
	} else {
		w.pop.BlocksFromSource += int64(n)
	}
	// ±20% of noise, so that the slow-parent rule (mean + 3σ) sees a history with a spread.
	nb.FetchDurationUs = uint64(float64(n) * float64(perBlock.Microseconds()) * (0.8 + 0.4*w.rng.Float64()))
	return w.report(p, &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_NewBlocks{NewBlocks: nb}})
}

func (w *world) failure(p *peer, parent string, why schedulerv1.FailureReason) error {
	w.pop.Failures++
	return w.report(p, &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_BlockFailure{BlockFailure: &schedulerv1.BlockFailure{
		Index: uint32(p.have), ParentPeerId: parent, Reason: why,
	}}})
}

func (w *world) finish(p *peer) error {
	t := p.task
	p.done = true
	if err := w.report(p, &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_Finished{Finished: &schedulerv1.PeerFinished{
		TaskSize: uint64(t.blocks) * blockSize, BlockCount: uint32(t.blocks),
	}}}); err != nil {
		return err
	}
	if p.seed {
		w.pop.SeedsCompleted++
		return nil // a seed keeps the task
	}
	w.pop.Completed++
	w.downloads = append(w.downloads, w.now-p.joined)
	linger := time.Duration(w.rng.ExpFloat64() * float64(w.cfg.Linger))
	w.schedule(event{at: w.now + linger, kind: evLeave, peer: p})
	return nil
}

// ask asks the scheduler for p's parents now (GetCandidateParents), excluding those p could
// not reach, and times the call.
func (w *world) ask(p *peer) error {
	start := time.Now()
	resp, err := w.core.GetCandidateParents(w.ctx, &schedulerv1.GetCandidateParentsRequest{
		PeerId: p.id, TaskId: p.task.id, ExcludedPeerIds: p.excluded,
	})
	w.asks = append(w.asks, time.Since(start))
	if err != nil {
		return fmt.Errorf("candidate parents of %s: %w", p.id, err)
	}
	p.lastAsk = w.now
	p.setParents(resp.Candidates)
	return nil
}

func (w *world) report(p *peer, r *schedulerv1.ProgressReport) error {
	r.PeerId, r.TaskId = p.id, p.task.id
	if err := p.pr.Report(w.ctx, r); err != nil {
		return fmt.Errorf("report of %s: %w", p.id, err)
	}
	return nil
}

func (p *peer) setParents(cs []*schedulerv1.CandidateParent) {
	p.parents = p.parents[:0]
	for _, c := range cs {
		p.parents = append(p.parents, c.PeerId)
	}
	p.excluded = p.excluded[:0]
}
