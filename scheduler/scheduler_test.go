package scheduler

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler/clock"
	"github.com/p2pimage/p2p-snapshotter/scheduler/selection"
)

func TestValidation(t *testing.T) {
	e := newEnv(t)
	e.announce("h", normal)
	e.register("h", taskID(1), true)
	tests := []struct {
		name string
		call func() error
		is   func(error) bool
	}{
		{"announce without id", func() error {
			_, err := e.s.AnnounceHost(e.ctx, &schedulerv1.AnnounceHostRequest{BlockAddress: "h:1"})
			return err
		}, errdefs.IsInvalidArgument},
		{"announce without port", func() error {
			_, err := e.s.AnnounceHost(e.ctx, &schedulerv1.AnnounceHostRequest{HostId: "x", BlockAddress: "h"})
			return err
		}, errdefs.IsInvalidArgument},
		{"keepalive of an unknown host", func() error {
			_, err := e.s.Keepalive(e.ctx, &schedulerv1.KeepaliveRequest{HostId: "nobody"})
			return err
		}, errdefs.IsNotFound},
		{"register on an unknown host", func() error {
			_, err := e.s.RegisterPeer(e.ctx, &schedulerv1.RegisterPeerRequest{HostId: "nobody", TaskId: taskID(1), BlockSize: 1})
			return err
		}, errdefs.IsNotFound},
		{"bad task id", func() error {
			_, err := e.s.RegisterPeer(e.ctx, &schedulerv1.RegisterPeerRequest{HostId: "h", TaskId: "sha256:ABC", BlockSize: 1})
			return err
		}, errdefs.IsInvalidArgument},
		{"upper-case hex", func() error {
			_, err := e.s.RegisterPeer(e.ctx, &schedulerv1.RegisterPeerRequest{HostId: "h", TaskId: "sha256:" + fmt.Sprintf("%064X", 10), BlockSize: 1})
			return err
		}, errdefs.IsInvalidArgument},
		{"no block size", func() error {
			_, err := e.s.RegisterPeer(e.ctx, &schedulerv1.RegisterPeerRequest{HostId: "h", TaskId: taskID(2)})
			return err
		}, errdefs.IsInvalidArgument},
		{"block count inconsistent with size", func() error {
			_, err := e.s.RegisterPeer(e.ctx, &schedulerv1.RegisterPeerRequest{HostId: "h", TaskId: taskID(2), TaskSize: 10, BlockSize: 4, BlockCount: 2})
			return err
		}, errdefs.IsInvalidArgument},
		{"block size differs from the task's", func() error {
			_, err := e.s.RegisterPeer(e.ctx, &schedulerv1.RegisterPeerRequest{HostId: "h", TaskId: taskID(1), BlockSize: 4096})
			return err
		}, errdefs.IsFailedPrecondition},
		{"size differs from the task's", func() error {
			_, err := e.s.RegisterPeer(e.ctx, &schedulerv1.RegisterPeerRequest{HostId: "h", TaskId: taskID(1), BlockSize: 1 << 20, TaskSize: 1 << 20})
			return err
		}, errdefs.IsFailedPrecondition},
		{"candidates of an unknown peer", func() error {
			_, err := e.s.GetCandidateParents(e.ctx, &schedulerv1.GetCandidateParentsRequest{PeerId: "nobody", TaskId: taskID(1)})
			return err
		}, errdefs.IsNotFound},
		{"watch of an unknown host", func() error {
			_, err := e.s.WatchHost(e.ctx, &schedulerv1.WatchHostRequest{HostId: "nobody"})
			return err
		}, errdefs.IsNotFound},
		{"progress of an unknown peer", func() error {
			_, err := e.s.OpenProgress(e.ctx, &schedulerv1.ProgressReport{PeerId: "nobody", TaskId: taskID(1)})
			return err
		}, errdefs.IsNotFound},
		{"leave of an unknown peer succeeds", func() error {
			_, err := e.s.LeaveTask(e.ctx, &schedulerv1.LeaveTaskRequest{PeerId: "nobody", TaskId: taskID(1)})
			return err
		}, func(err error) bool { return err == nil }},
		{"leave of an unknown host succeeds", func() error {
			_, err := e.s.LeaveHost(e.ctx, &schedulerv1.LeaveHostRequest{HostId: "nobody"})
			return err
		}, func(err error) bool { return err == nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !tt.is(err) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestRegisterIdempotent(t *testing.T) {
	e := newEnv(t)
	e.announce("a", normal)
	e.announce("b", normal)
	r1 := e.register("a", taskID(1), true)
	r2 := e.register("a", taskID(1), true)
	if r1.PeerId != r2.PeerId || r2.Directive != schedulerv1.Directive_DIRECTIVE_BACK_TO_SOURCE {
		t.Fatalf("got %s/%v then %s/%v; want the same peer, back to source", r1.PeerId, r1.Directive, r2.PeerId, r2.Directive)
	}
	if got := e.s.Stats(); got.Peers != 1 || got.BackToSource != 1 {
		t.Fatalf("got %+v; want 1 peer, 1 back to source", got)
	}
}

func TestReportsMakeParentsBad(t *testing.T) {
	fail := func(reason schedulerv1.FailureReason) *schedulerv1.ProgressReport {
		return &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_BlockFailure{BlockFailure: &schedulerv1.BlockFailure{Index: 0, Reason: reason}}}
	}
	blocks := func(us uint64, idx ...uint32) *schedulerv1.ProgressReport {
		return &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_NewBlocks{NewBlocks: &schedulerv1.NewBlocks{Indexes: idx, FetchDurationUs: us}}}
	}
	slowHistory := append(slices.Repeat([]*schedulerv1.ProgressReport{blocks(10_000, 1)}, selection.MinSamples+2), blocks(200_000, 2))
	mismatch := []*schedulerv1.ProgressReport{fail(schedulerv1.FailureReason_FAILURE_REASON_DIGEST_MISMATCH)}
	tests := []struct {
		name    string
		reports []*schedulerv1.ProgressReport // from the child c, about the parent
		later   time.Duration                 // then the clock moves on by this much
		wantBad bool
		parent  string // of c: "src" (the source), "a", or "b" (c's primary)
	}{
		{"digest mismatch", mismatch, 0, true, "src"},
		{"two timeouts", []*schedulerv1.ProgressReport{fail(schedulerv1.FailureReason_FAILURE_REASON_TIMEOUT), fail(schedulerv1.FailureReason_FAILURE_REASON_CONNECTION)}, 0, false, "src"},
		{"three timeouts", []*schedulerv1.ProgressReport{fail(schedulerv1.FailureReason_FAILURE_REASON_TIMEOUT), fail(schedulerv1.FailureReason_FAILURE_REASON_TIMEOUT), fail(schedulerv1.FailureReason_FAILURE_REASON_CONNECTION)}, 0, true, "src"},
		{"failures reset by a block", []*schedulerv1.ProgressReport{fail(schedulerv1.FailureReason_FAILURE_REASON_TIMEOUT), fail(schedulerv1.FailureReason_FAILURE_REASON_TIMEOUT), blocks(1000, 1), fail(schedulerv1.FailureReason_FAILURE_REASON_TIMEOUT)}, 0, false, "src"},
		{"busy is not bad", []*schedulerv1.ProgressReport{fail(schedulerv1.FailureReason_FAILURE_REASON_BUSY), fail(schedulerv1.FailureReason_FAILURE_REASON_BUSY), fail(schedulerv1.FailureReason_FAILURE_REASON_BUSY)}, 0, false, "src"},
		{"slow block after a steady history", slowHistory, 0, true, "a"},
		{"a slow mark lapses", slowHistory, selection.SlowFor, false, "a"},
		{"a source is never slow", slowHistory, 0, false, "src"},
		{"a slow primary parent stays", slowHistory, 0, false, "b"},
		{"a corrupt primary parent goes", mismatch, 0, true, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			for _, h := range []string{"src", "a", "b", "c"} {
				e.announce(h, normal)
			}
			peers := map[string]*schedulerv1.RegisterPeerResponse{"src": e.register("src", taskID(1), true)}
			peers["a"] = e.register("a", taskID(1), true)
			if !slices.Equal(ids(peers["a"].Candidates), []string{peers["src"].PeerId}) {
				t.Fatalf("got %v; want the source peer", ids(peers["a"].Candidates))
			}
			peers["b"] = e.register("b", taskID(1), true) // parents: a (primary) and src
			c := e.register("c", taskID(1), true)         // parents: b (primary), a and src
			if got := primaryOf(c.Candidates); got != peers["b"].PeerId {
				t.Fatalf("c's primary parent is %q; want b's peer %s", got, peers["b"].PeerId)
			}
			parent := peers[tt.parent].PeerId
			pc := e.open(c.PeerId, taskID(1))
			for _, r := range tt.reports {
				r = proto.Clone(r).(*schedulerv1.ProgressReport)
				if bf := r.GetBlockFailure(); bf != nil {
					bf.ParentPeerId = parent
				}
				if nb := r.GetNewBlocks(); nb != nil {
					nb.ParentPeerId = parent
				}
				e.report(pc, r)
			}
			e.clk.Advance(tt.later)
			resp, err := e.s.GetCandidateParents(e.ctx, &schedulerv1.GetCandidateParentsRequest{PeerId: c.PeerId, TaskId: taskID(1)})
			if err != nil {
				t.Fatal(err)
			}
			if offered := slices.Contains(ids(resp.Candidates), parent); offered == tt.wantBad {
				t.Fatalf("got candidates %v; want the parent %s offered: %v", ids(resp.Candidates), parent, !tt.wantBad)
			}
		})
	}
}

// primaryOf returns the peer id of the primary parent among cs, or "".
func primaryOf(cs []*schedulerv1.CandidateParent) string {
	for _, c := range cs {
		if c.GetPrimary() {
			return c.GetPeerId()
		}
	}
	return ""
}

// TestTreeKeepsASlowParent: in a tree, a slow parent keeps its children (moving them would
// load other nodes' uplinks); a corrupt one does not.
func TestTreeKeepsASlowParent(t *testing.T) {
	for _, tt := range []struct {
		name     string
		last     *schedulerv1.ProgressReport
		wantKept bool
	}{
		{"slow", &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_NewBlocks{NewBlocks: &schedulerv1.NewBlocks{Indexes: []uint32{2}, FetchDurationUs: 200_000}}}, true},
		{"corrupt", &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_BlockFailure{BlockFailure: &schedulerv1.BlockFailure{Reason: schedulerv1.FailureReason_FAILURE_REASON_DIGEST_MISMATCH}}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, WithTopology(ModeTree, 2))
			for _, h := range []string{"src", "a", "b", "c"} {
				e.announce(h, normal)
			}
			e.register("src", taskID(1), true)
			a := e.register("a", taskID(1), true)
			e.register("b", taskID(1), true)
			c := e.register("c", taskID(1), true) // the first child of a
			if !slices.Equal(ids(c.Candidates), []string{a.PeerId}) {
				t.Fatalf("got %v; want the tree parent %s", ids(c.Candidates), a.PeerId)
			}
			pc := e.open(c.PeerId, taskID(1))
			steady := &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_NewBlocks{NewBlocks: &schedulerv1.NewBlocks{Indexes: []uint32{1}, FetchDurationUs: 10_000, ParentPeerId: a.PeerId}}}
			for range selection.MinSamples + 2 {
				e.report(pc, steady)
			}
			if nb := tt.last.GetNewBlocks(); nb != nil {
				nb.ParentPeerId = a.PeerId
			}
			if bf := tt.last.GetBlockFailure(); bf != nil {
				bf.ParentPeerId = a.PeerId
			}
			e.report(pc, tt.last)
			resp, err := e.s.GetCandidateParents(e.ctx, &schedulerv1.GetCandidateParentsRequest{PeerId: c.PeerId, TaskId: taskID(1)})
			if err != nil {
				t.Fatal(err)
			}
			if kept := slices.Equal(ids(resp.Candidates), []string{a.PeerId}); kept != tt.wantKept {
				t.Fatalf("got candidates %v; want only the tree parent %s: %v", ids(resp.Candidates), a.PeerId, tt.wantKept)
			}
		})
	}
}

func TestExcludedAndSlots(t *testing.T) {
	e := newEnv(t)
	e.announce("src", normal)
	e.announce("busy", normal, func(r *schedulerv1.AnnounceHostRequest) { r.UploadSlots = 2 })
	e.announce("c", normal)
	src := e.register("src", taskID(1), true)
	busy := e.register("busy", taskID(1), true)
	c := e.register("c", taskID(1), true)
	get := func(excluded ...string) []string {
		resp, err := e.s.GetCandidateParents(e.ctx, &schedulerv1.GetCandidateParentsRequest{PeerId: c.PeerId, TaskId: taskID(1), ExcludedPeerIds: excluded})
		if err != nil {
			t.Fatal(err)
		}
		return ids(resp.Candidates)
	}
	if got := get(); len(got) != 2 {
		t.Fatalf("got %v; want both", got)
	}
	if got := get(src.PeerId); !slices.Equal(got, []string{busy.PeerId}) {
		t.Fatalf("excluding the source: got %v; want only %s", got, busy.PeerId)
	}
	if _, err := e.s.Keepalive(e.ctx, &schedulerv1.KeepaliveRequest{HostId: "busy", State: &schedulerv1.HostState{FreeUploadSlots: 0}}); err != nil {
		t.Fatal(err)
	}
	if got := get(); !slices.Equal(got, []string{src.PeerId}) {
		t.Fatalf("busy host out of slots: got %v; want only %s", got, src.PeerId)
	}
}

func TestCandidateDetails(t *testing.T) {
	e := newEnv(t)
	e.announce("src", normal, func(r *schedulerv1.AnnounceHostRequest) { r.UploadCapacity = 100 })
	e.announce("c", normal)
	src := e.register("src", taskID(1), true)
	ps := e.open(src.PeerId, taskID(1))
	e.report(ps, &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_NewBlocks{NewBlocks: &schedulerv1.NewBlocks{Indexes: []uint32{0, 2}}}})
	if _, err := e.s.Keepalive(e.ctx, &schedulerv1.KeepaliveRequest{HostId: "src", State: &schedulerv1.HostState{UploadRate: 25, Load: 0.5, TaskCount: 3}}); err != nil {
		t.Fatal(err)
	}
	c := e.register("c", taskID(1), true)
	if len(c.Candidates) != 1 {
		t.Fatalf("got %v; want one candidate", c.Candidates)
	}
	cp := c.Candidates[0]
	if cp.PeerId != src.PeerId || cp.HostId != "src" || cp.BlockAddress != "src:65002" || cp.Complete ||
		string(cp.HeldBitmap) != "\x05" || cp.HostState.GetUploadRate() != 25 || cp.HostState.GetTaskCount() != 3 || cp.Score <= 0 {
		t.Fatalf("got candidate %v; want src's peer, address, bitmap 0x05, its state and a score", cp)
	}
	// Finished: complete, no bitmap.
	e.report(ps, &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_Finished{Finished: &schedulerv1.PeerFinished{TaskSize: 16 << 20, BlockCount: 16}}})
	resp, _ := e.s.GetCandidateParents(e.ctx, &schedulerv1.GetCandidateParentsRequest{PeerId: c.PeerId, TaskId: taskID(1)})
	if cp := resp.Candidates[0]; !cp.Complete || len(cp.HeldBitmap) != 0 {
		t.Fatalf("got %v; want complete without a bitmap", cp)
	}
	if got := e.s.Stats().BackToSource; got != 0 {
		t.Fatalf("got %d back to source after it finished; want 0", got)
	}
}

func TestKeepaliveExpiryReparents(t *testing.T) {
	for _, mode := range []Mode{ModeDAG, ModeTree} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, WithTopology(mode, 2), WithCandidates(1))
			hosts := []string{"src", "mid", "leaf1", "leaf2"}
			for _, h := range hosts {
				e.announce(h, normal)
			}
			resp := map[string]*schedulerv1.RegisterPeerResponse{}
			prog := map[string]*Progress{}
			for _, h := range hosts {
				resp[h] = e.register(h, taskID(1), true)
				prog[h] = e.open(resp[h].PeerId, taskID(1))
			}
			// Find a peer that is somebody's parent, other than the source.
			info := e.info(taskID(1))
			var victim PeerInfo
			for _, p := range info.Peers {
				for _, q := range info.Peers {
					if !p.Source && slices.Contains(q.Parents, p.ID) {
						victim = p
					}
				}
			}
			if victim.ID == "" {
				t.Fatalf("no inner peer in %+v", info.Peers)
			}
			var children []string
			for _, q := range info.Peers {
				if slices.Contains(q.Parents, victim.ID) {
					children = append(children, q.HostID)
				}
			}
			// Everybody but the victim keeps sending keepalives.
			for step := range 4 {
				e.clk.Advance(5 * time.Second)
				for _, h := range hosts {
					if h != victim.HostID {
						e.keepalive(h)
					}
				}
				e.s.sweep(e.ctx)
				_, gone := e.s.hosts[victim.HostID]
				if wantGone := step == 3; gone == wantGone {
					t.Fatalf("after %d s: victim present %v; want %v", (step+1)*5, gone, !wantGone)
				}
			}
			if _, err := pending(prog[victim.HostID].box); !errdefs.IsNotFound(err) {
				t.Fatalf("victim's stream: got %v; want NotFound", err)
			}
			for _, c := range children {
				cmd := nextCommand(t, prog[c])
				got := ids(cmd.GetNewParents().GetCandidates())
				if len(got) == 0 || slices.Contains(got, victim.ID) {
					t.Fatalf("child %s got parents %v; want some, not the victim", c, got)
				}
			}
			if _, err := e.s.Keepalive(e.ctx, &schedulerv1.KeepaliveRequest{HostId: victim.HostID}); !errdefs.IsNotFound(err) {
				t.Fatalf("victim's next keepalive: got %v; want NotFound", err)
			}
		})
	}
}

func TestSweeperRunsOnTicks(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	s, err := New(WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, s: s, clk: clk, ctx: context.Background()}
	e.announce("h", normal)
	if clk.Tickers() != 1 {
		t.Fatalf("got %d tickers; want the sweeper's", clk.Tickers())
	}
	e.clk.Advance(16 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for e.s.Stats().Hosts != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the silent host is still there; want the sweeper to remove it")
		}
		time.Sleep(time.Millisecond)
	}
	s.Close()
	if clk.Tickers() != 0 {
		t.Fatalf("got %d tickers after Close; want the sweeper's stopped", clk.Tickers())
	}
}

func TestTreeShape(t *testing.T) {
	e := newEnv(t, WithTopology(ModeTree, 2))
	e.announce("seed-1", seed)
	e.watch("seed-1")
	const n = 20
	for i := range n {
		h := fmt.Sprintf("n%02d", i)
		e.announce(h, normal)
		resp := e.register(h, taskID(1), true)
		if len(resp.Candidates) != 1 {
			t.Fatalf("peer %d got %d candidates; want its tree parent", i, len(resp.Candidates))
		}
	}
	info := e.info(taskID(1))
	checkTreeInfo(t, info, 2)
	// Leaves: every remaining peer keeps a parent, the bound holds.
	rng := rand.New(rand.NewPCG(5, 5))
	for range 10 {
		info := e.info(taskID(1))
		p := info.Peers[rng.IntN(len(info.Peers))]
		if p.Seed {
			continue
		}
		if _, err := e.s.LeaveTask(e.ctx, &schedulerv1.LeaveTaskRequest{PeerId: p.ID, TaskId: taskID(1)}); err != nil {
			t.Fatal(err)
		}
		checkTreeInfo(t, e.info(taskID(1)), 2)
	}
}

// checkTreeInfo checks one root, the seed, and fan-out and height bounds.
func checkTreeInfo(t *testing.T, info TaskInfo, fanOut int) {
	t.Helper()
	children := map[string]int{}
	parent := map[string]string{}
	var root string
	for _, p := range info.Peers {
		switch len(p.Parents) {
		case 0:
			if root != "" {
				t.Fatalf("two roots %s and %s", root, p.ID)
			}
			root = p.ID
			if !p.Source {
				t.Fatalf("root %s does not read the source", p.ID)
			}
		case 1:
			children[p.Parents[0]]++
			parent[p.ID] = p.Parents[0]
		default:
			t.Fatalf("peer %s has %d tree parents", p.ID, len(p.Parents))
		}
	}
	height := 0
	for _, p := range info.Peers {
		d := 1
		for x := p.ID; x != root; x = parent[x] {
			if d > len(info.Peers) {
				t.Fatalf("peer %s does not reach the root", p.ID)
			}
			d++
		}
		height = max(height, d)
	}
	for id, c := range children {
		if c > fanOut {
			t.Fatalf("peer %s has %d children; want at most %d", id, c, fanOut)
		}
	}
	if bound := int(math.Ceil(math.Log2(float64(len(info.Peers) + 1)))); height > bound {
		t.Fatalf("height %d with %d peers; want at most %d", height, len(info.Peers), bound)
	}
}

// TestTreeThroughTheScheduler drives random registrations and leaves of one task in tree
// mode, the seed among them, and checks the tree after each step: the root reads the source,
// no peer is orphaned, fan-out and height within bounds.
func TestTreeThroughTheScheduler(t *testing.T) {
	e := newEnv(t, WithTopology(ModeTree, 2))
	e.announce("seed-1", seed)
	e.watch("seed-1")
	rng := rand.New(rand.NewPCG(21, 22))
	const hosts = 60
	for i := range hosts {
		e.announce(fmt.Sprintf("h%02d", i), normal)
	}
	peers := map[int]string{}
	for range 2000 {
		i := rng.IntN(hosts)
		if id, in := peers[i]; in && rng.IntN(2) == 0 {
			if _, err := e.s.LeaveTask(e.ctx, &schedulerv1.LeaveTaskRequest{PeerId: id, TaskId: taskID(1)}); err != nil {
				t.Fatal(err)
			}
			delete(peers, i)
		} else {
			peers[i] = e.register(fmt.Sprintf("h%02d", i), taskID(1), true).PeerId
		}
		if len(peers) == 0 {
			continue
		}
		info := e.info(taskID(1))
		checkTreeInfo(t, info, 2)
	}
}

// TestDAGThroughTheScheduler drives random registrations, leaves, finishes, failures and
// parent requests over several tasks and checks every task's graph after each step: no
// cycle, no parent that left, every parent in the same task, at most K parents.
func TestDAGThroughTheScheduler(t *testing.T) {
	e := newEnv(t, WithCandidates(3))
	rng := rand.New(rand.NewPCG(11, 12))
	const hosts, tasks = 40, 4
	for i := range hosts {
		e.announce(fmt.Sprintf("h%02d", i), normal)
	}
	type key struct{ host, task int }
	peers := map[key]string{}
	for step := range 3000 {
		k := key{rng.IntN(hosts), rng.IntN(tasks)}
		h, task := fmt.Sprintf("h%02d", k.host), taskID(k.task)
		id, in := peers[k]
		switch r := rng.IntN(10); {
		case !in || r < 3:
			peers[k] = e.register(h, task, rng.IntN(4) == 0).PeerId
		case r < 5:
			if _, err := e.s.LeaveTask(e.ctx, &schedulerv1.LeaveTaskRequest{PeerId: id, TaskId: task}); err != nil {
				t.Fatal(err)
			}
			delete(peers, k)
		case r < 6:
			pr, err := e.s.OpenProgress(e.ctx, &schedulerv1.ProgressReport{PeerId: id, TaskId: task,
				Report: &schedulerv1.ProgressReport_Finished{Finished: &schedulerv1.PeerFinished{}}})
			if err != nil {
				t.Fatal(err)
			}
			pr.Close()
		case r < 7:
			pr, err := e.s.OpenProgress(e.ctx, &schedulerv1.ProgressReport{PeerId: id, TaskId: task,
				Report: &schedulerv1.ProgressReport_Failed{Failed: &schedulerv1.PeerFailed{}}})
			if err != nil {
				t.Fatal(err)
			}
			pr.Close()
			delete(peers, k)
		default:
			if _, err := e.s.GetCandidateParents(e.ctx, &schedulerv1.GetCandidateParentsRequest{PeerId: id, TaskId: task}); err != nil {
				t.Fatal(err)
			}
		}
		for ti := range tasks {
			info, err := e.s.Inspect(taskID(ti))
			if errdefs.IsNotFound(err) {
				continue
			}
			checkDAGInfo(t, step, info, 3)
		}
	}
}

func checkDAGInfo(t *testing.T, step int, info TaskInfo, k int) {
	t.Helper()
	present := map[string]PeerInfo{}
	provider := false
	for _, p := range info.Peers {
		present[p.ID] = p
		provider = provider || p.Source || p.Complete
	}
	// No orphan: with a provider in the task, every other peer has a parent.
	for _, p := range info.Peers {
		if provider && !p.Source && !p.Complete && len(p.Parents) == 0 {
			t.Fatalf("step %d: peer %s has no parent though the task has a provider", step, p.ID)
		}
	}
	indeg := map[string]int{}
	children := map[string][]string{}
	for _, p := range info.Peers {
		if len(p.Parents) > k {
			t.Fatalf("step %d: peer %s has %d parents; want at most %d", step, p.ID, len(p.Parents), k)
		}
		if (p.Source || p.Complete) && len(p.Parents) > 0 {
			t.Fatalf("step %d: provider %s has parents %v", step, p.ID, p.Parents)
		}
		for _, q := range p.Parents {
			if _, ok := present[q]; !ok {
				t.Fatalf("step %d: peer %s has parent %s not in the task", step, p.ID, q)
			}
			children[q] = append(children[q], p.ID)
		}
		indeg[p.ID] = len(p.Parents)
	}
	var queue []string
	for id, d := range indeg {
		if d == 0 {
			queue = append(queue, id)
		}
	}
	done := 0
	for len(queue) > 0 {
		x := queue[0]
		queue = queue[1:]
		done++
		for _, c := range children[x] {
			if indeg[c]--; indeg[c] == 0 {
				queue = append(queue, c)
			}
		}
	}
	if done != len(info.Peers) {
		t.Fatalf("step %d: task %s has a cycle", step, info.ID)
	}
}
