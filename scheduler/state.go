package scheduler

import (
	"time"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler/selection"
	"github.com/p2pimage/p2p-snapshotter/scheduler/topology"
)

// host is an announced host. Guarded by Scheduler.mu, like everything in this file.
type host struct {
	id       string
	hostname string
	address  string
	typ      schedulerv1.HostType
	sel      selection.Host // announcement and last state, as the evaluator sees them
	// Last reported state beyond what sel holds; valid when sel.Reported.
	downloadRate uint64
	taskCount    uint32
	lastSeen     time.Time
	peers        map[string]*peer // by task id
	watch        *Watch           // its open WatchHost stream, if any
}

func (h *host) isSeed() bool { return h.typ == schedulerv1.HostType_HOST_TYPE_SEED }

// state returns a copy of the host's last reported state.
func (h *host) state() *schedulerv1.HostState {
	return &schedulerv1.HostState{
		UploadRate:      h.sel.UploadRate,
		DownloadRate:    h.downloadRate,
		FreeUploadSlots: h.sel.FreeUploadSlots,
		Load:            h.sel.Load,
		TaskCount:       h.taskCount,
	}
}

// task is a layer stream some peers take part in.
type task struct {
	id         string
	mode       Mode
	blockSize  uint32
	size       uint64 // 0 until known
	blockCount uint32 // 0 until known
	source     *schedulerv1.TaskSource
	// private: the task is a private repository's layer (PrivateTaskID), whose peers proved
	// they may read it; grants says until when, by certificate name.
	private bool
	grants  map[string]time.Time

	// peers in no particular order (sampling permutes it in place); peer.index is the position.
	peers []*peer
	tree  *topology.Tree[*peer] // ModeTree
	dag   *topology.DAG[*peer]  // ModeDAG

	providers    int                // peers that are sources or complete
	backToSource int                // peers sent back to the source, not complete
	failedSeeds  map[string]bool    // seed hosts that failed this task: not asked again
	starving     map[*peer]bool     // peers that fetch but got no parent
	tails        map[*peer]struct{} // ModeDAG: peers no one has as primary parent (chain.go)
}

// peer is one host taking part in one task.
type peer struct {
	id   string
	seq  uint64 // order of creation
	host *host
	task *task

	index int                   // in task.peers
	node  *topology.Node[*peer] // in task.dag (ModeDAG)
	// primary is its primary parent in a DAG, and primaryChildren how many peers have it
	// as theirs (chain.go).
	primary         *peer
	primaryChildren int
	chainDepth      int  // primary hops from a peer with none, when the primary was set
	hasSource       bool // registered with a TaskSource: can be sent back to the source
	// source is true for a peer that reads the task from its registry: the seed peer the
	// scheduler made, or a peer sent back to the source (backToSource then true too).
	source       bool
	backToSource bool
	seed         bool // made by the scheduler on a seed host
	registered   bool // the host called RegisterPeer (false for a seed peer until it does)
	directive    schedulerv1.Directive

	held      schedulerv1.Bitmap
	heldCount int
	finished  bool // reported PeerFinished

	// As a parent, from its children's reports.
	corrupt   bool
	failures  int
	durations selection.Durations

	// in is what it received from each parent, by the parent's peer id (NewBlocks).
	in map[string]*flow

	session *Progress                     // its open SyncProgress stream, if any
	pending *schedulerv1.SchedulerCommand // latest command while no stream is open
}

// complete reports whether p holds every block: it finished, or its bitmap is full.
func (p *peer) complete() bool {
	return p.finished || (p.task.blockCount > 0 && p.heldCount >= int(p.task.blockCount))
}

// blockBytes returns the length of block i of t: the block size, less for the last block of
// a task whose size is known.
func (t *task) blockBytes(i uint32) uint64 {
	if t.size > 0 && t.blockCount > 0 && i == t.blockCount-1 {
		return t.size - uint64(t.blockCount-1)*uint64(t.blockSize)
	}
	return uint64(t.blockSize)
}

// provider reports whether p is a source of the task's data that needs no parent: it reads
// the source or holds everything.
func (p *peer) provider() bool { return p.source || p.complete() }

// addPeer appends p to t's peer list.
func (t *task) addPeer(p *peer) {
	p.index = len(t.peers)
	t.peers = append(t.peers, p)
}

// removePeer takes p out of t's peer list.
func (t *task) removePeer(p *peer) {
	last := len(t.peers) - 1
	t.swap(p.index, last)
	t.peers[last] = nil
	t.peers = t.peers[:last]
}

func (t *task) swap(i, j int) {
	t.peers[i], t.peers[j] = t.peers[j], t.peers[i]
	t.peers[i].index = i
	t.peers[j].index = j
}

// flags are the two things about a peer that t counts.
func (p *peer) flags() (provider, backToSource bool) {
	c := p.complete()
	return p.source || c, p.backToSource && !c
}

// change runs f, which changes p (or its task), and keeps t.providers and t.backToSource
// right across it.
func (t *task) change(p *peer, f func()) {
	prov, b2s := p.flags()
	f()
	t.recount(p, prov, b2s)
}

// recount adjusts t's counters for p, whose flags were prov and b2s.
func (t *task) recount(p *peer, prov, b2s bool) {
	nprov, nb2s := p.flags()
	t.providers += delta(prov, nprov)
	t.backToSource += delta(b2s, nb2s)
}

func delta(before, after bool) int {
	switch {
	case before && !after:
		return -1
	case !before && after:
		return 1
	}
	return 0
}
