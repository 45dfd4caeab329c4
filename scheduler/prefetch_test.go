package scheduler

import (
	"testing"

	"github.com/containerd/errdefs"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler/rendezvous"
)

// TestPrefetchTask: a prefetch goes to every watching host but seeds, or to as many as
// asked; GetPrefetch follows their reports, and a host that leaves before it reported failed.
func TestPrefetchTask(t *testing.T) {
	e := newEnv(t)
	task := taskID(7)
	req := &schedulerv1.PrefetchTaskRequest{TaskId: task, Source: testSource, Files: []string{"etc/**"}}
	if _, err := e.s.PrefetchTask(e.ctx, req); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("with no host watching: got %v; want FailedPrecondition", err)
	}
	e.announce("h0", schedulerv1.HostType_HOST_TYPE_NORMAL)
	e.announce("h1", schedulerv1.HostType_HOST_TYPE_NORMAL)
	e.announce("h2", schedulerv1.HostType_HOST_TYPE_NORMAL) // does not watch
	e.announce("s0", schedulerv1.HostType_HOST_TYPE_SEED)
	watches := map[string]*Watch{"h0": e.watch("h0"), "h1": e.watch("h1"), "s0": e.watch("s0")}

	resp, err := e.s.PrefetchTask(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.HostIds; len(got) != 2 || got[0] != "h0" || got[1] != "h1" {
		t.Fatalf("asked hosts %v; want h0 and h1 (not the seed, not h2 that does not watch)", got)
	}
	for _, h := range []string{"h0", "h1"} {
		cmd, err := pending(watches[h].box)
		if wt := cmd.GetWarmTask(); err != nil || wt.GetTaskId() != task || wt.GetFiles()[0] != "etc/**" || wt.GetSource().GetRepository() != testSource.Repository {
			t.Errorf("%s got %v, %v; want the WarmTask", h, cmd, err)
		}
	}
	if cmd, err := pending(watches["s0"].box); err == nil {
		t.Errorf("the seed got %v; want nothing", cmd)
	}

	if _, err := e.s.ReportPrefetch(e.ctx, &schedulerv1.ReportPrefetchRequest{HostId: "h0", TaskId: task, State: schedulerv1.PrefetchState_PREFETCH_STATE_DONE, WarmedBytes: 42}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.ReportPrefetch(e.ctx, &schedulerv1.ReportPrefetchRequest{HostId: "h2", TaskId: task, State: schedulerv1.PrefetchState_PREFETCH_STATE_DONE}); !errdefs.IsNotFound(err) {
		t.Errorf("a report from a host not asked: got %v; want NotFound", err)
	}
	if _, err := e.s.LeaveHost(e.ctx, &schedulerv1.LeaveHostRequest{HostId: "h1"}); err != nil {
		t.Fatal(err)
	}
	got, err := e.s.GetPrefetch(e.ctx, &schedulerv1.GetPrefetchRequest{TaskId: task})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Hosts) != 2 || got.Hosts[0].State != schedulerv1.PrefetchState_PREFETCH_STATE_DONE || got.Hosts[0].WarmedBytes != 42 ||
		got.Hosts[1].State != schedulerv1.PrefetchState_PREFETCH_STATE_FAILED {
		t.Errorf("got %v; want h0 done with 42 bytes, h1 failed (it left)", got.Hosts)
	}

	e.announce("h3", schedulerv1.HostType_HOST_TYPE_NORMAL)
	e.watch("h3")
	req.TaskId, req.Hosts = taskID(8), 1
	resp, err = e.s.PrefetchTask(e.ctx, req)
	if want := rendezvous.Rank(taskID(8), []string{"h0", "h3"})[0]; err != nil || len(resp.HostIds) != 1 || resp.HostIds[0] != want {
		t.Errorf("one host asked: got %v, %v; want %s, the task's first by rendezvous hash", resp.GetHostIds(), err, want)
	}
}
