package scheduler

import (
	"bytes"
	"cmp"
	"slices"
	"time"

	"github.com/containerd/log"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler/selection"
	"github.com/p2pimage/p2p-snapshotter/scheduler/topology"
)

// scored is a chosen parent and its score.
type scored struct {
	p       *peer
	score   float64
	primary bool // the peer's primary parent in a DAG (chain.go)
}

// parentsFor decides p's parents now, at most k, skipping those excluded (may be nil), and
// records them in the task's topology. A peer that needs no parent (a source, a complete
// peer) gets none. A peer that needs parents and gets none is marked starving, and is tried
// again whenever the task gains a provider and at every sweep. The caller holds s.mu.
func (s *Scheduler) parentsFor(p *peer, k int, excluded []string) []scored {
	t := p.task
	if p.provider() {
		if t.dag != nil {
			_ = t.dag.SetParents(p.node, nil)
			t.setPrimary(p, nil)
		}
		delete(t.starving, p)
		return nil
	}
	s.events.decisions++
	var start time.Time
	if s.opts.observer != nil {
		start = time.Now()
	}
	out := s.decide(p, k, excluded)
	if s.opts.observer != nil {
		s.opts.observer.Observe(time.Since(start).Seconds())
	}
	if len(out) == 0 {
		t.starving[p] = true
	} else {
		delete(t.starving, p)
	}
	return out
}

// decide chooses p's parents, a peer that needs some, and records them in a DAG. The caller
// holds s.mu.
func (s *Scheduler) decide(p *peer, k int, excluded []string) []scored {
	t := p.task
	var out []scored
	switch t.mode {
	case ModeTree:
		// The tree parent, unless it is corrupt, failing or excluded; then the evaluator's
		// best outside the peer's subtree. Slowness does not count here: a tree parent's
		// pace is its own parent's, and children moved off it would load the uplinks of
		// nodes that already serve FanOut children each.
		treeParent, ok := t.tree.Parent(p)
		if ok && !slices.Contains(excluded, treeParent.id) {
			c := s.candidate(p, treeParent)
			c.Slow = false
			if !s.filter.Bad(&c) {
				out = []scored{{p: treeParent, score: s.eval.Score(p.host.sel, &c)}}
				break
			}
		}
		if ok {
			excluded = append(slices.Clip(excluded), treeParent.id)
		}
		out = s.choose(p, k, excluded)
	case ModeDAG:
		out = s.choose(p, k, excluded)
		out = s.withPrimary(p, out, k, excluded)
		parents := make([]*topology.Node[*peer], len(out))
		for i, c := range out {
			parents[i] = c.p.node
		}
		if err := t.dag.SetParents(p.node, parents); err != nil {
			// choose filtered descendants out, so this cannot happen; should it, keep the
			// graph acyclic and the peer waiting rather than hand out a cycle.
			log.L.WithError(err).WithFields(log.Fields{"task": t.id, "peer": p.id}).Error("chosen parents refused by the DAG")
			out = nil
		}
		var primary *peer
		if len(out) > 0 {
			primary = out[0].p
		}
		t.setPrimary(p, primary)
	}
	return out
}

// choose samples the task's peers in random order until SampleSize of them pass the filter
// (or none is left), scores those, and returns the best k, best first. It permutes
// t.peers in place (a partial Fisher–Yates shuffle), so a decision costs O(sample) plus the
// peers the filter rejects on the way, not O(peers of the task). The caller holds s.mu.
func (s *Scheduler) choose(p *peer, k int, excluded []string) []scored {
	t := p.task
	if t.dag != nil {
		t.dag.MarkDescendants(p.node)
	}
	best := make([]scored, 0, k+1)
	accepted := 0
	n := len(t.peers)
	for i := 0; i < n && accepted < s.opts.sampleSize; i++ {
		t.swap(i, i+s.rng.IntN(n-i))
		c := t.peers[i]
		cand := s.candidate(p, c)
		cand.Excluded = len(excluded) > 0 && slices.Contains(excluded, c.id)
		if s.filter.Check(&cand) != selection.OK {
			continue
		}
		accepted++
		sc := scored{p: c, score: s.eval.Score(p.host.sel, &cand)}
		// Insert into best, kept sorted by score, highest first; ties keep sampling order.
		j := len(best)
		for j > 0 && best[j-1].score < sc.score {
			j--
		}
		if j < k {
			best = slices.Insert(best, j, sc)
			if len(best) > k {
				best = best[:k]
			}
		}
	}
	if len(best) == 0 {
		best = s.lastResort(p, k, excluded)
	}
	return best
}

// lastResort returns, when the filter left no parent, the providers (sources and complete
// peers) it ruled out only for being slow, failing or short of slots: a peer must never be
// left with no parent while the task has a provider that is not corrupt, or it would wait
// for nothing. Excluded, corrupt, self and descendants stay out. The caller holds s.mu and
// has marked p's descendants.
func (s *Scheduler) lastResort(p *peer, k int, excluded []string) []scored {
	var out []scored
	for _, c := range p.task.peers {
		if !c.provider() || len(out) >= k {
			continue
		}
		cand := s.candidate(p, c)
		cand.Excluded = len(excluded) > 0 && slices.Contains(excluded, c.id)
		if cand.Self || cand.Excluded || cand.Descendant || cand.Corrupt {
			continue
		}
		out = append(out, scored{p: c, score: s.eval.Score(p.host.sel, &cand)})
	}
	return out
}

// candidate describes c as a parent of p for the filter and the evaluator. In a DAG, p's
// descendants must have been marked (MarkDescendants). The caller holds s.mu.
func (s *Scheduler) candidate(p, c *peer) selection.Candidate {
	t := p.task
	complete := c.finished || (t.blockCount > 0 && c.heldCount >= int(t.blockCount)) // c.complete(), c.task == t
	cand := selection.Candidate{
		Host:       c.host.sel,
		Self:       c == p,
		Corrupt:    c.corrupt,
		Failures:   c.failures,
		Slow:       s.slow(c),
		BlocksHeld: c.heldCount,
		BlockCount: int(t.blockCount),
		Complete:   complete,
	}
	provider := c.source || complete
	switch t.mode {
	case ModeTree:
		cand.Descendant = t.tree.IsAncestor(p, c)
		cand.Children = t.tree.NumChildren(c)
		_, hasParent := t.tree.Parent(c)
		cand.Serving = provider || c.heldCount > 0 || hasParent
	case ModeDAG:
		cand.Descendant = c != p && t.dag.Marked(c.node)
		cand.Children = len(c.node.Children())
		cand.Serving = provider || c.heldCount > 0 || len(c.node.Parents()) > 0
	}
	return cand
}

// reparent decides p's parents again and sends them on its stream, for a peer whose parent
// left or went bad. The caller holds s.mu.
func (s *Scheduler) reparent(p *peer) {
	if p.provider() {
		return
	}
	if !p.task.starving[p] {
		s.events.reparented++
	}
	if out := s.parentsFor(p, s.opts.candidates, nil); len(out) > 0 {
		s.push(p, newParents(out))
	}
}

// kick tries again to find parents for the task's starving peers. The caller holds s.mu.
func (s *Scheduler) kick(t *task) {
	if len(t.starving) == 0 {
		return
	}
	waiting := make([]*peer, 0, len(t.starving))
	for p := range t.starving {
		waiting = append(waiting, p)
	}
	// Oldest registration first, and a deterministic order for seeded runs.
	slices.SortFunc(waiting, func(a, b *peer) int { return cmp.Compare(a.seq, b.seq) })
	for _, p := range waiting {
		s.reparent(p)
	}
}

// push sends cmd to p's stream, or keeps it for when p opens one. Only the latest command
// counts: each one states p's whole instructions. The caller holds s.mu.
func (s *Scheduler) push(p *peer, cmd *schedulerv1.SchedulerCommand) {
	if nps := cmd.GetNewParents(); nps != nil {
		p.directive = schedulerv1.Directive_DIRECTIVE_FETCH_FROM_PARENTS
	} else if dc := cmd.GetDirectiveChange(); dc != nil {
		p.directive = dc.Directive
	}
	if p.session != nil {
		p.session.box.put(cmd)
		return
	}
	p.pending = cmd
}

func newParents(out []scored) *schedulerv1.SchedulerCommand {
	return &schedulerv1.SchedulerCommand{Command: &schedulerv1.SchedulerCommand_NewParents{
		NewParents: &schedulerv1.NewParents{Candidates: candidateList(out)},
	}}
}

func directiveChange(d schedulerv1.Directive, msg string) *schedulerv1.SchedulerCommand {
	return &schedulerv1.SchedulerCommand{Command: &schedulerv1.SchedulerCommand_DirectiveChange{
		DirectiveChange: &schedulerv1.DirectiveChange{Directive: d, Message: msg},
	}}
}

func candidateList(out []scored) []*schedulerv1.CandidateParent {
	list := make([]*schedulerv1.CandidateParent, len(out))
	for i, c := range out {
		list[i] = candidateProto(c.p, c.score)
		list[i].Primary = c.primary
	}
	return list
}

// candidateProto describes c for the wire; the message shares nothing with the state. The
// caller holds s.mu.
func candidateProto(c *peer, score float64) *schedulerv1.CandidateParent {
	h := c.host
	cp := &schedulerv1.CandidateParent{
		PeerId:       c.id,
		HostId:       h.id,
		BlockAddress: h.address,
		Complete:     c.complete(),
		Score:        score,
		HostType:     h.typ,
		Source:       c.source,
	}
	if !cp.Complete && c.heldCount > 0 {
		cp.HeldBitmap = bytes.Clone(c.held)
	}
	if h.sel.Reported {
		cp.HostState = h.state()
	}
	return cp
}
