package scheduler

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/containerd/errdefs"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// HostInfo is one host as Hosts shows it.
type HostInfo struct {
	ID, Hostname string
	// Address is its block service's host:port.
	Address string
	Seed    bool
	// UploadCapacity in bytes per second, as announced; 0 if unknown.
	UploadCapacity uint64
	// The state it reported last: rates in bytes per second.
	UploadRate, DownloadRate uint64
	FreeUploadSlots          uint32
	Load                     float64
	// Tasks is how many tasks it takes part in.
	Tasks int
}

// Hosts returns the announced hosts, by id.
func (s *Scheduler) Hosts() []HostInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]HostInfo, 0, len(s.hosts))
	for _, h := range s.hosts {
		out = append(out, HostInfo{
			ID: h.id, Hostname: h.hostname, Address: h.address, Seed: h.isSeed(), UploadCapacity: h.sel.UploadCapacity,
			UploadRate: h.sel.UploadRate, DownloadRate: h.downloadRate, FreeUploadSlots: h.sel.FreeUploadSlots, Load: h.sel.Load,
			Tasks: len(h.peers),
		})
	}
	slices.SortFunc(out, func(a, b HostInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// TaskSummary is one task as Tasks lists it.
type TaskSummary struct {
	ID   string
	Mode Mode
	// Registry and Repository name where the task is read from, if a peer said.
	Registry, Repository string
	// Size and BlockCount are 0 until a peer knows them.
	Size       uint64
	BlockCount uint32
	// Peers take part in it; Complete of them hold every block.
	Peers, Complete int
}

// Tasks returns the tasks, by id.
func (s *Scheduler) Tasks() []TaskSummary {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TaskSummary, 0, len(s.tasks))
	for _, t := range s.tasks {
		ts := TaskSummary{ID: t.id, Mode: t.mode, Size: t.size, BlockCount: t.blockCount, Peers: len(t.peers)}
		if t.source != nil {
			ts.Registry, ts.Repository = t.source.GetRegistry(), t.source.GetRepository()
		}
		for _, p := range t.peers {
			if p.complete() {
				ts.Complete++
			}
		}
		out = append(out, ts)
	}
	slices.SortFunc(out, func(a, b TaskSummary) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// PeerInfo is one peer of a task as Inspect shows it.
type PeerInfo struct {
	ID, HostID string
	// Parents are the peer's parents in the task's topology: its tree parent, or its DAG
	// parents.
	Parents []string
	// Source is true for a peer reading the task's source (a seed or back-to-source peer);
	// Seed for the seed peer the scheduler made.
	Source, Seed bool
	Complete     bool
	Directive    schedulerv1.Directive
	// Held is how many of the task's blocks the peer holds, as it reported them.
	Held int
	// In is what the peer received from each parent it reported blocks from, by the
	// parent's peer id, whether or not it is still a parent.
	In map[string]Flow
}

// Flow is what a peer received from one parent.
type Flow struct {
	// Bytes in all; Rate in bytes per second over the last few seconds.
	Bytes uint64
	Rate  float64
}

// TaskInfo is a task as Inspect shows it.
type TaskInfo struct {
	ID   string
	Mode Mode
	// Size and BlockCount are 0 until a peer knows them.
	Size       uint64
	BlockSize  uint32
	BlockCount uint32
	// Peers in creation order.
	Peers []PeerInfo
}

// Inspect returns a task's peers and topology, for tests, simulations and operators.
func (s *Scheduler) Inspect(taskID string) (TaskInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[taskID]
	if !ok {
		return TaskInfo{}, fmt.Errorf("task %s: %w", taskID, errdefs.ErrNotFound)
	}
	ps := slices.Clone(t.peers)
	slices.SortFunc(ps, func(a, b *peer) int { return cmp.Compare(a.seq, b.seq) })
	info := TaskInfo{ID: t.id, Mode: t.mode, Size: t.size, BlockSize: t.blockSize, BlockCount: t.blockCount}
	now := s.opts.clock.Now()
	for _, p := range ps {
		pi := PeerInfo{ID: p.id, HostID: p.host.id, Source: p.source, Seed: p.seed, Complete: p.complete(), Directive: p.directive, Held: p.heldCount}
		if len(p.in) > 0 {
			pi.In = make(map[string]Flow, len(p.in))
			for id, f := range p.in {
				pi.In[id] = Flow{Bytes: f.bytes, Rate: f.rate(now)}
			}
		}
		switch t.mode {
		case ModeTree:
			if parent, ok := t.tree.Parent(p); ok {
				pi.Parents = []string{parent.id}
			}
		case ModeDAG:
			for _, parent := range p.node.Parents() {
				pi.Parents = append(pi.Parents, parent.Value.id)
			}
		}
		info.Peers = append(info.Peers, pi)
	}
	return info, nil
}
