package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler/rendezvous"
	"github.com/p2pimage/p2p-snapshotter/scheduler/topology"
)

// RegisterPeer makes a host a peer of a task and says how it gets the task's blocks:
//
//   - A task with a provider (a seed peer, a peer reading the source, or a complete peer):
//     DIRECTIVE_FETCH_FROM_PARENTS with candidates from the task's topology.
//   - A task without one whose source is known: the registering host itself if it is a seed
//     (DIRECTIVE_BACK_TO_SOURCE); else a seed chosen by rendezvous hash of the task id over
//     the seed hosts watching, which is sent a SeedTask and returned as the candidate; else,
//     while fewer than the limit of the task's peers do, DIRECTIVE_BACK_TO_SOURCE; else
//     candidates, possibly none.
//   - A task whose source nobody gave: candidates, possibly none; the peer waits on its
//     progress stream.
//
// It is idempotent for a (host, task) pair: a retry returns the same peer id, its current
// directive and fresh candidates.
func (s *Scheduler) RegisterPeer(ctx context.Context, req *schedulerv1.RegisterPeerRequest) (*schedulerv1.RegisterPeerResponse, error) {
	if err := required("host_id", req.GetHostId()); err != nil {
		return nil, err
	}
	if err := validTaskID(req.GetTaskId()); err != nil {
		return nil, err
	}
	count, err := blockCount(req.GetTaskSize(), req.GetBlockSize(), req.GetBlockCount())
	if err != nil {
		return nil, err
	}
	private := req.Source != nil && req.TaskId == schedulerv1.PrivateTaskID(req.Source)
	var (
		name    string
		expires time.Time
	)
	if private {
		if name, expires, err = s.checkPrivate(ctx, req); err != nil {
			return nil, err
		}
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	h, err := s.host(req.HostId)
	if err != nil {
		return nil, err
	}
	t, err := s.task(ctx, req.TaskId, req.BlockSize, req.TaskSize, count)
	if err != nil {
		return nil, err
	}
	switch {
	case private:
		t.grant(name, expires)
	case t.private:
		return nil, fmt.Errorf("task %s is private: register it with its source and a proof of access: %w", t.id, errdefs.ErrPermissionDenied)
	}
	if req.Source != nil && t.source == nil {
		t.source = proto.CloneOf(req.Source)
	}
	p, ok := h.peers[t.id]
	if !ok {
		p = s.addPeer(t, h)
		log.G(ctx).WithFields(log.Fields{"host": h.id, "task": t.id, "peer": p.id}).Debug("peer registered")
	}
	p.registered = true
	p.hasSource = p.hasSource || req.Source != nil
	s.ensureProvider(ctx, t, p)
	resp := &schedulerv1.RegisterPeerResponse{PeerId: p.id}
	if p.source && !p.complete() {
		resp.Directive = schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE
		p.directive = resp.Directive
		return resp, nil
	}
	resp.Directive = schedulerv1.Directive_DIRECTIVE_FETCH_FROM_PARENTS
	p.directive = resp.Directive
	resp.Candidates = candidateList(s.parentsFor(p, s.opts.candidates, nil))
	return resp, nil
}

// task returns the task with id, made if new, after checking the block size and size
// against its peers'. The caller holds mu.
func (s *Scheduler) task(ctx context.Context, id string, blockSize uint32, size uint64, count uint32) (*task, error) {
	t, ok := s.tasks[id]
	if !ok {
		mode := s.opts.mode
		if m, ok := s.opts.taskModes[id]; ok {
			mode = m
		}
		t = &task{
			id: id, mode: mode, blockSize: blockSize, size: size, blockCount: count,
			failedSeeds: make(map[string]bool),
			starving:    make(map[*peer]bool),
		}
		switch mode {
		case ModeTree:
			t.tree = topology.NewTree[*peer](s.opts.fanOut)
		case ModeDAG:
			t.dag = topology.NewDAG[*peer]()
			t.tails = make(map[*peer]struct{})
		}
		s.tasks[id] = t
		log.G(ctx).WithFields(log.Fields{"task": id, "mode": mode}).Debug("new task")
		return t, nil
	}
	if t.blockSize != blockSize {
		return nil, fmt.Errorf("task %s: block size %d, but its peers use %d: %w", id, blockSize, t.blockSize, errdefs.ErrFailedPrecondition)
	}
	if err := s.learnSize(t, size, count); err != nil {
		return nil, err
	}
	return t, nil
}

// learnSize records a task's size when it was unknown, and refuses a different one. The
// caller holds mu.
func (s *Scheduler) learnSize(t *task, size uint64, count uint32) error {
	switch {
	case size == 0:
		return nil
	case t.size == 0:
		s.setSize(t, size, count)
		return nil
	case t.size != size:
		return fmt.Errorf("task %s: size %d, but its peers have %d: %w", t.id, size, t.size, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// setSize sets a task's size and block count, keeping the provider count right for peers
// whose bitmap turns out full. The caller holds mu.
func (s *Scheduler) setSize(t *task, size uint64, count uint32) {
	type flags struct{ prov, b2s bool }
	was := make([]flags, len(t.peers))
	for i, p := range t.peers {
		was[i].prov, was[i].b2s = p.flags()
	}
	t.size, t.blockCount = size, count
	for i, p := range t.peers {
		p.trim()
		t.recount(p, was[i].prov, was[i].b2s)
	}
}

// addPeer makes h a peer of t, placed in the topology, with no parent yet. The caller holds
// mu.
func (s *Scheduler) addPeer(t *task, h *host) *peer {
	id, seq := s.newPeerID()
	p := &peer{id: id, seq: seq, host: h, task: t}
	s.peers[id] = p
	h.peers[t.id] = p
	t.addPeer(p)
	switch t.mode {
	case ModeTree:
		t.tree.Add(p)
	case ModeDAG:
		p.node = t.dag.Add(p)
		t.tails[p] = struct{}{}
	}
	return p
}

// ensureProvider gives a task with a source but no provider one: prefer itself if it is on a
// seed host, else a seed chosen by rendezvous hash, else a peer sent back to the source
// (prefer, when it has the source, else the waiting peer holding the most), within the limit.
// In a tree it also makes sure the root is a provider when there is one. The caller holds mu.
func (s *Scheduler) ensureProvider(ctx context.Context, t *task, prefer *peer) {
	if t.providers > 0 {
		// While the only providers are peers reading the source (no seed could, no peer is
		// complete), a newcomer with the source may read it too, up to the limit.
		if prefer != nil && !prefer.provider() && prefer.hasSource && t.providers == t.backToSource &&
			t.backToSource < s.opts.maxBackToSource && s.pickSeed(t) == nil {
			log.G(ctx).WithFields(log.Fields{"task": t.id, "peer": prefer.id, "host": prefer.host.id}).Info("no seed can read the task: peer sent back to the source")
			s.makeSource(ctx, t, prefer, false, prefer)
			return
		}
		s.rootProvider(ctx, t, prefer)
		return
	}
	s.addProvider(ctx, t, prefer)
}

// addProvider gives t a new provider, as ensureProvider describes, whatever providers it has.
// The caller holds mu.
func (s *Scheduler) addProvider(ctx context.Context, t *task, prefer *peer) {
	if t.source == nil {
		return
	}
	if prefer != nil && prefer.host.isSeed() && !t.failedSeeds[prefer.host.id] && prefer.hasSource {
		s.makeSource(ctx, t, prefer, true, prefer)
		return
	}
	if h := s.pickSeed(t); h != nil {
		p, ok := h.peers[t.id]
		if !ok {
			p = s.addPeer(t, h)
		}
		s.makeSource(ctx, t, p, true, prefer)
		s.events.seedTriggers++
		log.G(ctx).WithFields(log.Fields{"task": t.id, "seed": h.id, "peer": p.id}).Info("seed asked to read the task")
		s.sendSeedTask(ctx, p)
		return
	}
	if t.backToSource >= s.opts.maxBackToSource {
		return
	}
	var b *peer
	if prefer != nil && prefer.hasSource && !prefer.complete() {
		b = prefer
	} else {
		for _, p := range t.peers {
			if p.hasSource && !p.complete() && (b == nil || better(p, b)) {
				b = p
			}
		}
	}
	if b == nil {
		return
	}
	log.G(ctx).WithFields(log.Fields{"task": t.id, "peer": b.id, "host": b.host.id}).Info("no seed can read the task: peer sent back to the source")
	s.makeSource(ctx, t, b, false, prefer)
}

// better orders candidates to go back to the source: a peer with an open stream (it can hear
// the directive) first, then the one holding more, then the older.
func better(a, b *peer) bool {
	if (a.session != nil) != (b.session != nil) {
		return a.session != nil
	}
	if a.heldCount != b.heldCount {
		return a.heldCount > b.heldCount
	}
	return a.seq < b.seq
}

// makeSource makes p read the task's source: as its seed peer, or sent back to the source.
// p becomes the root of a tree; in a DAG it drops its parents. Peers that gain or change a
// parent are told, except quiet (the peer being registered, which gets its answer). The
// caller holds mu.
func (s *Scheduler) makeSource(ctx context.Context, t *task, p *peer, seed bool, quiet *peer) {
	t.change(p, func() {
		p.source = true
		p.seed = seed
		p.backToSource = !seed
	})
	p.directive = schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE
	delete(t.starving, p)
	if !seed {
		s.events.sentBackToSource++
	}
	if p.registered && p != quiet && !seed {
		s.push(p, directiveChange(schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE, "no seed can read the task: read it from its registry"))
	}
	switch t.mode {
	case ModeTree:
		// p takes the root unless another peer reading the source holds it.
		if root, ok := t.tree.Root(); ok && root != p && !root.provider() {
			for _, m := range t.tree.Promote(p) {
				if m != quiet && m != p {
					s.reparent(m)
				}
			}
		}
	case ModeDAG:
		_ = t.dag.SetParents(p.node, nil)
		t.setPrimary(p, nil)
	}
	s.kick(t)
}

// rootProvider makes sure a tree's root is a provider when the task has one, promoting the
// best. The caller holds mu.
func (s *Scheduler) rootProvider(ctx context.Context, t *task, quiet *peer) {
	if t.mode != ModeTree {
		return
	}
	root, ok := t.tree.Root()
	if !ok || root.provider() {
		return
	}
	var best *peer
	for _, p := range t.peers {
		if p.provider() && (best == nil || p.source && !best.source || p.seq < best.seq && p.source == best.source) {
			best = p
		}
	}
	if best == nil {
		return
	}
	for _, m := range t.tree.Promote(best) {
		if m != quiet && m != best {
			s.reparent(m)
		}
	}
	s.kick(t)
}

// pickSeed returns the seed host for t by rendezvous hash over the seed hosts watching, less
// those that failed t or already take part in it, or nil. The caller holds mu.
func (s *Scheduler) pickSeed(t *task) *host {
	if len(s.seeds) == 0 || t.private { // a seed has not proved it may read a private task
		return nil
	}
	ids := make([]string, 0, len(s.seeds))
	for id, h := range s.seeds {
		if t.failedSeeds[id] {
			continue
		}
		if p, ok := h.peers[t.id]; ok && !p.seed {
			continue
		}
		ids = append(ids, id)
	}
	id, ok := rendezvous.Pick(t.id, ids)
	if !ok {
		return nil
	}
	return s.seeds[id]
}

// GetCandidateParents decides a peer's parents now. In a DAG they become its parents; in a
// tree they are its tree parent, or the evaluator's best when that parent is bad or excluded.
// A peer that reads the source or is complete gets none.
func (s *Scheduler) GetCandidateParents(ctx context.Context, req *schedulerv1.GetCandidateParentsRequest) (*schedulerv1.GetCandidateParentsResponse, error) {
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	p, err := s.peer(req.GetPeerId(), req.GetTaskId())
	if err != nil {
		return nil, err
	}
	k := int(req.MaxCount)
	if k == 0 {
		k = s.opts.candidates
	}
	k = min(k, maxCandidates)
	out := s.parentsFor(p, k, req.ExcludedPeerIds)
	if len(out) > 0 {
		p.directive = schedulerv1.Directive_DIRECTIVE_FETCH_FROM_PARENTS
	}
	return &schedulerv1.GetCandidateParentsResponse{Candidates: candidateList(out)}, nil
}

// LeaveTask ends a peer; its children get new parents at once. Leaving an unknown peer
// succeeds.
func (s *Scheduler) LeaveTask(ctx context.Context, req *schedulerv1.LeaveTaskRequest) (*schedulerv1.LeaveTaskResponse, error) {
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	p, err := s.peer(req.GetPeerId(), req.GetTaskId())
	if errdefs.IsNotFound(err) {
		return &schedulerv1.LeaveTaskResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	s.removePeer(ctx, p, nil, !p.complete())
	return &schedulerv1.LeaveTaskResponse{}, nil
}

// peer returns the peer with id in task taskID. The caller holds mu.
func (s *Scheduler) peer(id, taskID string) (*peer, error) {
	if err := required("peer_id", id); err != nil {
		return nil, err
	}
	if err := required("task_id", taskID); err != nil {
		return nil, err
	}
	p, ok := s.peers[id]
	if !ok {
		return nil, fmt.Errorf("peer %q: %w", id, errdefs.ErrNotFound)
	}
	if p.task.id != taskID {
		return nil, fmt.Errorf("peer %s is in task %s, not %s: %w", id, p.task.id, taskID, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// removePeer takes p out of its task and host, ends its stream with why (nil: a normal
// end), and gives its children new parents at once; the task gets a new provider if p was
// its last. failed marks a seed peer's host as failed for the task, so another seed is asked.
// The caller holds mu.
func (s *Scheduler) removePeer(ctx context.Context, p *peer, why error, failed bool) {
	t := p.task
	delete(s.peers, p.id)
	if p.host.peers[t.id] == p {
		delete(p.host.peers, t.id)
	}
	t.removePeer(p)
	delete(t.starving, p)
	prov, b2s := p.flags()
	t.providers -= delta(false, prov)
	t.backToSource -= delta(false, b2s)
	if p.seed && failed && !p.complete() {
		t.failedSeeds[p.host.id] = true
		log.G(ctx).WithFields(log.Fields{"task": t.id, "seed": p.host.id}).Warn("seed failed the task")
	}
	if p.session != nil {
		p.session.box.close(why)
		p.session = nil
	}
	var affected []*peer
	switch t.mode {
	case ModeTree:
		affected = t.tree.Remove(p)
	case ModeDAG:
		t.setPrimary(p, nil)
		for _, n := range t.dag.Remove(p.node) {
			if c := n.Value; c.primary == p {
				t.setPrimary(c, nil)
			}
			affected = append(affected, n.Value)
		}
		delete(t.tails, p)
	}
	if len(t.peers) == 0 {
		delete(s.tasks, t.id)
		return
	}
	s.ensureProvider(ctx, t, nil)
	for _, c := range affected {
		if s.peers[c.id] == c {
			s.reparent(c)
		}
	}
}
