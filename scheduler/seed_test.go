package scheduler

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler/rendezvous"
)

func TestSeedTriggeredOnce(t *testing.T) {
	for _, mode := range []Mode{ModeDAG, ModeTree} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, WithTopology(mode, 2))
			e.announce("seed-1", seed)
			w := e.watch("seed-1")
			for i := range 4 {
				e.announce(fmt.Sprintf("node-%d", i), normal)
			}
			task := taskID(1)
			first := e.register("node-0", task, true)
			if first.Directive != schedulerv1.Directive_DIRECTIVE_FETCH_FROM_PARENTS {
				t.Fatalf("got directive %v; want FETCH_FROM_PARENTS", first.Directive)
			}
			cmd, err := pending(w.box)
			if err != nil {
				t.Fatalf("seed got no command: %v", err)
			}
			st := cmd.GetSeedTask()
			if st.GetTaskId() != task || st.GetBlockCount() != 16 || st.GetSource().GetRepository() != "library/app" {
				t.Fatalf("got seed task %v; want task %s, 16 blocks, the source", st, task)
			}
			if got := ids(first.Candidates); !slices.Equal(got, []string{st.PeerId}) {
				t.Fatalf("first peer got candidates %v; want the seed peer %s", got, st.PeerId)
			}
			if first.Candidates[0].HostType != seed || !first.Candidates[0].Source {
				t.Fatalf("got candidate %v; want a seed reading the source", first.Candidates[0])
			}
			for i := 1; i < 4; i++ {
				e.register(fmt.Sprintf("node-%d", i), task, true)
			}
			if cmd, err := pending(w.box); err == nil {
				t.Fatalf("seed got a second command %v; want exactly one", cmd)
			}
			// The seed registers: same peer id, back to source.
			resp := e.register("seed-1", task, true)
			if resp.PeerId != st.PeerId || resp.Directive != schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE {
				t.Fatalf("seed registered as %s with %v; want %s and BACK_TO_SOURCE", resp.PeerId, resp.Directive, st.PeerId)
			}
			info := e.info(task)
			if !info.Peers[1].Seed || info.Peers[1].ID != st.PeerId {
				t.Fatalf("got peers %+v; want the seed peer second", info.Peers)
			}
			if got := e.s.Stats().BackToSource; got != 0 {
				t.Fatalf("got %d back-to-source peers; want 0 (seeds do not count)", got)
			}
		})
	}
}

func TestSeedChosenByRendezvous(t *testing.T) {
	e := newEnv(t)
	seeds := []string{"seed-a", "seed-b", "seed-c"}
	watches := map[string]*Watch{}
	for _, s := range seeds {
		e.announce(s, seed)
		watches[s] = e.watch(s)
	}
	e.announce("node", normal)
	for i := range 30 {
		task := taskID(i)
		e.register("node", task, true)
		want, _ := rendezvous.Pick(task, seeds)
		for _, s := range seeds {
			cmd, err := pending(watches[s].box)
			if s == want && (err != nil || cmd.GetSeedTask().GetTaskId() != task) {
				t.Fatalf("task %d: want seed %s to get it; got %v, %v", i, s, cmd, err)
			}
			if s != want && err == nil {
				t.Fatalf("task %d: seed %s got %v; want only %s", i, s, cmd, want)
			}
		}
	}
}

func TestSeedNeedsWatchAndSource(t *testing.T) {
	e := newEnv(t)
	e.announce("seed-1", seed) // no watch: cannot be asked
	e.announce("a", normal)
	e.announce("b", normal)
	resp := e.register("a", taskID(1), false)
	if resp.Directive != schedulerv1.Directive_DIRECTIVE_FETCH_FROM_PARENTS || len(resp.Candidates) != 0 {
		t.Fatalf("no source: got %v with %d candidates; want FETCH_FROM_PARENTS with none", resp.Directive, len(resp.Candidates))
	}
	pa := e.open(resp.PeerId, taskID(1))
	// A second peer brings the source; no seed watches, so it reads the source, and the
	// first gets it as parent on its stream.
	resp2 := e.register("b", taskID(1), true)
	if resp2.Directive != schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE {
		t.Fatalf("got %v; want BACK_TO_SOURCE", resp2.Directive)
	}
	cmd := nextCommand(t, pa)
	if got := ids(cmd.GetNewParents().GetCandidates()); !slices.Equal(got, []string{resp2.PeerId}) {
		t.Fatalf("waiting peer got %v; want the back-to-source peer %s", got, resp2.PeerId)
	}
}

func TestBackToSourceLimit(t *testing.T) {
	tests := []struct {
		name      string
		limit     int
		wantB2S   int
		peers     int
		wantStats int
	}{
		{"default one", 1, 1, 5, 1},
		{"two", 2, 2, 5, 2},
		{"none", 0, 0, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, WithMaxBackToSource(tt.limit))
			var b2s []string
			var others []*schedulerv1.RegisterPeerResponse
			for i := range tt.peers {
				h := fmt.Sprintf("n%d", i)
				e.announce(h, normal)
				resp := e.register(h, taskID(7), true)
				if resp.Directive == schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE {
					b2s = append(b2s, resp.PeerId)
				} else {
					others = append(others, resp)
				}
			}
			if len(b2s) != tt.wantB2S {
				t.Fatalf("got %d peers back to source; want %d", len(b2s), tt.wantB2S)
			}
			if got := e.s.Stats().BackToSource; got != tt.wantStats {
				t.Fatalf("got Stats().BackToSource %d; want %d", got, tt.wantStats)
			}
			for _, o := range others {
				if tt.limit > 0 && len(o.Candidates) == 0 {
					t.Fatalf("peer %s got no candidate; want a parent fed by the back-to-source peers", o.PeerId)
				}
			}
			if tt.limit == 1 && !slices.Equal(ids(others[0].Candidates), b2s) {
				t.Fatalf("second peer got %v; want the back-to-source peer %v", ids(others[0].Candidates), b2s)
			}
		})
	}
}

func TestSeedFailover(t *testing.T) {
	e := newEnv(t)
	seeds := []string{"seed-a", "seed-b"}
	watches := map[string]*Watch{}
	for _, s := range seeds {
		e.announce(s, seed)
		watches[s] = e.watch(s)
	}
	e.announce("node", normal)
	task := taskID(3)
	resp := e.register("node", task, true)
	pn := e.open(resp.PeerId, task)
	rank := rendezvous.Rank(task, seeds)
	cmd, _ := pending(watches[rank[0]].box)
	first := cmd.GetSeedTask()
	// The first seed registers, then gives up.
	e.register(rank[0], task, true)
	ps := e.open(first.PeerId, task)
	e.report(ps, &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_Failed{Failed: &schedulerv1.PeerFailed{Message: "registry 500"}}})
	if _, err := pending(ps.box); !errors.Is(err, io.EOF) {
		t.Fatalf("failed seed's stream: got %v; want it ended (EOF)", err)
	}
	cmd, err := pending(watches[rank[1]].box)
	if err != nil || cmd.GetSeedTask().GetTaskId() != task {
		t.Fatalf("second seed: got %v, %v; want the task", cmd, err)
	}
	second := cmd.GetSeedTask()
	if got := ids(nextCommand(t, pn).GetNewParents().GetCandidates()); !slices.Equal(got, []string{second.PeerId}) {
		t.Fatalf("node got parents %v; want the second seed %s", got, second.PeerId)
	}
	// The second seed's host dies too: no seed is left, so the node reads the source.
	e.clk.Advance(20 * time.Second)
	e.keepalive("node")
	e.keepalive(rank[0])
	e.s.sweep(e.ctx)
	sc := nextCommand(t, pn)
	if d := sc.GetDirectiveChange().GetDirective(); d != schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE {
		t.Fatalf("node got %v; want BACK_TO_SOURCE", sc)
	}
	if _, err := pending(watches[rank[1]].box); !errdefs.IsNotFound(err) {
		t.Fatalf("dead seed's watch: got %v; want NotFound", err)
	}
}

func TestWatchResendsPendingSeedTasks(t *testing.T) {
	e := newEnv(t)
	e.announce("seed-1", seed)
	w := e.watch("seed-1")
	e.announce("node", normal)
	e.register("node", taskID(1), true)
	e.register("node", taskID(2), true)
	e.register("node", taskID(3), true)
	var third string
	for range 3 {
		cmd, _ := pending(w.box)
		if st := cmd.GetSeedTask(); st.GetTaskId() == taskID(3) {
			third = st.PeerId
		}
	}
	e.register("seed-1", taskID(1), true) // acted on task 1 by registering
	e.open(third, taskID(3))              // and on task 3 by opening its stream
	w2 := e.watch("seed-1")
	if _, err := pending(w.box); !errors.Is(err, io.EOF) {
		t.Fatalf("old watch: got %v; want it ended (EOF)", err)
	}
	cmd, err := pending(w2.box)
	if err != nil || cmd.GetSeedTask().GetTaskId() != taskID(2) {
		t.Fatalf("new watch: got %v, %v; want task 2 again", cmd, err)
	}
	if cmd, err := pending(w2.box); err == nil {
		t.Fatalf("new watch: got %v; want only task 2", cmd)
	}
}

func TestSeedArrivesLater(t *testing.T) {
	e := newEnv(t, WithMaxBackToSource(0))
	e.announce("node", normal)
	resp := e.register("node", taskID(1), true)
	if resp.Directive != schedulerv1.Directive_DIRECTIVE_FETCH_FROM_PARENTS || len(resp.Candidates) != 0 {
		t.Fatalf("got %v %v; want to wait", resp.Directive, resp.Candidates)
	}
	pn := e.open(resp.PeerId, taskID(1))
	e.announce("seed-1", seed)
	w := e.watch("seed-1")
	cmd, err := pending(w.box)
	if err != nil {
		t.Fatalf("seed got nothing: %v", err)
	}
	if got := ids(nextCommand(t, pn).GetNewParents().GetCandidates()); !slices.Equal(got, []string{cmd.GetSeedTask().PeerId}) {
		t.Fatalf("node got %v; want the seed", got)
	}
}

// TestSeedTriggeredWhenTheOnlyHolderGoesBad: a peer that claims to hold the whole task (and
// so kept the scheduler from asking a seed) sends a corrupt block; the scheduler then asks
// a seed to read the task and gives the other peers that seed.
func TestSeedTriggeredWhenTheOnlyHolderGoesBad(t *testing.T) {
	e := newEnv(t)
	e.announce("seed-1", seed)
	w := e.watch("seed-1")
	e.announce("liar", normal)
	e.announce("node", normal)
	task := taskID(7)
	liar := e.register("liar", task, false)
	lp := e.open(liar.PeerId, task)
	e.report(lp, &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_Finished{Finished: &schedulerv1.PeerFinished{TaskSize: 16 << 20, BlockCount: 16}}})
	node := e.register("node", task, true)
	if got := ids(node.Candidates); !slices.Equal(got, []string{liar.PeerId}) {
		t.Fatalf("got candidates %v; want the peer claiming the whole task", got)
	}
	if cmd, err := pending(w.box); err == nil {
		t.Fatalf("seed asked %v while a peer held the task", cmd)
	}
	np := e.open(node.PeerId, task)
	e.report(np, &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_BlockFailure{BlockFailure: &schedulerv1.BlockFailure{
		Index: 0, ParentPeerId: liar.PeerId, Reason: schedulerv1.FailureReason_FAILURE_REASON_DIGEST_MISMATCH}}})
	cmd, err := pending(w.box)
	if err != nil || cmd.GetSeedTask().GetTaskId() != task {
		t.Fatalf("after the only holder went bad: seed command %v, %v; want the task", cmd, err)
	}
	got := nextCommand(t, np).GetNewParents()
	if ps := ids(got.GetCandidates()); !slices.Contains(ps, cmd.GetSeedTask().GetPeerId()) || slices.Contains(ps, liar.PeerId) {
		t.Fatalf("node's new parents %v; want the seed's peer %s and not the liar", ps, cmd.GetSeedTask().GetPeerId())
	}
}
