package scheduler

import (
	"testing"
	"time"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// TestInspectShowsProgressAndFlows: the operator's view of a task follows the peers'
// reports: blocks held, and bytes and rate received from each parent, the last block
// counting its true length; Tasks and Hosts list what the scheduler knows.
func TestInspectShowsProgressAndFlows(t *testing.T) {
	e := newEnv(t)
	e.announce("h0", schedulerv1.HostType_HOST_TYPE_NORMAL)
	e.announce("h1", schedulerv1.HostType_HOST_TYPE_NORMAL)
	task := taskID(1)
	req := &schedulerv1.RegisterPeerRequest{HostId: "h0", TaskId: task, TaskSize: 3<<20 + 100, BlockSize: 1 << 20, BlockCount: 4, Source: testSource}
	src, err := e.s.RegisterPeer(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	req.HostId = "h1"
	child, err := e.s.RegisterPeer(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(child.Candidates) == 0 || child.Candidates[0].PeerId != src.PeerId {
		t.Fatalf("got candidates %v; want the first peer", child.Candidates)
	}
	pr := e.open(child.PeerId, task)
	for _, idx := range [][]uint32{{0, 1}, {3}} {
		e.report(pr, &schedulerv1.ProgressReport{Report: &schedulerv1.ProgressReport_NewBlocks{NewBlocks: &schedulerv1.NewBlocks{
			Indexes: idx, ParentPeerId: src.PeerId, FetchDurationUs: 1000}}})
		e.clk.Advance(time.Second)
	}
	info := e.info(task)
	if info.Size != 3<<20+100 || info.BlockCount != 4 || len(info.Peers) != 2 {
		t.Fatalf("got task %+v; want 4 blocks, 2 peers", info)
	}
	got := info.Peers[1]
	if got.ID != child.PeerId || got.Held != 3 {
		t.Fatalf("got peer %+v; want %s holding 3 blocks", got, child.PeerId)
	}
	wantBytes := uint64(2<<20 + 100)
	if f := got.In[src.PeerId]; f.Bytes != wantBytes || f.Rate != float64(wantBytes)/flowWindow {
		t.Errorf("got flow %+v from the source; want %d bytes at %v B/s", f, wantBytes, float64(wantBytes)/flowWindow)
	}
	e.clk.Advance(time.Minute)
	if f := e.info(task).Peers[1].In[src.PeerId]; f.Rate != 0 || f.Bytes != wantBytes {
		t.Errorf("a minute later: got flow %+v; want rate 0, the bytes kept", f)
	}

	tasks := e.s.Tasks()
	if len(tasks) != 1 || tasks[0].ID != task || tasks[0].Peers != 2 || tasks[0].Repository != testSource.Repository {
		t.Errorf("got tasks %+v; want the one task with 2 peers", tasks)
	}
	hosts := e.s.Hosts()
	if len(hosts) != 2 || hosts[0].ID != "h0" || hosts[0].Tasks != 1 {
		t.Errorf("got hosts %+v; want h0 and h1, in one task each", hosts)
	}
}
