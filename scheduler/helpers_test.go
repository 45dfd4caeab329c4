package scheduler

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/containerd/log"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler/clock"
)

func TestMain(m *testing.M) {
	// Logs are not a test contract; keep the output to failures.
	_ = log.SetLevel("error")
	os.Exit(m.Run())
}

// env is a scheduler on a fake clock with helpers that fail the test on error.
type env struct {
	t   *testing.T
	s   *Scheduler
	clk *clock.Fake
	ctx context.Context
}

// withoutSweeper keeps the sweeper from running, so a test sweeps by hand (e.sweep) at the
// moments it chooses.
func withoutSweeper() Option { return WithManualSweep() }

// newEnv returns a scheduler on a fake clock whose sweeper does not run: tests call
// s.sweep themselves. TestSweeperRunsOnTicks covers the sweeper.
func newEnv(t *testing.T, opts ...Option) *env {
	t.Helper()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	s, err := New(append([]Option{WithClock(clk), WithRandSeed(1), withoutSweeper()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &env{t: t, s: s, clk: clk, ctx: context.Background()}
}

func taskID(i int) string { return fmt.Sprintf("sha256:%064x", i) }

var testSource = &schedulerv1.TaskSource{Registry: "registry.test", Repository: "library/app", BlobDigest: taskID(999)}

func (e *env) announce(id string, typ schedulerv1.HostType, mods ...func(*schedulerv1.AnnounceHostRequest)) {
	e.t.Helper()
	req := &schedulerv1.AnnounceHostRequest{HostId: id, BlockAddress: id + ":65002", Type: typ}
	for _, m := range mods {
		m(req)
	}
	if _, err := e.s.AnnounceHost(e.ctx, req); err != nil {
		e.t.Fatalf("announce %s: %v", id, err)
	}
}

func (e *env) keepalive(id string) {
	e.t.Helper()
	if _, err := e.s.Keepalive(e.ctx, &schedulerv1.KeepaliveRequest{HostId: id, State: &schedulerv1.HostState{}}); err != nil {
		e.t.Fatalf("keepalive %s: %v", id, err)
	}
}

// register registers host on task (16 blocks of 1 MiB), with a source if withSource.
func (e *env) register(host, task string, withSource bool) *schedulerv1.RegisterPeerResponse {
	e.t.Helper()
	req := &schedulerv1.RegisterPeerRequest{HostId: host, TaskId: task, TaskSize: 16 << 20, BlockSize: 1 << 20, BlockCount: 16}
	if withSource {
		req.Source = testSource
	}
	resp, err := e.s.RegisterPeer(e.ctx, req)
	if err != nil {
		e.t.Fatalf("register %s on %s: %v", host, task, err)
	}
	return resp
}

func (e *env) watch(host string) *Watch {
	e.t.Helper()
	w, err := e.s.WatchHost(e.ctx, &schedulerv1.WatchHostRequest{HostId: host})
	if err != nil {
		e.t.Fatalf("watch %s: %v", host, err)
	}
	e.t.Cleanup(w.Close)
	return w
}

func (e *env) open(peerID, task string) *Progress {
	e.t.Helper()
	pr, err := e.s.OpenProgress(e.ctx, &schedulerv1.ProgressReport{PeerId: peerID, TaskId: task, Report: &schedulerv1.ProgressReport_HeldBitmap{}})
	if err != nil {
		e.t.Fatalf("open progress of %s: %v", peerID, err)
	}
	e.t.Cleanup(pr.Close)
	return pr
}

func (e *env) report(pr *Progress, r *schedulerv1.ProgressReport) {
	e.t.Helper()
	r.PeerId, r.TaskId = pr.peerID, pr.taskID
	if err := pr.Report(e.ctx, r); err != nil {
		e.t.Fatalf("report: %v", err)
	}
}

func (e *env) info(task string) TaskInfo {
	e.t.Helper()
	info, err := e.s.Inspect(task)
	if err != nil {
		e.t.Fatal(err)
	}
	return info
}

// pending returns the command waiting in a mailbox, or nil. Commands are put synchronously
// by the call that decided them, so there is nothing to wait for.
func pending[T any](box *mailbox[T]) (T, error) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return box.next(ctx)
}

func nextCommand(t *testing.T, pr *Progress) *schedulerv1.SchedulerCommand {
	t.Helper()
	cmd, err := pending(pr.box)
	if err != nil {
		t.Fatalf("got no command for %s (%v); want one", pr.peerID, err)
	}
	return cmd
}

func noCommand(t *testing.T, pr *Progress) {
	t.Helper()
	if cmd, err := pending(pr.box); err == nil {
		t.Fatalf("got command %v for %s; want none", cmd, pr.peerID)
	}
}

func ids(cs []*schedulerv1.CandidateParent) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.PeerId)
	}
	return out
}

func parentsOf(info TaskInfo, peerID string) []string {
	for _, p := range info.Peers {
		if p.ID == peerID {
			return p.Parents
		}
	}
	return nil
}

func peerOfHost(info TaskInfo, host string) PeerInfo {
	for _, p := range info.Peers {
		if p.HostID == host {
			return p
		}
	}
	return PeerInfo{}
}

var (
	normal = schedulerv1.HostType_HOST_TYPE_NORMAL
	seed   = schedulerv1.HostType_HOST_TYPE_SEED
)
