package scheduler

import (
	"fmt"
	"testing"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// TestDAGChainsPrimaries: peers that join a DAG task one after another each get the one
// before as primary parent, a chain from the source; one that leaves is bridged over; and a
// chain grows no longer than maxChainDepth.
func TestDAGChainsPrimaries(t *testing.T) {
	e := newEnv(t)
	const n = 6
	var peers []string
	for i := range n + 1 {
		h := fmt.Sprintf("h%d", i)
		e.announce(h, normal)
		r := e.register(h, taskID(1), true)
		if i > 0 {
			if got, want := primaryOf(r.Candidates), peers[i-1]; got != want {
				t.Fatalf("peer %d: primary %q; want the peer before it, %s", i, got, want)
			}
			if len(r.Candidates) < 2 && i > 1 {
				t.Fatalf("peer %d: candidates %v; want standbys beside the primary", i, ids(r.Candidates))
			}
		}
		peers = append(peers, r.PeerId)
	}
	// The third peer leaves: the fourth is bridged to the second.
	pr := e.open(peers[3], taskID(1))
	if _, err := e.s.LeaveTask(e.ctx, &schedulerv1.LeaveTaskRequest{PeerId: peers[2], TaskId: taskID(1)}); err != nil {
		t.Fatal(err)
	}
	cmd := nextCommand(t, pr)
	if got := primaryOf(cmd.GetNewParents().GetCandidates()); got != peers[1] {
		t.Fatalf("after its primary left, peer 3's primary is %q; want peer 1, %s", got, peers[1])
	}
	// A chain at its depth limit branches.
	e.s.mu.Lock()
	t1 := e.s.tasks[taskID(1)]
	limit := maxChainDepth(t1)
	last := e.s.peers[peers[n]]
	last.chainDepth = limit
	e.s.mu.Unlock()
	e.announce("late", normal)
	r := e.register("late", taskID(1), true)
	if got := primaryOf(r.Candidates); got == "" || got == peers[n] {
		t.Fatalf("a peer joining a chain %d deep got primary %q; want another", limit, got)
	}
}
