package scheduler

import (
	"slices"

	"github.com/p2pimage/p2p-snapshotter/scheduler/selection"
)

// Primary parents chain the peers of a DAG.
//
// Every peer of a DAG task has one primary parent among its K: the one it asks first and
// waits for (CandidateParent.primary); the others stand by for when the primary fails,
// stalls or lacks a block. A new peer's primary is a chain's tail: a serving peer that is no
// one's primary yet, the newest such. Peers that join together so form a chain from the
// source, each uplink carrying the task about once, and the task reaches the last of N peers
// in about F/u + N·b/u (a pipelined chain) rather than the 2F/u of a binary fan-out: with
// equal links, a graph whose edges all point one way can only come near the bound
// max(F/u_s, N·F/(u_s+Σu)) by sending nearly everything along one path, since the first peer
// has no parent but the source. The other parents make it a DAG: a peer whose primary fails
// keeps fetching while the scheduler finds it another.

// A chain's last peer gets the task about N·b/u after its first: longer than a branch's
// F/u once N passes the task's block count. So a chain grows no longer than maxChainDepth:
// a peer whose tails are all that deep branches off the best parent by score instead.
func maxChainDepth(t *task) int {
	if t.blockCount <= 0 {
		return 64
	}
	return max(8, int(t.blockCount)/4)
}

// setPrimary makes q (nil for none) p's primary parent, keeping the tails. The caller holds
// s.mu. A peer leaving the task clears its own primary, then its children's, and only then
// leaves the tails.
func (t *task) setPrimary(p, q *peer) {
	if p.primary == q {
		return
	}
	if old := p.primary; old != nil {
		old.primaryChildren--
		if old.primaryChildren == 0 {
			t.tails[old] = struct{}{}
		}
	}
	p.primary, p.chainDepth = q, 0
	if q != nil {
		q.primaryChildren++
		p.chainDepth = q.chainDepth + 1
		delete(t.tails, q)
	}
}

// tail returns the newest tail that passes the filter as p's parent and is not too deep, or
// nil. It costs O(tails): a task's tails are the ends of its chains, a few unless many peers
// left. The caller holds s.mu and has marked p's descendants.
func (s *Scheduler) tail(p *peer, excluded []string) *peer {
	var best *peer
	limit := maxChainDepth(p.task)
	for c := range p.task.tails {
		if c == p || best != nil && c.seq < best.seq || c.chainDepth >= limit {
			continue
		}
		if s.fits(p, c, excluded, false) {
			best = c
		}
	}
	return best
}

// fits reports whether c passes the filter as p's parent, if asked regardless of c's block
// times. The caller holds s.mu and has marked p's descendants.
func (s *Scheduler) fits(p, c *peer, excluded []string, slowOK bool) bool {
	cand := s.candidate(p, c)
	cand.Excluded = slices.Contains(excluded, c.id)
	if slowOK {
		cand.Slow = false
	}
	return s.filter.Check(&cand) == selection.OK
}

// withPrimary returns out, p's best k parents by score, with p's primary first and marked:
// the one it has while that passes the filter, slow or not (a chain moved at every decision
// would be no chain, and a primary's pace is its own primary's, as in a tree), else the
// newest tail that does, else the best of out not at the depth limit. The caller holds s.mu
// and has marked p's descendants (choose does).
func (s *Scheduler) withPrimary(p *peer, out []scored, k int, excluded []string) []scored {
	q := p.primary
	if q != nil && !s.fits(p, q, excluded, true) {
		q = nil
	}
	if q == nil {
		q = s.tail(p, excluded)
	}
	if q == nil {
		// No tail will do: branch off the best parent that is not at the depth limit.
		if len(out) > 0 {
			j := slices.IndexFunc(out, func(c scored) bool { return c.p.chainDepth < maxChainDepth(p.task) })
			j = max(j, 0)
			out[0], out[j] = out[j], out[0]
			out[0].primary = true
		}
		return out
	}
	cand := s.candidate(p, q)
	rest := slices.DeleteFunc(out, func(c scored) bool { return c.p == q })
	out = append([]scored{{p: q, score: s.eval.Score(p.host.sel, &cand), primary: true}}, rest...)
	return out[:min(len(out), max(k, 1))]
}
